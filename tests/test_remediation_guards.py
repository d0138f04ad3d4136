"""Each guard stops what it should and records why: mode ceiling (off, dry_run, suggest,
approval), the ``when`` precondition, max_runs across incidents, cooldown per target,
resolved incidents, and a restart in the middle of a run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import keys
from bot.core.clock import ManualClock
from bot.core.incidents import EventKind, Incident
from bot.remediation.records import StepState, approvals_of, dump, steps_of
from bot.remediation.results import Guard
from bot.store.base import IncidentChange
from remediation_kit import Harness, Receiver, playbook, start
from stack import Prometheus


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


def webhook_step(receiver: Receiver, name: str = "flip-flag", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "mode": "auto",
        "cooldown": 0,
        "action": {
            "kind": "webhook",
            "url": f"{receiver.url}/flags/cache",
            "body": {"enabled": False, "service": "{{ labels.service }}"},
        },
        **extra,
    }


def allow(receiver: Receiver, mode: str = "auto", **extra: Any) -> dict[str, Any]:
    return {"remediation": {"mode": mode, "allowed_urls": [f"{receiver.url}/flags"], **extra}}


async def harness(
    aiohttp_client: Any,
    tmp_path: Path,
    receiver: Receiver,
    steps: list[dict[str, Any]],
    mode: str = "auto",
    clock: ManualClock | None = None,
    **extra: Any,
) -> Harness:
    return await start(
        aiohttp_client,
        tmp_path,
        [playbook(*steps)],
        clock=clock,
        background=False,
        **allow(receiver, mode, **extra),
    )


async def test_global_approval_ceiling_holds_back_an_auto_step(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    h = await harness(aiohttp_client, tmp_path, receiver, [webhook_step(receiver)], "approval")
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.settle()
    record = await h.step(incident_id, "flip-flag")
    assert record.state is StepState.PENDING_APPROVAL
    assert record.mode.value == "approval"
    assert receiver.received == []
    [requested] = await h.remediation_events(incident_id, "flip-flag")
    assert requested.kind == EventKind.APPROVAL
    assert requested.data["state"] == "requested"
    assert requested.data["call"] == f"POST {receiver.url}/flags/cache"
    assert [p.step for p in await h.engine.pending(incident_id)] == ["flip-flag"]


async def test_global_suggest_ceiling_only_suggests(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    h = await harness(aiohttp_client, tmp_path, receiver, [webhook_step(receiver)], "suggest")
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.settle()
    assert (await h.step(incident_id, "flip-flag")).state is StepState.SUGGESTED
    assert await h.engine.pending(incident_id) == []
    assert receiver.received == []
    [event] = await h.remediation_events(incident_id, "flip-flag")
    assert event.data["state"] == "suggested"
    assert "not run by alertpilot" in event.message


async def test_off_is_a_kill_switch(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    steps = [webhook_step(receiver), webhook_step(receiver, "other", mode="approval")]
    h = await harness(aiohttp_client, tmp_path, receiver, steps, "off")
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.settle()
    incident = await h.incident(incident_id)
    for record in steps_of(incident).values():
        assert record.state is StepState.SKIPPED
        assert record.guard is Guard.MODE
        assert "kill switch" in record.reason
        assert record.call is None  # nothing was even rendered
    assert approvals_of(incident) == {}
    assert receiver.received == []
    events = await h.events(incident_id, EventKind.REMEDIATION)
    assert {e.data["guard"] for e in events} == {"mode"}
    assert all("not proposed" in e.message for e in events)


async def test_dry_run_records_the_exact_call_and_runs_nothing(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    marker = tmp_path / "ran"
    command = {
        "name": "touch-marker",
        "mode": "auto",
        "cooldown": 0,
        "action": {"kind": "command", "argv": ["/usr/bin/touch", str(marker)]},
    }
    h = await harness(
        aiohttp_client,
        tmp_path,
        receiver,
        [webhook_step(receiver), command],
        "dry_run",
        allowed_commands=["/usr/bin/touch"],
    )
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.settle()
    webhook = await h.step(incident_id, "flip-flag")
    assert webhook.state is StepState.DRY_RUN
    assert webhook.call is not None
    assert webhook.call["method"] == "POST"
    assert webhook.call["url"] == f"{receiver.url}/flags/cache"
    assert webhook.call["body"] == {"enabled": False, "service": "cart"}
    assert webhook.result is None
    touch = await h.step(incident_id, "touch-marker")
    assert touch.state is StepState.DRY_RUN
    assert touch.call is not None and touch.call["argv"] == ["/usr/bin/touch", str(marker)]
    assert receiver.received == []
    assert not marker.exists()
    events = await h.events(incident_id, EventKind.REMEDIATION)
    dry = [e for e in events if e.data["state"] == "dry_run"]
    assert {e.data["step"] for e in dry} == {"flip-flag", "touch-marker"}
    assert all(e.data["would_run"] is True for e in dry)
    assert "would run: POST" in next(e.message for e in dry if e.data["step"] == "flip-flag")


async def test_max_runs_counts_across_incidents(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    clock = ManualClock()
    step = webhook_step(receiver, max_runs=1, window="1h")
    h = await harness(aiohttp_client, tmp_path, receiver, [step], clock=clock)
    first = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.settle()
    second = await h.fire({"alertname": "CacheDown", "service": "search"})
    await h.settle()
    assert (await h.step(first, "flip-flag")).state is StepState.SUCCEEDED
    stopped = await h.step(second, "flip-flag")
    assert stopped.state is StepState.SKIPPED
    assert stopped.guard is Guard.MAX_RUNS
    assert "already ran 1 time(s) in the last 1h" in stopped.reason
    assert [r.body["service"] for r in receiver.received] == ["cart"]
    [event] = [
        e for e in await h.events(second, EventKind.REMEDIATION) if e.data["state"] == "skipped"
    ]
    assert event.data["guard"] == "max_runs"
    clock.advance(3601)  # the window has passed
    third = await h.fire({"alertname": "CacheDown", "service": "web"})
    await h.settle()
    assert (await h.step(third, "flip-flag")).state is StepState.SUCCEEDED
    assert [r.body["service"] for r in receiver.received] == ["cart", "web"]


async def test_cooldown_is_per_target(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    clock = ManualClock()
    step = webhook_step(receiver, max_runs=10, cooldown="10m", cooldown_labels=["service"])
    h = await harness(aiohttp_client, tmp_path, receiver, [step], clock=clock)
    cart = await h.fire({"alertname": "CacheDown", "instance": "a"}, labels={"service": "cart"})
    search = await h.fire({"alertname": "CacheDown", "instance": "b"}, labels={"service": "search"})
    await h.settle()
    again = await h.fire({"alertname": "CacheDown", "instance": "c"}, labels={"service": "cart"})
    await h.settle()
    assert (await h.step(cart, "flip-flag")).state is StepState.SUCCEEDED
    assert (await h.step(search, "flip-flag")).state is StepState.SUCCEEDED
    stopped = await h.step(again, "flip-flag")
    assert (stopped.state, stopped.guard) == (StepState.SKIPPED, Guard.COOLDOWN)
    assert "same target (service=cart)" in stopped.reason
    assert sorted(r.body["service"] for r in receiver.received) == ["cart", "search"]
    clock.advance(601)
    later = await h.fire({"alertname": "CacheDown", "instance": "d"}, labels={"service": "cart"})
    await h.settle()
    assert (await h.step(later, "flip-flag")).state is StepState.SUCCEEDED


async def test_resolved_incident_is_never_remediated(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    steps = [webhook_step(receiver, mode="approval"), webhook_step(receiver, "second")]
    h = await harness(aiohttp_client, tmp_path, receiver, steps, "auto")
    labels = {"alertname": "CacheDown", "service": "cart"}
    incident_id = await h.fire(labels)
    await h.settle()  # "second" (auto) ran; "flip-flag" waits for approval
    assert len(receiver.received) == 1
    # approved, then the incident resolves before the run job gets to it
    await h.engine.approve(incident_id, "flip-flag", actor="ana", source="api")
    await h.app[keys.ACTIONS].resolve(incident_id, actor="bo", source="api")
    await h.settle()
    record = await h.step(incident_id, "flip-flag")
    assert (record.state, record.guard) == (StepState.SKIPPED, Guard.RESOLVED)
    assert len(receiver.received) == 1
    # planning on a resolved incident proposes nothing runnable
    await h.store.change_incident(
        incident_id, lambda i: IncidentChange(data={"remediations": {}, "approvals": {}}), now=0
    )
    planned = await h.engine.plan(incident_id)
    assert {(r.state, r.guard) for r in planned} == {(StepState.SKIPPED, Guard.RESOLVED)}
    await h.settle()
    assert len(receiver.received) == 1


async def test_a_step_interrupted_while_running_is_never_run_again(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    step = webhook_step(receiver, mode="approval")
    h = await harness(aiohttp_client, tmp_path, receiver, [step], "auto")
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.settle()
    await h.engine.approve(incident_id, "flip-flag", actor="ana", source="cli")

    def crashed(incident: Incident) -> IncidentChange:
        """What a crash right after the step was marked running leaves behind."""
        steps = steps_of(incident)
        steps["flip-flag"].state = StepState.RUNNING
        return IncidentChange(data={"remediations": dump(steps)})

    await h.store.change_incident(incident_id, crashed, now=0)
    await h.settle()  # the run job, as after a restart
    record = await h.step(incident_id, "flip-flag")
    assert (record.state, record.guard) == (StepState.FAILED, Guard.INTERRUPTED)
    assert "not run again" in record.reason
    assert receiver.received == []


@pytest.mark.integration
async def test_when_precondition_is_checked_right_before_running(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    async with Prometheus(tmp_path) as prom:
        steps = [
            webhook_step(receiver, "zero", when="vector(0)"),
            webhook_step(receiver, "empty", when='up{job="no-such-job"}'),
            webhook_step(receiver, "holds", when="vector(1) > 0"),
            # a label value cannot write PromQL: it stays inside its string literal
            webhook_step(receiver, "injected", when="up{job={{ labels.service | promql }}}"),
        ]
        h = await start(
            aiohttp_client,
            tmp_path,
            [playbook(*steps)],
            background=False,
            prometheus={"url": prom.url},
            **allow(receiver),
        )
        service = 'cart"} or vector(1) #'
        incident_id = await h.fire({"alertname": "CacheDown", "service": service})
        await h.settle()
        zero, empty = await h.step(incident_id, "zero"), await h.step(incident_id, "empty")
        assert (zero.state, zero.guard) == (StepState.SKIPPED, Guard.WHEN)
        assert "does not hold (only zero values)" in zero.reason
        assert (empty.state, empty.guard) == (StepState.SKIPPED, Guard.WHEN)
        assert "does not hold (an empty result)" in empty.reason
        assert (await h.step(incident_id, "holds")).state is StepState.SUCCEEDED
        injected = await h.step(incident_id, "injected")
        assert (injected.state, injected.guard) == (StepState.SKIPPED, Guard.WHEN)
        assert 'up{job="cart\\"} or vector(1) #"}' in injected.reason
        assert [r.body["service"] for r in receiver.received] == [service]
        reasons = [
            e.data.get("reason", "")
            for e in await h.events(incident_id, EventKind.REMEDIATION)
            if e.data.get("guard") == "when"
        ]
        assert len(reasons) == 3
