"""A graph of the incident in its Slack thread: the playbook's primary diagnostic, or the
alert's own expression (``g0.expr`` of its generatorURL) when it is the expression of one
of the configured Prometheus's alerting rules (``bot.slack.alert_rules``), over the last
hour, with the threshold drawn as a dashed red line. Uploaded with the files upload v2
flow. An expression that is not a rule's is not run: the thread says why.

An alert rule's expression usually ends in its threshold (``rate(...) > 0.05``): the
graph shows the left side, so the line is visible below the threshold too, and the
threshold is the right side.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.core.clock import Clock
from bot.core.incidents import Incident
from bot.errors import RetryLater
from bot.records.slack import post_of
from bot.slack.alert_rules import Verdict, rule_expression
from bot.slack.features import AppFeatures
from bot.slack.mrkdwn import clip, code, escape
from bot.slack.outbox import SlackOutbox
from bot.slack.png import PALETTE_NAMES, line_chart
from bot.store.base import Job, Store
from bot.upstream.prometheus import PrometheusClient, PrometheusError, PrometheusQueryError, Series

log = logging.getLogger(__name__)

MAX_SERIES = len(PALETTE_NAMES)
_NUMBER = re.compile(r"^\s*(?:bool\s+)?([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


@dataclass(frozen=True)
class GraphSpec:
    query: str
    threshold: float | None
    title: str
    window: float = 3600.0
    step: float | None = None


@dataclass(frozen=True)
class Graph:
    png: bytes
    legend: list[str]
    series: list[Series]


def split_threshold(expr: str) -> tuple[str, float | None]:
    """``a > 0.05`` -> (``a``, 0.05); the expression unchanged when it has no number to compare."""
    depth, quote, last = 0, "", None
    i = 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            for op in _COMPARISONS:
                if expr.startswith(op, i) and not expr.startswith("=~", i):
                    last = (i, op)
                    i += len(op) - 1
                    break
        i += 1
    if last is None:
        return expr.strip(), None
    pos, op = last
    left, right = expr[:pos], expr[pos + len(op) :]
    if match := _NUMBER.match(right):
        return left.strip(), float(match.group(1))
    if match := _NUMBER.match(left):
        return re.sub(r"^\s*bool\s+", "", right).strip(), float(match.group(1))
    return expr.strip(), None


def playbook_spec(incident: Incident, playbook: Any | None) -> GraphSpec | None:
    """The playbook's primary diagnostic, rendered for the incident, if it has one."""
    for diagnostic in getattr(playbook, "diagnostics", None) or []:
        if getattr(diagnostic, "primary", False) and diagnostic.kind in ("promql", "promql_range"):
            from bot.playbook.templating import RenderError, context, environment, render

            try:
                query = render(environment(), diagnostic.query, context(incident))
            except RenderError as exc:
                log.warning(
                    "incident #%d: primary diagnostic does not render: %s", incident.id, exc
                )
                return None
            expect = getattr(diagnostic, "expect", None)
            return GraphSpec(
                query=query,
                threshold=expect.value if expect is not None else None,
                title=diagnostic.label or diagnostic.name,
                window=float(getattr(diagnostic, "window", 3600.0)),
                step=getattr(diagnostic, "step", None),
            )
    return None


def rule_spec(expr: str, title: str) -> GraphSpec:
    """An alerting rule's expression, drawn as its left side against its threshold."""
    query, threshold = split_threshold(expr)
    return GraphSpec(query=query, threshold=threshold, title=title)


def _series_name(labels: Mapping[str, str]) -> str:
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(shown.items()))
    return f"{labels.get('__name__', '')}{{{inner}}}"


async def draw(prometheus: PrometheusClient, spec: GraphSpec, *, end: float) -> Graph:
    start = end - spec.window
    step = spec.step or max(15.0, round(spec.window / 240))
    found = await prometheus.query_range(spec.query, start=start, end=end, step=step)
    found = [s for s in found if s.points]
    found.sort(key=lambda s: max((v for _, v in s.points if v == v), default=0.0), reverse=True)
    shown = found[:MAX_SERIES]
    png = line_chart([s.points for s in shown], start=start, end=end, threshold=spec.threshold)
    legend = [f"{PALETTE_NAMES[i]}: {_series_name(s.labels)}" for i, s in enumerate(shown)]
    if len(found) > len(shown):
        legend.append(f"(the top {len(shown)} of {len(found)} series)")
    return Graph(png, legend, shown)


