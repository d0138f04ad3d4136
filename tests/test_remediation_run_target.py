"""What runs is what was proposed: a step renders its call, when it runs, from the alert it
was planned for (not from whichever alert of the incident is first by then), and runs only
when that call is exactly the one the proposal and the approval showed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.incidents import AlertRecord, EventKind, Incident, Status
from bot.remediation import guard
from bot.remediation.records import StepState
from bot.remediation.results import Guard
from bot.settings import Severity
from remediation_kit import (
    CART,
    SEARCH,
    STARTS,
    ZERO,
    Harness,
    Receiver,
    cart_and_search,
    playbook,
    start,
)

GROUP = {"alertname": "CacheDown"}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


def webhook(receiver: Receiver, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "mode": "approval",
        "cooldown": 0,
        "action": {
            "kind": "webhook",
            "url": receiver.url + "/flags/{{ labels.service }}",
            "body": {"service": "{{ labels.service }}", "step": name},
        },
        **extra,
    }


async def approved_while_another_alert_becomes_first(h: Harness, *names: str) -> Incident:
    """Plan while only search fires; approve; then cart fires again and is first."""
    await h.post(cart_and_search("resolved", "firing"))
    await h.settle()
    [incident] = await h.store.list_incidents()
    for name in names:
        await h.engine.approve(incident.id, name, actor="ana", source="api")
    await h.post(cart_and_search("firing", "firing"))
    current = await h.incident(incident.id)
    assert current.firing[0].labels["service"] == "cart"  # first now: nobody approved it
    await h.settle()
    return current


async def test_an_approved_webhook_runs_on_the_alert_it_was_proposed_for(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    steps = [
        webhook(receiver, "per-service", cooldown_labels=["service"]),
        webhook(receiver, "whole-group"),
    ]
    h = await start(
        aiohttp_client,
        tmp_path,
        [playbook(*steps)],
        background=False,
        remediation={"mode": "auto", "allowed_urls": [f"{receiver.url}/flags"]},
    )
    incident = await approved_while_another_alert_becomes_first(h, "per-service", "whole-group")
    for name in ("per-service", "whole-group"):
        record = await h.step(incident.id, name)
        assert record.state is StepState.SUCCEEDED, record
        assert record.alert == SEARCH
        assert record.call is not None and record.call["body"]["service"] == "search"
        events = await h.remediation_events(incident.id, name)
        [asked] = [e for e in events if e.data.get("state") == "requested"]
        [running] = [e for e in events if e.data.get("state") == "running"]
        assert asked.data["call"] == running.data["call"] == f"POST {receiver.url}/flags/search"
    assert (await h.step(incident.id, "per-service")).target == {"service": "search"}
    assert sorted((r.path, r.body["service"]) for r in receiver.received) == [
        ("/flags/search", "search"),
        ("/flags/search", "search"),
    ]


async def test_an_approved_command_runs_with_the_arguments_proposed(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    step = {
        "name": "restart",
        "mode": "approval",
        "cooldown": 0,
        "action": {
            "kind": "command",
            "argv": [
                "/bin/echo",
                "restart",
                {"template": "deployment/{{ labels.service }}", "pattern": "deployment/[a-z]+"},
            ],
        },
    }
    h = await start(
        aiohttp_client,
        tmp_path,
        [playbook(step)],
        background=False,
        remediation={"mode": "auto", "allowed_commands": ["/bin/echo"]},
    )
    incident = await approved_while_another_alert_becomes_first(h, "restart")
    record = await h.step(incident.id, "restart")
    assert record.state is StepState.SUCCEEDED, record
    assert record.call is not None
    assert record.call["argv"] == ["/bin/echo", "restart", "deployment/search"]
    assert record.result is not None and record.result.output.strip() == "restart deployment/search"


async def test_another_alert_of_the_target_runs_the_step_when_the_call_is_the_same(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    step = {
        "name": "group-flag",
        "mode": "approval",
        "cooldown": 0,
        "action": {
            "kind": "webhook",
            "url": f"{receiver.url}/flags/cache",
            "body": {"alert": "{{ labels.alertname }}"},
        },
    }
    h = await start(
        aiohttp_client,
        tmp_path,
        [playbook(step)],
        background=False,
        remediation={"mode": "auto", "allowed_urls": [f"{receiver.url}/flags"]},
    )
    await h.post(cart_and_search("firing", "firing"))
    await h.settle()
    [incident] = await h.store.list_incidents()
    assert (await h.step(incident.id, "group-flag")).alert == CART
    await h.engine.approve(incident.id, "group-flag", actor="ana", source="api")
    await h.post(cart_and_search("resolved", "firing"))  # its alert resolved; the group's fires
    await h.settle()
    assert (await h.step(incident.id, "group-flag")).state is StepState.SUCCEEDED
    assert [r.body for r in receiver.received] == [{"alert": "CacheDown"}]


def incident(*alerts: tuple[str, str, str]) -> Incident:
    """An incident grouped by alertname; one alert per (fingerprint, service, status)."""
    return Incident(
        id=9,
        key="k",
        group_hash="h",
        receiver="bot",
        group_key='{}:{alertname="CacheDown"}',
        status=Status.TRIGGERED,
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
            AlertRecord(fp, state, {**GROUP, "service": service}, {}, STARTS, ZERO, "")
            for fp, service, state in alerts
        ),
    )


def test_run_alert_and_proposed_call_as_units() -> None:
    both = incident(("a", "cart", "firing"), ("b", "search", "firing"))
    only_search = incident(("a", "cart", "resolved"), ("b", "search", "firing"))
    assert guard.subject_alert(only_search) == only_search.alerts[1]

    def service(found: AlertRecord | None) -> str | None:
        return found.labels["service"] if found is not None else None

    # the planned alert while it fires, whichever alert is first
    assert service(guard.run_alert(both, "b", GROUP)) == "search"
    assert service(guard.run_alert(both, "b", {"service": "search"})) == "search"
    # else the first firing alert of the target; none: the resolved guard stops the step
    assert service(guard.run_alert(only_search, "a", GROUP)) == "search"
    assert guard.run_alert(only_search, "a", {"service": "cart"}) is None
    assert service(guard.run_alert(both, None, {"service": "search"})) == "search"

    proposed = {"text": "POST http://x/f", "method": "POST", "url": "http://x/f", "body": 1.0}
    assert guard.proposed_stop(proposed, dict(proposed)) is None
    stop = guard.proposed_stop(proposed, {**proposed, "body": 2.0})
    assert stop is not None and stop.guard is Guard.CHANGED
    assert "body: proposed 1.0, now 2.0" in stop.reason
    stop = guard.proposed_stop(None, proposed)
    assert stop is not None and stop.guard is Guard.CHANGED


async def test_a_changed_call_is_refused_and_recorded(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    h = await start(
        aiohttp_client,
        tmp_path,
        [playbook(webhook(receiver, "whole-group"))],
        background=False,
        remediation={"mode": "auto", "allowed_urls": [f"{receiver.url}/flags"]},
    )
    await h.post(cart_and_search("firing", "firing"))
    await h.settle()
    [found] = await h.store.list_incidents()
    await h.engine.approve(found.id, "whole-group", actor="ana", source="api")
    await h.post(
        cart_and_search("resolved", "firing")
    )  # cart's alert resolved: search would differ
    await h.settle()
    record = await h.step(found.id, "whole-group")
    assert (record.state, record.guard) == (StepState.SKIPPED, Guard.CHANGED)
    assert "differs from the one proposed" in record.reason
    assert record.call is not None and record.call["body"]["service"] == "cart"  # as proposed
    [event] = [
        e
        for e in await h.remediation_events(found.id, "whole-group")
        if e.kind == EventKind.REMEDIATION and e.data["state"] == "skipped"
    ]
    assert event.data["guard"] == "changed"
    assert receiver.received == []
