"""Typed models of what features keep in ``incident.data`` and in the key-value table,
for the records that more than one feature reads (the Slack message, the narrative, the
response targets, the silences, the pipeline's progress), each with its one reader.

This package imports no feature, so any feature can read them without importing another
(``bot.records.base`` reads tolerantly: see its docstring). Records that other features
read only through their owner live with it: the engine's ``StepRecord`` and
``ApprovalRecord`` (``bot.remediation.records``), ``PageState``
(``bot.pagerduty.state``), ``DiagnosticResult`` (``bot.diagnostics.result``)."""