def caption(spec: GraphSpec, graph: Graph, window_label: str = "the last hour") -> str:
    line = f":chart_with_upwards_trend: {code(spec.query, 300)} over {window_label}"
    if spec.threshold is not None:
        line += f", threshold {spec.threshold:g} (dashed red)"
    legend = "\n".join(escape(clip(item, 200)) for item in graph.legend)
    return f"{line}\n{legend}" if legend else line


class GraphUploader:
    """The ``notify.slack.graph`` job: draw the incident's graph and upload it to its thread."""

    kind = "notify.slack.graph"

    def __init__(
        self,
        store: Store,
        outbox: SlackOutbox,
        features: AppFeatures,
        prometheus: Callable[[], PrometheusClient],
        clock: Clock,
        *,
        prometheus_urls: Sequence[str] = (),
        prometheus_attempts: int = 3,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.features = features
        self.prometheus = prometheus
        self.clock = clock
        self.prometheus_urls = list(prometheus_urls)  # prometheus.url and external_url
        self.prometheus_attempts = prometheus_attempts

    async def __call__(self, job: Job) -> None:
        if job.incident_id is None:
            return
        done_key = f"slack:graph:{job.incident_id}"
        if await self.store.kv_get(done_key, self.clock.now()) is not None:
            return
        incident = await self.store.get_incident(job.incident_id, timeline=False)
        posted = post_of(incident)
        if posted is None:
            return
        channel, thread = posted.channel, posted.thread
        spec = await self._spec(job, incident)
        if spec is None:
            return  # nothing to draw, nothing to say
        drawn = spec if isinstance(spec, str) else await self._draw(job, spec)
        if isinstance(drawn, Graph) and isinstance(spec, GraphSpec):
            await self.outbox.upload(
                channel,
                data=drawn.png,
                filename=f"incident-{incident.id}.png",
                title=clip(f"#{incident.id} {spec.title}", 200),
                comment=caption(spec, drawn),
                thread_ts=thread,
                job_id=job.id,
            )
        else:
            await self.outbox.post(
                channel, text=f":warning: {drawn}", thread_ts=thread, job_id=job.id
            )
        await self.store.kv_set(done_key, "done", now=self.clock.now(), ttl=30 * 86400.0)
        self.outbox.pacer.forget(job.id)

    async def _spec(self, job: Job, incident: Incident) -> GraphSpec | str | None:
        """The playbook's query, else the alert's rule expression (``bot.slack.alert_rules``);
        a note (mrkdwn) when the alert's expression may not run; None: no expression."""
        spec = playbook_spec(incident, self.features.playbook(incident.playbook))
        if spec is not None:
            return spec
        try:
            verdict = await rule_expression(incident, self.prometheus(), self.prometheus_urls)
        except PrometheusError as exc:
            if job.attempts < self.prometheus_attempts:
                raise RetryLater(f"graph: alerting rules: {exc}") from None
            verdict = Verdict(None, f"Prometheus did not list its alerting rules ({exc})")
        if verdict is None:
            return None
        if verdict.expr is None:
            return f"Graph not drawn: {escape(clip(verdict.reason, 400))}"
        return rule_spec(verdict.expr, incident.title)

    async def _draw(self, job: Job, spec: GraphSpec) -> Graph | str:
        """The graph, or a note (mrkdwn) saying why there is none."""
        try:
            graph = await draw(self.prometheus(), spec, end=self.clock.now())
        except PrometheusQueryError as exc:
            return f"Graph unavailable: {escape(clip(str(exc), 300))}"
        except PrometheusError as exc:
            if job.attempts < self.prometheus_attempts:
                raise RetryLater(f"graph: {exc}") from None
            return f"Graph unavailable: Prometheus did not answer ({escape(clip(str(exc), 200))})"
        if not graph.series:
            return f"Graph: no data for {code(spec.query, 200)} in the last hour"
        return graph
