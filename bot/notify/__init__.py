"""Notifiers: subscribers of the incident timeline that tell people (log, Slack, PagerDuty)."""
