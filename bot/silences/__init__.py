"""Alertmanager silences for incidents: the service that records and expires
them, and how narrowly an incident's alerts can be silenced."""
