"""PagerDuty: pages through the Events API, the escalation timers, on-call from
the REST API, and Webhooks v3 coming back."""
