"""Shipyard: an open-source LLMOps platform (gateway, versioning, evals, tracing, monitoring)."""

__version__ = "0.1.0"
