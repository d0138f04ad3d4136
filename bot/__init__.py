"""alertpilot: turns Alertmanager alert groups into incidents that run their own runbooks."""

__version__ = "0.1.0"
