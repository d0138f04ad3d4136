"""Typed models of what features keep in ``incident.data`` and in the key-value table,
for the records that more than one feature reads (the Slack message, the narrative, the
pipeline's progress). This package imports no feature, so any feature can read them.
Records that only their own feature reads live with it (``bot.remediation.records``,
``bot.targets``, ``bot.pagerduty.state``, ``bot.silences.service``)."""
