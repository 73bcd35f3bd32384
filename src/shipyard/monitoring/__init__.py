"""Monitoring: Prometheus metrics, drift detection, online evals and alert rules."""
