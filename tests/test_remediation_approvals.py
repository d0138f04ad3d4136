"""Approvals from outside Slack: ``alertpilot approve|reject`` and the API; expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import keys
from bot.cli import main
from bot.core.clock import ManualClock
from bot.core.incidents import EventKind
from bot.remediation.records import ApprovalState, StepState, approvals_of
from conftest import API, JSON
from remediation_kit import Receiver, playbook, start
from stack import Prometheus

TOKEN = "api-token-0123456789"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


def approval_step(receiver: Receiver, name: str = "restart", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "mode": "approval",
        "description": "restart the cache workers",
        "cooldown": 0,
        "action": {
            "kind": "webhook",
            "url": f"{receiver.url}/workers/restart",
            "body": {"service": "{{ labels.service }}"},
        },
        **extra,
    }


def remediation(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"mode": "auto", "allowed_urls": [f"{receiver.url}/workers"], **extra}


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


def write_config(tmp_path: Path, **extra: Any) -> str:
    path = tmp_path / "config.yaml"
    config = {
        "store": {"url": f"sqlite:///{tmp_path}/alertpilot.db"},
        "playbooks": {"paths": []},
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.integration
async def test_cli_approval_runs_the_step_in_the_server_and_verifies(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Prometheus(tmp_path) as prom:
        verify = {"query": "vector(1)", "expect": "== 1", "within": "3s", "interval": "0.5s"}
        h = await start(
            aiohttp_client,
            tmp_path,
            [playbook(approval_step(receiver, verify=verify))],
            prometheus={"url": prom.url},
            remediation=remediation(receiver),
        )
        incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
        await h.wait_step(incident_id, "restart", {StepState.PENDING_APPROVAL})
        assert receiver.received == []
        config = write_config(tmp_path)
        args = ("approve", "--config", config, str(incident_id), "restart", "--actor", "ana")
        code = await cli(*args)
        assert code == 0
        assert "restart approved by ana" in capsys.readouterr().out
        record = await h.wait_step(incident_id, "restart", {StepState.VERIFIED, StepState.FAILED})
        assert record.state is StepState.VERIFIED
        assert [(r.path, r.body) for r in receiver.received] == [
            ("/workers/restart", {"service": "cart"})
        ]
        states = [e.data["state"] for e in await h.remediation_events(incident_id, "restart")]
        assert states == ["requested", "approved", "running", "verifying", "verified"]
        events = await h.events(incident_id, EventKind.APPROVAL)
        approved = [e for e in events if e.data["state"] == "approved"]
        assert (approved[0].actor, approved[0].data["source"]) == ("ana", "cli")
        # a second approval is refused: the step is no longer pending
        code = await cli("approve", "--config", config, str(incident_id), "restart")
        assert code == 1
        assert "not awaiting approval" in capsys.readouterr().err
        assert len(receiver.received) == 1


async def test_cli_reject_and_unknown_targets(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await start(
        aiohttp_client,
        tmp_path,
        [playbook(approval_step(receiver))],
        remediation=remediation(receiver),
    )
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.wait_step(incident_id, "restart", {StepState.PENDING_APPROVAL})
    config = write_config(tmp_path)
    assert await cli("reject", "--config", config, str(incident_id), "nope") == 1
    assert "has no remediation step 'nope' (steps: restart)" in capsys.readouterr().err
    assert await cli("reject", "--config", config, "999", "restart") == 1
    assert "no incident #999" in capsys.readouterr().err
    code = await cli(
        "reject", "--config", config, str(incident_id), "restart", "--actor", "bo",
        "--reason", "cache is warming up",
    )  # fmt: skip
    assert code == 0
    record = await h.wait_step(incident_id, "restart", {StepState.REJECTED})
    assert record.reason == "cache is warming up"
    [rejected] = [
        e for e in await h.events(incident_id, EventKind.APPROVAL) if e.data["state"] == "rejected"
    ]
    assert (rejected.actor, rejected.data["source"]) == ("bo", "cli")
    assert "rejected by bo (cli): cache is warming up" in rejected.message
    assert await cli("approve", "--config", config, str(incident_id), "restart") == 1
    await h.settle()
    assert receiver.received == []


async def test_api_approvals(aiohttp_client: Any, tmp_path: Path, receiver: Receiver) -> None:
    steps = [approval_step(receiver), approval_step(receiver, "drain")]
    h = await start(
        aiohttp_client,
        tmp_path,
        [playbook(*steps)],
        server={"api_token": TOKEN},
        remediation=remediation(receiver),
    )
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.wait_step(incident_id, "drain", {StepState.PENDING_APPROVAL})
    url = f"/api/v1/incidents/{incident_id}/approvals"
    auth = {"Authorization": f"Bearer {TOKEN}", **JSON}
    body = {"step": "restart", "decision": "approve", "actor": "ana"}

    async def post(payload: Any, path: str = url, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        headers = kwargs.pop("headers", auth)
        resp = await h.client.post(path, headers=headers, **({"json": payload} | kwargs))
        return resp.status, await resp.json()

    assert (await post(body, headers={}))[0] == 401
    assert (await post(body, headers={"Authorization": "Bearer wrong"}))[0] == 401
    for raw in (b"{not json", b'{"step": "restart", "decision": "approve", "actor": NaN}'):
        status, answer = await post(None, data=raw, json=None)
        assert (status, answer["error"]) == (400, "invalid_json"), raw
    for bad in (
        {"step": "restart", "decision": "approve"},  # no actor
        {**body, "decision": "maybe"},
        {**body, "actor": "   "},
        {**body, "extra": 1},
        ["restart"],
    ):
        status, answer = await post(bad)
        assert (status, answer["error"]) == (400, "invalid_approval"), bad
    assert (await post(body, "/api/v1/incidents/abc/approvals"))[0] == 400
    assert (await post(body, "/api/v1/incidents/424242/approvals"))[0] == 404
    status, answer = await post({**body, "step": "nope"})
    assert status == 404 and "has no remediation step 'nope'" in answer["message"]

    status, answer = await post(body)
    assert status == 202
    assert answer == {
        "incident_id": incident_id,
        "step": "restart",
        "decision": "approve",
        "state": "approved",
        "attempt": 1,
    }
    await h.wait_step(incident_id, "restart", {StepState.SUCCEEDED})
    assert [r.body for r in receiver.received] == [{"service": "cart"}]
    status, answer = await post(body)
    assert status == 409 and "not awaiting approval (it is succeeded)" in answer["message"]

    status, answer = await post({"step": "drain", "decision": "reject", "actor": "bo"})
    assert (status, answer["state"]) == (200, "rejected")
    assert (await post({"step": "drain", "decision": "approve", "actor": "ana"}))[0] == 409
    await h.settle()
    assert len(receiver.received) == 1
    events = await h.events(incident_id, EventKind.APPROVAL)
    decided = [(e.data["step"], e.data["state"], e.actor, e.data.get("source")) for e in events]
    # the shared token proves no name: the audit says whose word it is
    assert ("restart", "approved", "ana (via API token)", "api") in decided
    assert ("drain", "rejected", "bo (via API token)", "api") in decided
    assert await h.engine.pending(incident_id) == []


async def test_approvals_expire(aiohttp_client: Any, tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock()
    steps = [approval_step(receiver), approval_step(receiver, "drain")]
    h = await start(
        aiohttp_client,
        tmp_path,
        [playbook(*steps)],
        clock=clock,
        background=False,
        remediation=remediation(receiver, approval_ttl="10m"),
    )
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.settle()
    pending = await h.engine.pending(incident_id)
    assert {p.step for p in pending} == {"restart", "drain"}
    assert all(p.expires_at == clock.now() + 600 for p in pending)
    clock.advance(599)
    await h.settle()
    assert len(await h.engine.pending(incident_id)) == 2
    clock.advance(2)
    # the timer has not run yet: a late approval still finds the approval expired
    resp = await h.client.post(
        f"/api/v1/incidents/{incident_id}/approvals",
        json={"step": "restart", "decision": "approve", "actor": "ana"},
        headers=API,
    )
    assert resp.status == 409
    assert "expired" in (await resp.json())["message"]
    await h.settle()  # the expiry timers
    incident = await h.incident(incident_id)
    approvals = approvals_of(incident)
    assert {a.state for a in approvals.values()} == {ApprovalState.EXPIRED}
    for key in ("restart", "drain"):
        assert (await h.step(incident_id, key)).state is StepState.EXPIRED
    expired = [e for e in incident.timeline if e.data.get("state") == "expired"]
    assert {e.data["step"] for e in expired} == {"restart", "drain"}
    assert await h.engine.pending(incident_id) == []
    assert receiver.received == []


async def test_pending_approvals_are_cancelled_when_the_incident_resolves(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    h = await start(
        aiohttp_client,
        tmp_path,
        [playbook(approval_step(receiver))],
        background=False,
        remediation=remediation(receiver),
    )
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.settle()
    await h.app[keys.ACTIONS].resolve(incident_id, actor="bo", source="api")
    await h.settle()
    assert (await h.step(incident_id, "restart")).state is StepState.CANCELLED
    resp = await h.client.post(
        f"/api/v1/incidents/{incident_id}/approvals",
        json={"step": "restart", "decision": "approve", "actor": "ana"},
        headers=API,
    )
    assert resp.status == 409
    await h.settle()
    assert receiver.received == []
