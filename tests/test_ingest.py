"""POST /alertmanager: durable ack, auth, bad inputs, size limits, idempotent processing."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.incidents import Status
from bot.settings import Settings
from conftest import API, FIXTURES, JSON, make_settings, payload

TOKEN = "webhook-token-0123456789"


async def start(aiohttp_client: Any, settings: Settings) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


async def settle(client: TestClient) -> None:
    """Let the workers finish what the inbox holds."""
    await client.app[keys.INBOX].drain()
    await client.app[keys.RUNNER].run_due()


def big_group(count: int) -> dict[str, Any]:
    body = payload("captured-firing")
    template = body["alerts"][0]
    body["alerts"] = []
    for i in range(count):
        alert = copy.deepcopy(template)
        alert["labels"]["instance"] = f"pod-{i:05d}"
        alert["fingerprint"] = f"{i:016x}"
        body["alerts"].append(alert)
    return body


async def test_shared_fixture_payload_makes_an_incident(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    body = (FIXTURES / "alertmanager" / "firing-1-alert.json").read_bytes()
    resp = await client.post("/alertmanager", data=body, headers=JSON)
    assert resp.status == 200
    assert (await resp.json())["status"] == "accepted"
    await settle(client)
    resp = await client.get("/api/v1/incidents", headers=API)
    incidents = (await resp.json())["incidents"]
    assert [(i["title"], i["severity"], i["status"]) for i in incidents] == [
        ("HighErrorRate (service=checkout)", "P1", "triggered")
    ]


async def test_every_webhook_twice_gives_one_incident_and_one_set_of_events(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    for name in ("captured-firing", "captured-firing", "captured-resolved", "captured-resolved"):
        assert (await client.post("/alertmanager", json=payload(name))).status == 200
        await settle(client)
    incidents = (await (await client.get("/api/v1/incidents", headers=API)).json())["incidents"]
    assert len(incidents) == 1
    incident = await (
        await client.get(f"/api/v1/incidents/{incidents[0]['id']}", headers=API)
    ).json()
    assert incident["status"] == "resolved"
    kinds = [
        e["kind"] for e in incident["timeline"] if e["kind"].startswith(("incident.", "alert."))
    ]
    assert kinds == ["incident.opened"] + ["alert.resolved"] * 3 + ["incident.resolved"]
    assert {a["status"] for a in incident["alerts"]} == {"resolved"}
    metrics = await (await client.get("/metrics")).text()
    assert "alertpilot_duplicate_deliveries_total 2.0" in metrics


async def test_every_accepted_webhook_and_alert_is_counted_once_by_every_collection(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """The webhook keeps its counts as plain integers, moved into the counters when the
    registry is collected: a scrape between two webhooks sees the first, and collections
    from another thread all along neither lose nor double one."""
    client = await start(aiohttp_client, make_settings(tmp_path))
    registry = client.app[keys.METRICS].registry
    firing, resolved = payload("captured-firing"), payload("captured-resolved")
    assert {a["status"] for a in firing["alerts"]} == {"firing"}
    assert {a["status"] for a in resolved["alerts"]} == {"resolved"}

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert (await client.post("/alertmanager", json=firing)).status == 200
    text = await (await client.get("/metrics")).text()
    assert 'alertpilot_webhooks_total{endpoint="alertmanager",result="accepted"} 1.0' in text
    assert f'alertpilot_alerts_ingested_total{{status="firing"}} {len(firing["alerts"])}.0' in text

    stop = threading.Event()

    def collect_all_along() -> None:
        while not stop.is_set():
            list(registry.collect())  # a scrape from a thread of its own

    other = threading.Thread(target=collect_all_along)
    other.start()
    try:
        for i in range(60):
            body = firing if i % 3 else resolved
            assert (await client.post("/alertmanager", json=body)).status == 200
            await asyncio.sleep(0)
    finally:
        stop.set()
        other.join()
    assert sample("alertpilot_webhooks_total", endpoint="alertmanager", result="accepted") == 61
    assert sample("alertpilot_alerts_ingested_total", status="firing") == 41 * len(firing["alerts"])
    assert sample("alertpilot_alerts_ingested_total", status="resolved") == 20 * len(
        resolved["alerts"]
    )


async def test_group_firing_again_opens_a_linked_incident(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    for name in ("captured-firing", "captured-resolved"):
        await client.post("/alertmanager", json=payload(name))
        await settle(client)
    again = payload("captured-firing")
    for alert in again["alerts"]:
        alert["startsAt"] = "2030-01-01T00:00:00Z"
    await client.post("/alertmanager", json=again)
    await settle(client)
    incidents = (await (await client.get("/api/v1/incidents", headers=API)).json())["incidents"]
    newest, oldest = incidents
    assert newest["status"] == "triggered" and oldest["status"] == "resolved"
    assert newest["previousId"] == oldest["id"]
    old = await (await client.get(f"/api/v1/incidents/{oldest['id']}", headers=API)).json()
    assert old["timeline"][-1]["kind"] == "incident.reopened"
    assert old["timeline"][-1]["data"]["new_incident_id"] == newest["id"]


async def test_partial_resolution_keeps_incident_open(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    await client.post("/alertmanager", json=payload("captured-firing"))
    partial = payload("captured-firing")
    resolved = payload("captured-resolved")
    partial["alerts"][0] = resolved["alerts"][0]
    await client.post("/alertmanager", json=partial)
    await settle(client)
    incident = await (await client.get("/api/v1/incidents/1", headers=API)).json()
    assert incident["status"] == "triggered"
    assert sorted(a["status"] for a in incident["alerts"]) == ["firing", "firing", "resolved"]


async def test_ack_comes_from_the_store_not_from_processing(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """The 200 means committed: the row is in the inbox before any worker ran."""
    client = await start(aiohttp_client, make_settings(tmp_path))
    await client.app[keys.INBOX].stop()  # no processing at all
    resp = await client.post("/alertmanager", json=payload("captured-firing"))
    assert resp.status == 200
    pending = await client.app[keys.STORE].pending_payloads(10)
    assert [item.id for item in pending] == [(await resp.json())["inbox_id"]]
    assert (await (await client.get("/readyz")).json())["checks"]["inbox_worker"] == "stopped"


def _auth(value: str) -> dict[str, str]:
    return {"Authorization": value}


BASIC_OK = "Basic " + base64.b64encode(b"am:s3cret-pass").decode()
BASIC_BAD = "Basic " + base64.b64encode(b"am:nope").decode()
VALID = json.dumps(payload("captured-firing")).encode()


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (b"this is not json", {}, 400, "invalid_json"),
        (b"", {}, 400, "invalid_payload"),
        (b"[1, 2, 3]", {}, 400, "invalid_payload"),
        (b'{"version": "4"}', {}, 400, "invalid_payload"),
        (VALID.replace(b'"version": "4"', b'"version": "3"'), {}, 400, "invalid_payload"),
        (VALID[:-7], {}, 400, "invalid_json"),
        (json.dumps({**payload("captured-firing"), "alerts": []}).encode(), {}, 400,
         "invalid_payload"),
        (json.dumps({**payload("captured-firing"), "status": "weird"}).encode(), {}, 400,
         "invalid_payload"),
        (b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}", {}, 400, "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, {}, 400, "invalid_payload"),  # JSON, but not an object
        (b"\xff\xfe garbage", {}, 400, "invalid_json"),
        (VALID, {"Authorization": ""}, 401, "unauthorized"),
        (VALID, _auth("Bearer wrong-token"), 401, "unauthorized"),
        (VALID, _auth(BASIC_BAD), 401, "unauthorized"),
        (VALID, _auth("Basic !!!notbase64"), 401, "unauthorized"),
        (VALID, _auth(f"Bearer {TOKEN}"), 200, None),
        (VALID, _auth(BASIC_OK), 200, None),
    ],
    ids=[
        "not-json", "empty", "json-array", "wrong-shape", "wrong-version", "broken-json",
        "no-alerts", "bad-status", "deep-nesting", "deep-array", "binary", "missing-auth",
        "wrong-token", "wrong-basic", "malformed-basic", "right-token", "right-basic",
    ],
)  # fmt: skip
async def test_inputs(
    aiohttp_client: Any,
    tmp_path: Path,
    body: bytes,
    headers: dict[str, str],
    status: int,
    error: str | None,
) -> None:
    basic = {"username": "am", "password": "s3cret-pass"}
    settings = make_settings(tmp_path, server={"webhook_token": TOKEN, "webhook_basic_auth": basic})
    client = await start(aiohttp_client, settings)
    default = {"Authorization": f"Bearer {TOKEN}"}
    resp = await client.post("/alertmanager", data=body, headers={**JSON, **default, **headers})
    assert resp.status == status
    answer = await resp.json()
    if error is not None:
        assert answer["error"] == error
        assert answer["message"]
        assert TOKEN not in json.dumps(answer)
        assert await client.app[keys.STORE].pending_payloads(10) == []
    else:
        assert answer["status"] == "accepted"


async def test_bad_payload_message_names_the_field(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    body = payload("captured-firing")
    del body["alerts"][1]["startsAt"]
    answer = await (await client.post("/alertmanager", json=body)).json()
    assert "missing required field `startsAt` - at `$.alerts[1]`" in answer["message"]


async def test_5000_alert_group_is_accepted(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    body = json.dumps(big_group(5000)).encode()
    assert len(body) > 1024 * 1024  # bigger than aiohttp's default limit
    resp = await client.post("/alertmanager", data=io.BytesIO(body), headers=JSON)
    assert resp.status == 200
    await settle(client)
    incident = await (await client.get("/api/v1/incidents/1", headers=API)).json()
    assert len(incident["alerts"]) == 5000


async def test_oversized_body_is_413(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server={"max_body_bytes": 16 * 1024 * 1024})
    client = await start(aiohttp_client, settings)
    resp = await client.post(
        "/alertmanager", data=io.BytesIO(b"x" * (16 * 1024 * 1024 + 1)), headers=JSON
    )
    assert resp.status == 413
    assert (await resp.json())["error"] == "payload_too_large"


async def test_unicode_and_very_long_label_values(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    body = payload("captured-firing")
    odd = "😀 ünïcødé \u202e\u0000 <!channel> " + "x" * 100_000
    body["alerts"][0]["labels"]["note"] = odd
    body["alerts"][0]["annotations"]["summary"] = "ﷺ" * 5000
    assert (await client.post("/alertmanager", json=body)).status == 200
    await settle(client)
    incident = await (await client.get("/api/v1/incidents/1", headers=API)).json()
    assert incident["alerts"][0]["labels"]["note"] == odd


async def test_store_that_cannot_commit_answers_503(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await start(aiohttp_client, make_settings(tmp_path))
    await client.app[keys.STORE].close()
    resp = await client.post("/alertmanager", json=payload("captured-firing"))
    assert resp.status == 503
    assert (await resp.json())["error"] == "store_unavailable"
    ready = await client.get("/readyz")
    assert ready.status == 503
    answer = await ready.json()
    assert "failing" in answer["checks"]["store"]
    assert answer["store"] == {"backend": "sqlite", "writable": False}


async def test_api_token_protects_incident_api(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server={"api_token": "api-token-xyz"})
    client = await start(aiohttp_client, settings)
    await client.post("/alertmanager", json=payload("captured-firing"))
    await settle(client)
    assert (await client.get("/api/v1/incidents")).status == 401
    assert (await client.get("/api/v1/incidents/1", headers=API)).status == 401  # another token
    ok = await client.get("/api/v1/incidents/1", headers=_auth("Bearer api-token-xyz"))
    assert ok.status == 200
    assert (await ok.json())["status"] == Status.TRIGGERED.value
    missing = await client.get("/api/v1/incidents/999", headers=_auth("Bearer api-token-xyz"))
    assert missing.status == 404
    bad = await client.get("/api/v1/incidents/abc", headers=_auth("Bearer api-token-xyz"))
    assert bad.status == 400
    # health and metrics stay open
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/metrics")).status == 200
