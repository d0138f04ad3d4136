"""Webhook header values are sent, and kept nowhere.

A webhook step's ``Authorization: Bearer ...`` used to be stored with the step's spec in
the incident's data, where the store file, the API and anything rendering the incident
could read it. Here the step runs through the real path (an Alertmanager payload, the
pipeline, a Slack approval request, an approval through the API, the run job) while a
bare loopback server records what it is sent; then every table of both SQLite files,
their raw bytes (WAL included), every call Slack was sent, every API answer and every
log record are searched for the secrets. The run takes the header templates from the
loaded playbook, not from the store: a credential rotated in between is the one sent.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.playbook.model import Remediation
from bot.remediation.headers import NOT_RECORDED, recorded_spec
from bot.remediation.records import StepRecord, StepState, dump, steps_of
from bot.remediation.results import Guard
from conftest import make_settings
from fakes import FakeSlack
from narrative_support import eventually, until_quiet
from remediation_kit import RawReceiver, group, playbook

SECRET = "hdrsecret-Zq8Wm3Kv7Tn1"
ROLLBACK_SECRET = "rbsecret-Lp4Xc9Hd2Gf6"
API_TOKEN = "apitok-hdr-0123456789"
BOT_TOKEN = "xoxb-hdr-token"
SECRETS = (SECRET, ROLLBACK_SECRET)


@pytest.fixture
async def service() -> AsyncIterator[RawReceiver]:
    async with RawReceiver() as server:
        yield server


def step(url: str, authorization: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "fallback",
        "mode": "approval",
        "cooldown": 0,
        "action": {
            "kind": "webhook",
            "url": f"{url}/v1/flags/fallback",
            "headers": {"Authorization": authorization, "X-Service": "{{ labels.service }}"},
            "body": {"service": "{{ labels.service }}", "enabled": True},
        },
        **extra,
    }


def with_rollback(url: str) -> dict[str, Any]:
    return step(
        url,
        f"Bearer {SECRET}",
        rollback={
            "kind": "webhook",
            "url": f"{url}/v1/flags/fallback",
            "method": "DELETE",
            "headers": {"Authorization": f"Bearer {ROLLBACK_SECRET}"},
        },
    )


def store_texts(folder: Path) -> list[tuple[str, str]]:
    """Every SQLite file's raw bytes (database, WAL, the inbox's) and every row of every
    table, read through SQLite itself (a value may be stored compressed or split)."""
    found = []
    for path in sorted(folder.glob("alertpilot.db*")):
        found.append((f"bytes of {path.name}", path.read_bytes().decode("latin-1")))
        if path.name.endswith(("-wal", "-shm", "-journal")):
            continue
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
                found.append((f"table {table} of {path.name}", json.dumps(rows, default=str)))
        finally:
            db.close()
    return found


def leaks(where: str, text: str) -> list[str]:
    return [f"{secret} in {where}" for secret in SECRETS if secret in text]


async def test_header_values_reach_the_service_and_nothing_else(
    aiohttp_client: Any,
    tmp_path: Path,
    service: RawReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "flags.yaml").write_text(yaml.safe_dump([playbook(with_rollback(service.url))]))
    answers: list[str] = []
    async with FakeSlack(token=BOT_TOKEN) as slack:
        settings = make_settings(
            tmp_path,
            server={"api_token": API_TOKEN},
            playbooks={"paths": [str(folder)]},
            slack={
                "bot_token": BOT_TOKEN,
                "signing_secret": "signing-secret-hdr",
                "api_url": slack.base_url,
                "default_channel": "C0ALERTS",
            },
            remediation={"mode": "approval", "allowed_urls": [f"{service.url}/v1/flags"]},
        )
        client: TestClient = await aiohttp_client(create_app(settings))
        store = client.app[keys.STORE]
        auth = {"Authorization": f"Bearer {API_TOKEN}"}

        async def api(method: str, path: str, **kwargs: Any) -> Any:
            resp = await client.request(method, path, headers=auth, **kwargs)
            text = await resp.text()
            answers.append(f"{method} {path} -> {resp.status}: {text}")
            assert resp.status < 300, answers[-1]
            return json.loads(text)

        resp = await client.post("/alertmanager", json=group({"alertname": "CacheDown"}, labels={
            "service": "cart"
        }))  # fmt: skip
        assert resp.status == 200

        async def pending() -> Any:
            incidents = await store.list_incidents(limit=5)
            if not incidents:
                return None
            incident = await store.get_incident(incidents[0].id, timeline=False)
            record = steps_of(incident).get("fallback")
            posted = (incident.data.get("slack") or {}).get("ts")
            ready = record is not None and record.state is StepState.PENDING_APPROVAL
            return incident if ready and posted else None

        incident = await eventually(pending, timeout=20, what="the approval request in Slack")
        await api("GET", f"/api/v1/incidents/{incident.id}")
        await api(
            "POST",
            f"/api/v1/incidents/{incident.id}/approvals",
            json={"step": "fallback", "decision": "approve", "actor": "ana"},
        )

        async def ran() -> bool:
            current = await store.get_incident(incident.id, timeline=False)
            return steps_of(current)["fallback"].state is StepState.SUCCEEDED

        await eventually(ran, timeout=20, what="the approved step's run")
        await until_quiet(client, incident.id)
        await api("GET", "/api/v1/incidents")
        await api("GET", f"/api/v1/incidents/{incident.id}")
        stored = store_texts(tmp_path)  # while the WAL is still there
        slack_calls = [
            f"{r.method} {r.path} {r.raw.decode('utf-8', 'replace')} {json.dumps(r.params)}"
            for r in slack.requests
        ]
        record = steps_of(await store.get_incident(incident.id, timeline=False))["fallback"]
        await client.close()  # before Slack goes: nothing left to tell it

    [sent] = service.received
    assert sent.line == "POST /v1/flags/fallback HTTP/1.1"
    assert sent.header("Authorization") == f"Bearer {SECRET}"
    assert sent.header("X-Service") == "cart"
    assert record.spec["action"]["headers"] == {
        "Authorization": NOT_RECORDED,
        "X-Service": NOT_RECORDED,
    }
    assert record.call is not None and record.call["header_names"] == [
        "Authorization",
        "X-Service",
    ]
    assert any("chat.postMessage" in call for call in slack_calls), "Slack was not told"
    assert any(NOT_RECORDED in text for _, text in stored)

    problems = []
    for where, text in [*stored, *store_texts(tmp_path)]:
        problems += leaks(where, text)
    for call in slack_calls:
        problems += leaks(f"a Slack call {call[:200]!r}", call)
    for answer in answers:
        problems += leaks(f"an API answer {answer[:200]!r}", answer)
    for entry in caplog.records:
        problems += leaks(f"log record {entry.getMessage()[:200]!r}", entry.getMessage())
    assert problems == []


async def restarted(
    aiohttp_client: Any, tmp_path: Path, service: RawReceiver, before: Any, after: Any
) -> StepRecord:
    """The step proposed (approval pending) by a server loading ``before``, then approved
    and run by a server started afterwards on the same store, loading ``after``."""
    folder = tmp_path / "playbooks"
    folder.mkdir(exist_ok=True)
    settings = make_settings(
        tmp_path,
        playbooks={"paths": [str(folder)]},
        remediation={"mode": "approval", "allowed_urls": [f"{service.url}/v1/flags"]},
    )
    (folder / "flags.yaml").write_text(yaml.safe_dump(before))
    first: TestClient = await aiohttp_client(create_app(settings))
    resp = await first.post("/alertmanager", json=group({"alertname": "CacheDown"}, labels={
        "service": "cart"
    }))  # fmt: skip
    assert resp.status == 200

    async def proposed() -> Any:
        incidents = await first.app[keys.STORE].list_incidents(limit=5)
        if not incidents:
            return None
        record = steps_of(incidents[0]).get("fallback")
        pending = record is not None and record.state is StepState.PENDING_APPROVAL
        return incidents[0].id if pending else None

    incident_id = await eventually(proposed, timeout=20, what="the approval request")
    await first.close()

    (folder / "flags.yaml").write_text(yaml.safe_dump(after))
    second: TestClient = await aiohttp_client(create_app(settings))
    await second.app[keys.REMEDIATION].approve(incident_id, "fallback", actor="ana", source="api")

    async def done() -> StepRecord | None:
        incident = await second.app[keys.STORE].get_incident(incident_id, timeline=False)
        record = steps_of(incident)["fallback"]
        return record if record.state in (StepState.SUCCEEDED, StepState.SKIPPED) else None

    return await eventually(done, timeout=20, what="the approved step's run")


async def test_the_run_takes_header_values_from_the_playbook_loaded_then(
    aiohttp_client: Any, tmp_path: Path, service: RawReceiver
) -> None:
    before = [playbook(step(service.url, "Bearer old-token"))]
    after = [playbook(step(service.url, "Bearer new-token"))]  # the credential was rotated
    record = await restarted(aiohttp_client, tmp_path, service, before, after)
    assert record.state is StepState.SUCCEEDED
    [sent] = service.received
    assert sent.header("Authorization") == "Bearer new-token"


def _renamed(url: str) -> list[dict[str, Any]]:
    changed = step(url, "Bearer old-token")
    changed["action"]["headers"] = {"X-Api-Key": "k"}
    return [playbook(changed)]


def _gone(url: str) -> list[dict[str, Any]]:
    return [{**playbook(step(url, "Bearer old-token")), "name": "other"}]


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        (_gone, "playbook cache, step fallback is no longer loaded"),
        (_renamed, "the action's webhook headers in the loaded playbook are not the ones"),
    ],
)
async def test_headers_that_cannot_be_rebuilt_as_proposed_stop_the_step(
    aiohttp_client: Any, tmp_path: Path, service: RawReceiver, after: Any, reason: str
) -> None:
    before = [playbook(step(service.url, "Bearer old-token"))]
    record = await restarted(aiohttp_client, tmp_path, service, before, after(service.url))
    assert (record.state, record.guard) == (StepState.SKIPPED, Guard.CHANGED)
    assert reason in record.reason
    assert service.received == []


def test_the_recorded_spec_keeps_header_names_only() -> None:
    spec = Remediation.model_validate(with_rollback("http://127.0.0.1:1"))
    recorded = recorded_spec(spec)
    assert recorded["action"]["headers"] == {
        "Authorization": NOT_RECORDED,
        "X-Service": NOT_RECORDED,
    }
    assert recorded["rollback"]["headers"] == {"Authorization": NOT_RECORDED}
    assert not any(secret in json.dumps(recorded) for secret in SECRETS)
    assert Remediation.model_validate(recorded).action.kind == "webhook"  # still a valid step
    assert spec.action.headers["Authorization"] == f"Bearer {SECRET}"  # type: ignore[union-attr]


def test_a_record_written_before_values_were_masked_loses_them_when_read() -> None:
    legacy = Remediation.model_validate(with_rollback("http://127.0.0.1:1"))
    raw = {
        "key": "fallback",
        "step": "fallback",
        "playbook": "cache",
        "kind": "webhook",
        "mode": "approval",
        "state": "pending_approval",
        "spec": legacy.model_dump(mode="json"),  # as records were stored before
        "planned_at": 1.0,
        "updated_at": 1.0,
    }
    record = StepRecord.model_validate(raw)
    assert record.spec["action"]["headers"]["Authorization"] == NOT_RECORDED
    assert record.spec["rollback"]["headers"] == {"Authorization": NOT_RECORDED}
    assert not any(secret in json.dumps(dump({"fallback": record})) for secret in SECRETS)
