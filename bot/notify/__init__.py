"""What every notifier shares: where links may point (``links``), and the log notifier
that tells the timeline when Slack is off (``log``). Slack and PagerDuty are packages of
their own (``bot.slack``, ``bot.pagerduty``)."""
