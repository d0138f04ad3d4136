"""The guards between a remediation step and its run.

- **mode**: the effective mode is the lower of the step's ``mode`` and the global
  ``remediation.mode`` ceiling, ordered ``off < dry_run < suggest < approval < auto``.
  ``off`` is the kill switch (nothing is proposed); ``dry_run`` is shadow mode (what
  would run is recorded, nothing runs).
- **resolved**: never on a resolved incident (checked at plan time and right before
  running).
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

from bot.durations import format_duration
from bot.incidents import Incident, Status
from bot.playbook.model import Remediation, StepMode
from bot.playbook.templating import RenderError, render
from bot.prometheus import PrometheusClient, PrometheusError, PrometheusQueryError
from bot.remediation.results import Guard, Stop, truncate
from bot.settings import RemediationMode
from bot.store.base import RateLimit, Store

ORDER = (
    RemediationMode.OFF,
    RemediationMode.DRY_RUN,
    RemediationMode.SUGGEST,
    RemediationMode.APPROVAL,
    RemediationMode.AUTO,
)


class PreconditionUnavailable(Exception):
    """Prometheus could not answer the precondition (a transient failure)."""


def effective_mode(step: StepMode, ceiling: RemediationMode) -> RemediationMode:
    return min(RemediationMode(step.value), ceiling, key=ORDER.index)


def mode_stop(mode: RemediationMode) -> Stop | None:
    if mode is RemediationMode.OFF:
        return Stop(Guard.MODE, "remediation.mode is off (kill switch): nothing is proposed")
    return None


def resolved_stop(incident: Incident) -> Stop | None:
    if incident.status is Status.RESOLVED:
        return Stop(Guard.RESOLVED, f"incident #{incident.id} is resolved")
    return None


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


def target_of(spec: Remediation, incident: Incident) -> dict[str, str]:
    """The label values that identify what the step acts on (its cooldown target)."""
    if spec.cooldown_labels is None:
        return dict(sorted(incident.group_labels.items()))
    first = incident.firing[0].labels if incident.firing else {}
    labels = {**first, **incident.common_labels}
    return {name: labels.get(name, "") for name in sorted(spec.cooldown_labels)}


def rate_limits(playbook: str, spec: Remediation, incident: Incident) -> list[RateLimit]:
    step = f"{playbook}/{spec.name}"
    target = json.dumps(target_of(spec, incident), sort_keys=True, ensure_ascii=False)
    limits = [RateLimit(f"remediation.runs:{step}", spec.max_runs, spec.window)]
    if spec.cooldown > 0:
        limits.append(RateLimit(f"remediation.cooldown:{step}:{target}", 1, spec.cooldown))
    return limits


def limit_stop(limit: RateLimit, spec: Remediation, incident: Incident) -> Stop:
    if limit.bucket.startswith("remediation.cooldown:"):
        target = ", ".join(f"{k}={v}" for k, v in target_of(spec, incident).items())
        return Stop(
            Guard.COOLDOWN,
            f"ran for the same target ({target or 'no labels'}) within the last "
            f"{format_duration(spec.cooldown)} (cooldown)",
        )
    return Stop(
        Guard.MAX_RUNS,
        f"already ran {spec.max_runs} time(s) in the last {format_duration(spec.window)} "
        "(max_runs, across incidents)",
    )


async def rate_stop(
    store: Store, playbook: str, spec: Remediation, incident: Incident, now: float
) -> Stop | None:
    """Which rate guard would stop the step now (read only: for dry runs and previews)."""
    for limit in rate_limits(playbook, spec, incident):
        entries = await store.rate_entries(limit.bucket, since=now - limit.window, now=now)
        if len(entries) >= limit.limit:
            return limit_stop(limit, spec, incident)
    return None
