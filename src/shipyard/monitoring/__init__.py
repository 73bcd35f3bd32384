"""Monitoring: Prometheus metrics, drift detection, online evals and alert rules.

Public: ``metrics.Metrics`` (a gateway observer and the ``/metrics`` registry), ``service``
(``MonitoringService``: the background jobs), ``config`` (the ``monitoring:`` section's schema and
``load_monitoring``), ``drift``, ``online``, ``alerts``, ``stats`` (the statistics they share).
Monitoring sits above the gateway: it calls models (judges) through it as a client would.
"""
