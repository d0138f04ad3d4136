"""Clients of the systems alertpilot calls: Prometheus, Alertmanager, any HTTP
target, with a circuit breaker per upstream."""
