"""Slack: the incident message and its thread (render, notifier, outbox, storm
roll-ups, graphs) and what people do there (slash commands, buttons)."""
