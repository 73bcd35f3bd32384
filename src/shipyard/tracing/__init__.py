"""Traces in OpenTelemetry's GenAI conventions.

Public: ``spans`` (``Trace``, ``Span``: plain data, usable from every layer), ``semconv`` (attribute
names), ``writer.TraceWriter`` (the bounded queue and batch writer off the request path),
``otlp`` (OTLP/HTTP ingest), ``export.OtlpExporter`` (OTLP export to a collector).
"""
