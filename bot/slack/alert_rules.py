"""Which alert expression a graph may run: an alerting rule's, never what an alert says.

Without a playbook query, an incident's graph is its alert's expression (``g0.expr`` of
the alert's generator URL). That URL is whatever the webhook's sender wrote: taken as
it comes, anyone who can reach the webhook picks a query that alertpilot runs against
its Prometheus and posts the answer of in Slack (``label_replace(prometheus_build_info,
...)`` and the like). So the expression is run only when

1. the generator URL is on the configured Prometheus (``prometheus.url`` or
   ``prometheus.external_url``: same scheme, host and port, the path under theirs), and
2. that Prometheus, asked for its alerting rules (``GET /api/v1/rules?type=alert``), has
   one named as the alert (its ``alertname``) whose expression is exactly the URL's.

Prometheus prints both from the same parsed rule, so a real alert of that Prometheus
always passes, and the query that runs is then the operator's rule, not the sender's
text. Anything else is not graphed, and the thread says why; so is an alert when
Prometheus cannot list its rules (``PrometheusError`` goes to the caller, which retries
before giving up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from bot.core.incidents import Incident
from bot.playbook.allowlist import url_allowed
from bot.upstream.prometheus import PrometheusClient

MAX_EXPRESSION = 16_384  # longer than any rule worth graphing; not even compared


@dataclass(frozen=True)
class AlertExpression:
    """What an alert says it was fired by."""

    alertname: str
    generator_url: str
    expr: str


@dataclass(frozen=True)
class Verdict:
    """``expr``: the rule's expression, to graph; else ``reason``, plain text for people."""

    expr: str | None
    reason: str = ""


def alert_expression(incident: Incident) -> AlertExpression | None:
    """The first (firing) alert's ``g0.expr``, with its generator URL and alert name."""
    for alert in incident.firing or list(incident.alerts):
        if alert.generator_url:
            try:
                query = parse_qs(urlsplit(alert.generator_url).query)
            except ValueError:
                continue
            if query.get("g0.expr"):
                name = alert.labels.get("alertname", "")
                return AlertExpression(name, alert.generator_url, query["g0.expr"][0])
    return None


async def rule_expression(
    incident: Incident, prometheus: PrometheusClient, prometheus_urls: Sequence[str]
) -> Verdict | None:
    """The expression to graph for an incident with no playbook query, or why there is
    none; None when its alerts name no expression at all (nothing to draw or to say).

    Raises ``PrometheusError`` when Prometheus does not list its rules."""
    found = alert_expression(incident)
    if found is None:
        return None
    if not url_allowed(found.generator_url, prometheus_urls):
        return Verdict(
            None,
            "the alert's generator URL is not on the configured Prometheus "
            "(prometheus.url, prometheus.external_url)",
        )
    if not found.alertname or len(found.expr) > MAX_EXPRESSION:
        return Verdict(None, "the alert has no name, or an expression too long to be a rule's")
    rules = await prometheus.alert_rules()
    if any(rule.name == found.alertname and rule.query == found.expr for rule in rules):
        return Verdict(found.expr)
    return Verdict(
        None,
        f"the alert's expression is not the expression of an alerting rule named \""
        f'{found.alertname[:80]}" on the configured Prometheus',
    )
