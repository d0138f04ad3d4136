"""The domain: alerts, incidents and how they change, matchers, time."""
