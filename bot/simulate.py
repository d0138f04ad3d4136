"""``alertpilot simulate``: the pipeline on an Alertmanager payload, with no side effects.

It shows the incident the payload would open, the labels playbooks match on, which
playbooks match (and for the others, the first matcher that failed), each diagnostic's
rendered query and its result when Prometheus answers (``unavailable`` at once when it
does not), and for each remediation what it would do and which guard would stop it
(``RemediationEngine.describe``). Reads only: Prometheus, Alertmanager and ``http``
diagnostics are read; the store is read for rate limits only if it already exists.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bot.core.alerts import AlertGroup
from bot.core.clock import SystemClock
from bot.core.incidents import AlertRecord, Incident, Status, severity_of, summary_of, title_of
from bot.core.transitions import IncidentActions
from bot.diagnostics import Diagnostics, Sources, StepInput
from bot.diagnostics.units import format_labels
from bot.pipeline import match_labels
from bot.playbook.checks import Allowlists
from bot.playbook.loader import load_playbooks
from bot.playbook.model import Playbook, PromqlDiagnostic, PromqlRangeDiagnostic
from bot.playbook.templating import RenderError, context, environment, render
from bot.records.incident import PipelineState
from bot.remediation import RemediationEngine
from bot.remediation.actions import Connections
from bot.settings import Settings
from bot.store.sqlite import SqliteStore
from bot.upstream.alertmanager import AlertmanagerClient
from bot.upstream.prometheus import PrometheusClient

QUICK = 3.0  # seconds: a simulation does not wait long on anything


def incident_of(group: AlertGroup, settings: Settings) -> Incident:
    """The incident the group would open (id 0; nothing is stored)."""
    now = datetime.now(UTC).timestamp()
    firing = any(alert.status == "firing" for alert in group.alerts)
    alerts = tuple(
        AlertRecord(
            fingerprint=a.fingerprint,
            status=a.status,
            labels=dict(a.labels),
            annotations=dict(a.annotations),
            starts_at=a.startsAt.isoformat(),
            ends_at=a.endsAt.isoformat(),
            generator_url=a.generatorURL,
            links=a.links,
        )
        for a in group.alerts
    )
    return Incident(
        id=0,
        key="simulation",
        group_hash=group.group_hash,
        receiver=group.receiver,
        group_key=group.groupKey,
        status=Status.TRIGGERED if firing else Status.RESOLVED,
        severity=severity_of(group, settings.incidents),
        title=title_of(group),
        summary=summary_of(group),
        group_labels=dict(group.groupLabels),
        common_labels=dict(group.commonLabels),
        common_annotations=dict(group.commonAnnotations),
        external_url=group.externalURL,
        opened_at=now,
        updated_at=now,
        alerts=alerts,
    )


def _existing(path: str) -> bool:
    return Path(path).is_file()


@contextlib.asynccontextmanager
async def _read_store(settings: Settings) -> AsyncIterator[SqliteStore]:
    """The configured SQLite store if it exists (rate limits read from it), else a scratch
    one: a simulation neither connects to nor migrates a PostgreSQL store."""
    path = Path(settings.store.sqlite_path)
    with contextlib.ExitStack() as stack:
        if settings.store.backend != "sqlite" or not _existing(settings.store.sqlite_path):
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="alertpilot-sim-"))
            path = Path(scratch) / "scratch.db"
        store = SqliteStore(str(path), clock=SystemClock().now, inbox_writer=False)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


async def _diagnostics(
    runner: Diagnostics, playbooks: list[Playbook], incident: Incident, reachable: bool
) -> list[dict[str, Any]]:
    ctx = context(incident)
    own = frozenset(alert.fingerprint for alert in incident.alerts)
    out: list[dict[str, Any]] = []
    for playbook in playbooks:
        for spec in playbook.diagnostics:
            if isinstance(spec, PromqlDiagnostic | PromqlRangeDiagnostic) and not reachable:
                try:
                    query = render(runner.sources.env, spec.query, ctx)
                except RenderError as exc:
                    query = f"(does not render: {exc})"
                out.append(
                    {"playbook": playbook.name, "name": spec.name, "kind": spec.kind,
                     "query": query, "status": "unavailable",
                     "text": f"{spec.label or spec.name}: Prometheus unavailable", "lines": []}
                )  # fmt: skip
                continue
            result = await runner.run_step(spec, StepInput(playbook.name, ctx, own))
            out.append(result.to_json())
    return out


async def simulate(settings: Settings, group: AlertGroup) -> dict[str, Any]:
    """Everything the pipeline would decide for this payload, as JSON-ready data."""
    playbooks = load_playbooks(settings)
    incident = incident_of(group, settings)
    labels = match_labels(incident)
    matched = playbooks.matching(labels)
    override = next((p.severity for p in matched if p.severity is not None), None)
    severity = override or incident.severity
    names = [p.name for p in matched]
    incident = Incident(
        **{
            **incident.__dict__,
            "severity": severity,
            "playbook": names[0] if names else None,
            "data": {"pipeline": PipelineState(playbooks=names).dump()},
        }
    )
    clock = SystemClock()
    timeout = aiohttp.ClientTimeout(total=QUICK)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
        prometheus = PrometheusClient(
            session, settings.prometheus.url, timeout=min(settings.prometheus.timeout, QUICK),
            retries=0,
        )  # fmt: skip
        alertmanager = AlertmanagerClient(
            session, settings.alertmanager.url, timeout=min(settings.alertmanager.timeout, QUICK),
            retries=0,
        )  # fmt: skip
        reachable = await prometheus.ready()
        sources = Sources(
            prometheus, alertmanager, session,
            Allowlists.from_settings(settings).diagnostic_urls, clock, environment(),
        )  # fmt: skip
        diagnostics = await _diagnostics(Diagnostics(sources), matched, incident, reachable)
        async with _read_store(settings) as store:
            engine = RemediationEngine(
                store,
                clock,
                settings.remediation,
                actions=IncidentActions(store, clock),
                connections=lambda: Connections(
                    prometheus=prometheus if reachable else None,
                    alertmanager=alertmanager,
                    playbooks=playbooks,
                ),
            )
            remediations = [
                preview.model_dump(mode="json")
                for playbook in matched
                for preview in await engine.describe(playbook, incident)
            ]
    return {
        "group": {"receiver": group.receiver, "groupKey": group.groupKey},
        "incident": {
            "title": incident.title,
            "summary": incident.summary,
            "severity": severity.value,
            "label_severity": severity_of(group, settings.incidents).value,
            "status": incident.status.value,
            "alerts": [f"{a.status}: {_alert_line(a)}" for a in incident.alerts],
        },
        "labels": labels,
        "playbooks": names,
        "near_misses": [
            {"playbook": p.name, "failed": failed}
            for p, failed in playbooks.near_misses(labels)
            if p.name not in names
        ],
        "prometheus": {"url": settings.prometheus.url, "reachable": reachable},
        "diagnostics": diagnostics,
        "remediation_mode": settings.remediation.mode.value,
        "remediations": remediations,
        "side_effects": "none (simulation)",
    }


def _alert_line(alert: AlertRecord) -> str:
    name = alert.labels.get("alertname", "(no alertname)")
    detail = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if k != "alertname")
    return f"{name} {{{detail}}}" if detail else name


def text_lines(plan: dict[str, Any]) -> list[str]:
    """The plan for people."""
    incident, group = plan["incident"], plan["group"]
    out = [
        f"group     {group['receiver']} / {group['groupKey']}",
        f"incident  [{incident['severity']}] {incident['title']} ({incident['status']})",
        f"summary   {incident['summary']}",
        *(f"  - {line}" for line in incident["alerts"]),
        f"labels    {format_labels(plan['labels'])}",
    ]
    if plan["playbooks"]:
        changed = incident["severity"] != incident["label_severity"]
        note = f" (severity {incident['label_severity']} -> {incident['severity']})" * changed
        out.append(f"playbooks {', '.join(plan['playbooks'])}{note}")
    else:
        out.append("playbooks none matched")
    if plan["near_misses"]:
        out.append("near misses")
        out += [f"  - {m['playbook']}: {m['failed']} does not hold" for m in plan["near_misses"]]
    if plan["diagnostics"]:
        prom = plan["prometheus"]
        state = "reachable" if prom["reachable"] else "unavailable"
        out.append(f"diagnostics (Prometheus {prom['url']}: {state})")
        for item in plan["diagnostics"]:
            out.append(f"  - {item['playbook']}/{item['name']} [{item['kind']}] {item['query']}")
            out.append(f"      {item['text']}")
            out += [f"        {line}" for line in item.get("lines", [])]
    if plan["remediations"]:
        out.append(f"remediations (remediation.mode {plan['remediation_mode']})")
        for step in plan["remediations"]:
            call = step["call"] or "(no call)"
            verdict = (
                step["reason"]  # "not applicable: needs label `namespace`"
                if step["stopped_by"] == "not_applicable"
                else f"stopped by {step['stopped_by']}: {step['reason']}"
                if step["stopped_by"]
                else (step["reason"] or step["mode"])
            )
            out.append(f"  - {step['playbook']}/{step['step']} [{step['mode']}] {call}")
            out.append(f"      -> {verdict}")
            out += [f"      {note}" for note in step["notes"]]
    out.append(f"side effects: {plan['side_effects']}")
    return out
