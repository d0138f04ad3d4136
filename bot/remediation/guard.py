"""The guards between a remediation step and its run.

- **mode**: the effective mode is the lower of the step's ``mode`` and the global
  ``remediation.mode`` ceiling, ordered ``off < dry_run < suggest < approval < auto``.
  ``off`` is the kill switch (nothing is proposed); ``dry_run`` is shadow mode (what
  would run is recorded, nothing runs).
- **resolved**: never on a resolved alert (checked at plan time and right before
  running): not when the incident is resolved, and not when every alert of the step's
  *target* has resolved, even while other alerts keep the incident open. The target is
  what ``target_of`` returns when the step is planned (kept on its record as
  ``StepRecord.target``); see ``target_alerts`` for which alerts belong to it.
- **proposed call**: the call is rendered from the alert it was planned for
  (``StepRecord.alert``; see ``subject_alert`` and ``run_alert``) and runs only when it is
  exactly the call that was proposed (``StepRecord.call``, what the approval showed).
- **when**: a PromQL precondition, checked right before running; it holds when the
  result is non-empty and at least one sample is non-zero (and not NaN).
- **max_runs** per ``window``, counted per step across incidents, and **cooldown** per
  target: the values of ``cooldown_labels`` (default: the incident's group labels).
  Both are kept in the store and taken atomically when a step runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from bot.core.durations import format_duration
from bot.core.incidents import AlertRecord, Incident, Status
from bot.errors import UpstreamError
from bot.playbook.model import Remediation, StepMode
from bot.playbook.templating import RenderError, render
from bot.remediation.results import Guard, Stop, truncate
from bot.settings import RemediationMode
from bot.store.base import RateLimit, Store
from bot.upstream.prometheus import PrometheusClient, PrometheusError, PrometheusQueryError

ORDER = (
    RemediationMode.OFF,
    RemediationMode.DRY_RUN,
    RemediationMode.SUGGEST,
    RemediationMode.APPROVAL,
    RemediationMode.AUTO,
)


class PreconditionUnavailable(UpstreamError):
    """Prometheus could not answer the precondition (a transient failure)."""


def effective_mode(step: StepMode, ceiling: RemediationMode) -> RemediationMode:
    return min(RemediationMode(step.value), ceiling, key=ORDER.index)


def mode_stop(mode: RemediationMode) -> Stop | None:
    if mode is RemediationMode.OFF:
        return Stop(Guard.MODE, "remediation.mode is off (kill switch): nothing is proposed")
    return None


def resolved_stop(
    incident: Incident,
    spec: Remediation | None = None,
    target: Mapping[str, str] | None = None,
) -> Stop | None:
    """Never on a resolved alert.

    Stops when the incident is resolved; given the step (``spec``), also when no alert
    of its target still fires (``target``: the one recorded at plan time; None means
    the target the step would have now, ``target_of(spec, incident)``).
    """
    if incident.status is Status.RESOLVED:
        return Stop(Guard.RESOLVED, f"incident #{incident.id} is resolved")
    if spec is None:
        return None
    wanted = dict(target) if target is not None else target_of(spec, incident)
    if target_alerts(wanted, incident):
        return None
    if not incident.firing:
        return Stop(Guard.RESOLVED, f"every alert of incident #{incident.id} has resolved")
    shown = ", ".join(f"{k}={v}" for k, v in sorted(wanted.items())) or "no labels"
    return Stop(
        Guard.RESOLVED,
        f"every alert of its target ({shown}) has resolved; incident #{incident.id} stays "
        "open for its other alerts",
    )


def subject_alert(incident: Incident) -> AlertRecord | None:
    """The alert a step is planned for: the first firing one (else the first one), the
    alert whose ``labels`` and ``annotations`` templates see (``templating.context``)."""
    alerts = incident.firing or list(incident.alerts)
    return alerts[0] if alerts else None


def run_alert(
    incident: Incident, fingerprint: str | None, target: Mapping[str, str]
) -> AlertRecord | None:
    """The alert a planned step renders its call from when it runs.

    The alert it was planned for (``fingerprint``) while that one fires; else the first
    firing alert of its target (the call rendered from it must still equal the proposed
    one); None when no alert of the target fires (``resolved_stop`` stops the step).
    """
    firing = incident.firing
    planned = next((a for a in firing if fingerprint and a.fingerprint == fingerprint), None)
    if planned is not None:
        return planned
    found = target_alerts(target, incident)
    return found[0] if found else None


def target_alerts(target: Mapping[str, str], incident: Incident) -> list[AlertRecord]:
    """The incident's firing alerts that belong to a step's target.

    ``target`` comes from ``target_of``: with ``cooldown_labels`` unset it is the group
    labels, which every alert of the group carries, so every firing alert belongs to
    it; with ``cooldown_labels`` it holds those labels' values, and an alert belongs
    when it has each of them (its own labels, then the group's common labels for a name
    it lacks; a missing label counts as "", as in ``target_of``).
    """
    found = []
    for alert in incident.firing:
        labels = {**incident.common_labels, **alert.labels}
        if all(labels.get(name, "") == value for name, value in target.items()):
            found.append(alert)
    return found


async def precondition_stop(
    prometheus: PrometheusClient | None,
    template: str,
    env: Any,
    values: Mapping[str, Any],
) -> Stop | None:
    """None when the ``when`` query holds; raise PreconditionUnavailable when unknown."""
    try:
        query = render(env, template, values)
    except RenderError as exc:
        return Stop(Guard.TEMPLATE, f"when: {exc}")
    if prometheus is None:
        raise PreconditionUnavailable("no Prometheus client")
    try:
        samples = await prometheus.query(query)
    except PrometheusQueryError as exc:
        return Stop(Guard.WHEN, f"precondition query rejected: {exc}")
    except PrometheusError as exc:
        raise PreconditionUnavailable(str(exc)) from None
    if any(s.value != 0 and not math.isnan(s.value) for s in samples):
        return None
    got = "an empty result" if not samples else "only zero values"
    return Stop(Guard.WHEN, f"precondition {truncate(query, 200)} does not hold ({got})")


def target_of(
    spec: Remediation, incident: Incident, alert: AlertRecord | None = None
) -> dict[str, str]:
    """The label values that identify what the step acts on (its cooldown target).

    With ``cooldown_labels``, taken from ``alert`` (the alert the step's call is rendered
    from; default: the first firing alert), then the group's common labels.
    """
    if spec.cooldown_labels is None:
        return dict(sorted(incident.group_labels.items()))
    if alert is None and incident.firing:
        alert = incident.firing[0]
    first = alert.labels if alert is not None else {}
    labels = {**first, **incident.common_labels}
    return {name: labels.get(name, "") for name in sorted(spec.cooldown_labels)}


def rate_limits(
    playbook: str,
    spec: Remediation,
    incident: Incident,
    target: Mapping[str, str] | None = None,
) -> list[RateLimit]:
    """The step's max_runs and cooldown windows; the cooldown is kept per ``target`` (the
    one recorded at plan time; None: the target the step would have now)."""
    step = f"{playbook}/{spec.name}"
    wanted = dict(target) if target is not None else target_of(spec, incident)
    key = json.dumps(wanted, sort_keys=True, ensure_ascii=False)
    limits = [RateLimit(f"remediation.runs:{step}", spec.max_runs, spec.window)]
    if spec.cooldown > 0:
        limits.append(RateLimit(f"remediation.cooldown:{step}:{key}", 1, spec.cooldown))
    return limits


def limit_stop(
    limit: RateLimit,
    spec: Remediation,
    incident: Incident,
    target: Mapping[str, str] | None = None,
) -> Stop:
    if limit.bucket.startswith("remediation.cooldown:"):
        wanted = dict(target) if target is not None else target_of(spec, incident)
        target_text = ", ".join(f"{k}={v}" for k, v in sorted(wanted.items()))
        return Stop(
            Guard.COOLDOWN,
            f"ran for the same target ({target_text or 'no labels'}) within the last "
            f"{format_duration(spec.cooldown)} (cooldown)",
        )
    return Stop(
        Guard.MAX_RUNS,
        f"already ran {spec.max_runs} time(s) in the last {format_duration(spec.window)} "
        "(max_runs, across incidents)",
    )


async def rate_stop(
    store: Store,
    playbook: str,
    spec: Remediation,
    incident: Incident,
    now: float,
    target: Mapping[str, str] | None = None,
) -> Stop | None:
    """Which rate guard would stop the step now (read only: for dry runs and previews)."""
    for limit in rate_limits(playbook, spec, incident, target):
        entries = await store.rate_entries(limit.bucket, since=now - limit.window, now=now)
        if len(entries) >= limit.limit:
            return limit_stop(limit, spec, incident, target)
    return None


def proposed_stop(proposed: Mapping[str, Any] | None, call: Mapping[str, Any]) -> Stop | None:
    """None when ``call`` (the call rendered to run, ``Call.display()``) is exactly the call
    proposed at plan time (``StepRecord.call``: what the approval and the timeline showed)."""
    now = json.loads(json.dumps(dict(call), sort_keys=True))
    if proposed is None:
        text = truncate(str(now.get("text", "")), 200)
        return Stop(
            Guard.CHANGED, f"no call was recorded when the step was proposed; {text} is not run"
        )
    before = json.loads(json.dumps(dict(proposed), sort_keys=True))
    if now == before:
        return None
    fields = sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
    shown = (
        "; ".join(
            f"{name}: proposed {_json(before.get(name))}, now {_json(now.get(name))}"
            for name in fields
            if name != "text"
        )
        or f"proposed {_json(before.get('text'))}, now {_json(now.get('text'))}"
    )
    return Stop(
        Guard.CHANGED,
        "the call rendered to run differs from the one proposed, which the timeline and "
        f"any approval showed ({shown}); it is not run",
    )


def _json(value: Any) -> str:
    return truncate(json.dumps(value, sort_keys=True, ensure_ascii=False), 200)
