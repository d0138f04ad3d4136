"""The "never on a resolved alert" guard covers the step's target, not only the incident:
a step planned for one target does not run once every alert of that target has resolved, even
while other alerts of the group keep the incident open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.incidents import AlertRecord, EventKind, Incident, Status
from bot.playbook.model import Remediation
from bot.remediation import guard
from bot.remediation.records import StepState
from bot.remediation.results import Guard
from bot.settings import Severity
from remediation_kit import STARTS, ZERO, Harness, Receiver, cart_and_search, playbook, start

GROUP = {"alertname": "CacheDown"}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


def step(receiver: Receiver, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "mode": "approval",
        "cooldown": 0,
        "action": {
            "kind": "webhook",
            "url": f"{receiver.url}/flags/cache",
            "body": {"service": "{{ labels.service }}", "step": name},
        },
        **extra,
    }


async def test_a_step_whose_target_resolved_does_not_run_while_the_incident_stays_open(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    steps = [
        step(receiver, "per-service", cooldown_labels=["service"]),  # target: service=cart
        step(receiver, "whole-group"),  # target: the group labels
    ]
    h: Harness = await start(
        aiohttp_client,
        tmp_path,
        [playbook(*steps)],
        background=False,
        remediation={"mode": "auto", "allowed_urls": [f"{receiver.url}/flags"]},
    )
    await h.post(cart_and_search("firing", "firing"))
    await h.settle()
    [incident] = await h.store.list_incidents()
    planned = await h.step(incident.id, "per-service")
    assert planned.state is StepState.PENDING_APPROVAL
    assert planned.target == {"service": "cart"}  # the first firing alert's, as planned
    assert (await h.step(incident.id, "whole-group")).target == GROUP

    # both approved; then cart's alert resolves while search's keeps the incident open
    await h.engine.approve(incident.id, "per-service", actor="ana", source="api")
    await h.engine.approve(incident.id, "whole-group", actor="ana", source="api")
    await h.post(cart_and_search("resolved", "firing"))
    await h.settle()

    current = await h.incident(incident.id)
    assert current.status is Status.TRIGGERED
    stopped = await h.step(incident.id, "per-service")
    assert (stopped.state, stopped.guard) == (StepState.SKIPPED, Guard.RESOLVED)
    assert "every alert of its target (service=cart) has resolved" in stopped.reason
    [event] = [
        e
        for e in await h.remediation_events(incident.id, "per-service")
        if e.kind == EventKind.REMEDIATION and e.data["state"] == "skipped"
    ]
    assert event.data["guard"] == "resolved"
    # the group's target still has a firing alert (search), but the call rendered from it
    # is not the one approved (for cart): it is not run, and the record says why
    refused = await h.step(incident.id, "whole-group")
    assert (refused.state, refused.guard) == (StepState.SKIPPED, Guard.CHANGED)
    assert 'proposed {"service": "cart"' in refused.reason
    assert 'now {"service": "search"' in refused.reason
    assert receiver.received == []


async def test_a_step_whose_target_still_fires_runs(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    h = await start(
        aiohttp_client,
        tmp_path,
        [playbook(step(receiver, "per-service", cooldown_labels=["service"]))],
        background=False,
        remediation={"mode": "auto", "allowed_urls": [f"{receiver.url}/flags"]},
    )
    await h.post(cart_and_search("firing", "firing"))
    await h.settle()
    [incident] = await h.store.list_incidents()
    await h.engine.approve(incident.id, "per-service", actor="ana", source="api")
    await h.post(cart_and_search("firing", "resolved"))  # another target resolved: no matter
    await h.settle()
    assert (await h.step(incident.id, "per-service")).state is StepState.SUCCEEDED
    assert [r.body for r in receiver.received] == [{"service": "cart", "step": "per-service"}]


def incident(*alerts: tuple[str, str], status: Status = Status.TRIGGERED) -> Incident:
    """An incident grouped by alertname with one alert per (service, status)."""
    return Incident(
        id=7,
        key="k",
        group_hash="h",
        receiver="bot",
        group_key='{}:{alertname="CacheDown"}',
        status=status,
        severity=Severity.P2,
        title="CacheDown",
        summary="",
        group_labels=dict(GROUP),
        common_labels=dict(GROUP),
        common_annotations={},
        external_url="",
        opened_at=0.0,
        updated_at=0.0,
        alerts=tuple(
            AlertRecord(f"f{i}", state, {**GROUP, "service": service}, {}, STARTS, ZERO, "")
            for i, (service, state) in enumerate(alerts)
        ),
    )


def spec(**extra: Any) -> Remediation:
    action = {"kind": "webhook", "url": "http://127.0.0.1:1/x"}
    return Remediation.model_validate({"name": "s", "action": action, **extra})


def test_target_guard_as_a_unit() -> None:
    per_service, whole_group = spec(cooldown_labels=["service"]), spec()
    both = incident(("cart", "firing"), ("search", "firing"))
    only_search = incident(("cart", "resolved"), ("search", "firing"))
    none_firing = incident(("cart", "resolved"), ("search", "resolved"))

    # which alerts belong to a target
    cart = {"service": "cart"}
    assert [a.labels["service"] for a in guard.target_alerts(cart, both)] == ["cart"]
    assert guard.target_alerts(cart, only_search) == []
    group = guard.target_of(whole_group, only_search)
    assert [a.labels["service"] for a in guard.target_alerts(group, only_search)] == ["search"]

    # at plan time (no recorded target: the current one) and right before running
    assert guard.resolved_stop(both, per_service) is None
    assert guard.resolved_stop(both, per_service, cart) is None
    stop = guard.resolved_stop(only_search, per_service, cart)
    assert stop is not None and stop.guard is Guard.RESOLVED
    assert "(service=cart)" in stop.reason and "stays open" in stop.reason
    assert guard.resolved_stop(only_search, whole_group, GROUP) is None
    assert guard.resolved_stop(only_search, per_service) is None  # now targets search
    stop = guard.resolved_stop(none_firing, whole_group)
    assert stop is not None and "every alert of incident #7 has resolved" in stop.reason

    # the incident's own status still comes first, with or without the step
    closed = incident(("cart", "firing"), status=Status.RESOLVED)
    for stopped in (guard.resolved_stop(closed), guard.resolved_stop(closed, per_service)):
        assert stopped is not None and stopped.reason == "incident #7 is resolved"
    assert guard.resolved_stop(none_firing) is None  # without the step: the status only
