"""The incident's graph on its page: the one Slack's thread gets (``bot.slack.graph``),
drawn when the page asks for it rather than stored, so it shows the last hour as of now.

The query is chosen as for Slack, never by the alert: the matched playbook's primary
diagnostic, or the alert's own expression only when it is one of the configured
Prometheus's alerting rules (``bot.slack.alert_rules``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.incidents import Incident
from bot.playbook.allowlist import url_allowed
from bot.playbook.registry import PlaybookSet
from bot.slack.alert_rules import alert_expression, rule_expression
from bot.slack.graph import Graph, GraphSpec, draw, playbook_spec, rule_spec
from bot.upstream.prometheus import PrometheusClient, PrometheusError


@dataclass(frozen=True)
class Drawn:
    """A graph, or why there is none (``reason``, with the HTTP status to answer)."""

    graph: Graph | None
    status: int = 200
    reason: str = ""


def may_have_graph(
    incident: Incident, playbooks: PlaybookSet | None, prometheus_urls: Sequence[str]
) -> bool:
    """Whether the page should ask for a graph: a playbook query, or an alert expression
    from the configured Prometheus (whether it is a rule's is asked when drawing)."""
    if playbook_spec(incident, playbooks.get(incident.playbook) if playbooks else None):
        return True
    found = alert_expression(incident)
    return found is not None and url_allowed(found.generator_url, prometheus_urls)


async def spec_for(
    incident: Incident,
    playbooks: PlaybookSet | None,
    prometheus: PrometheusClient,
    prometheus_urls: Sequence[str],
) -> GraphSpec | str | None:
    """The graph's query; a reason when the alert's expression may not run; None: none."""
    spec = playbook_spec(incident, playbooks.get(incident.playbook) if playbooks else None)
    if spec is not None:
        return spec
    verdict = await rule_expression(incident, prometheus, prometheus_urls)
    if verdict is None:
        return None
    if verdict.expr is None:
        return verdict.reason
    return rule_spec(verdict.expr, incident.title)


async def incident_graph(
    incident: Incident,
    playbooks: PlaybookSet | None,
    prometheus: PrometheusClient,
    prometheus_urls: Sequence[str],
    *,
    now: float,
) -> Drawn:
    try:
        spec = await spec_for(incident, playbooks, prometheus, prometheus_urls)
        if spec is None:
            return Drawn(None, 404, "nothing to graph for this incident")
        if isinstance(spec, str):
            return Drawn(None, 404, f"not graphed: {spec}")
        graph = await draw(prometheus, spec, end=now)
    except PrometheusError as exc:
        return Drawn(None, 503, f"Prometheus did not answer: {exc}")
    if not graph.series:
        return Drawn(None, 404, "no data in the last hour")
    return Drawn(graph)
