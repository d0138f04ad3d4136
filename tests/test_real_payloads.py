"""Payloads from other senders and older versions, replayed as they come (see
tests/fixtures/README.md for where each comes from): Grafana alerting's webhook,
Alertmanager before 0.19 (no fingerprints), and Alertmanager's ``max_alerts``
truncation, which must not resolve an incident early."""

from __future__ import annotations

import copy
import gc
import json
import pickle
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.alerts import ZERO_TIME, label_fingerprint, parse_group
from bot.core.incidents import EventKind, Incident, Status
from bot.errors import PayloadError
from bot.notify.links import NO_LINKS, LinkPolicy
from bot.slack.render import Extras, incident_message
from conftest import API, FIXTURES, make_settings, payload


async def start(aiohttp_client: Any, tmp_path: Path) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(make_settings(tmp_path)))
    await client.app[keys.RUNNER].stop()  # the test runs due jobs itself
    return client


async def post(client: TestClient, body: bytes | dict[str, Any]) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await client.post(
        "/alertmanager", data=data, headers={"Content-Type": "application/json"}
    )
    answer: dict[str, Any] = await resp.json()
    assert resp.status == 200, answer
    await client.app[keys.INBOX].drain()
    await client.app[keys.RUNNER].run_due()
    return answer


async def only_incident(client: TestClient) -> Incident:
    store = client.app[keys.STORE]
    [brief] = await store.list_incidents(limit=5)
    return await store.get_incident(brief.id)


def shown(incident: Incident, links: LinkPolicy = NO_LINKS) -> str:
    return "\n".join(
        str(block.get("text", {}).get("text", "")) + str(block.get("elements", ""))
        for block in incident_message(incident, Extras(links=links)).blocks
    )


async def test_grafana_alerting_webhook_opens_an_incident_with_its_links(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    body = (FIXTURES / "grafana" / "webhook-firing.json").read_bytes()
    answer = await post(client, body)
    assert (answer["status"], answer["alerts"], answer["duplicate"]) == ("accepted", 2, False)

    incident = await only_incident(client)
    assert (incident.title, incident.severity.value) == ("HighErrorRate", "P1")
    first = next(a for a in incident.alerts if a.fingerprint == "4c7e9a0d2b6f1e83")
    assert set(first.links) == {
        "Grafana dashboard",
        "Grafana panel",
        "Silence in Grafana",
        "Grafana image",
    }
    second = next(a for a in incident.alerts if a.fingerprint == "a1f0c3e55d7b2c49")
    assert set(second.links) == {"Silence in Grafana"}  # empty URLs are no links
    slack = shown(incident, LinkPolicy(("https://grafana.example",)))
    for title in ("Grafana dashboard", "Grafana panel", "Silence in Grafana", "Grafana rule"):
        assert f"|{title}>" in slack, title
    assert "https://grafana.example/d/assistant-errors?" in slack
    # Grafana's host not configured (links.allowed_urls): each link's title, said hidden
    slack = shown(incident)
    for title in ("Grafana dashboard", "Grafana panel", "Silence in Grafana", "Grafana rule"):
        assert f"{title} _(link to untrusted host hidden)_" in slack, title
    assert "grafana.example" not in slack

    # the same delivery again (Grafana retries) changes nothing
    assert (await post(client, body))["duplicate"] is True
    api = await (await client.get(f"/api/v1/incidents/{incident.id}", headers=API)).json()
    assert api["alerts"][0]["links"]["Grafana panel"].endswith("viewPanel=4")


async def test_alertmanager_before_0_19_gets_alertmanagers_own_fingerprints(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    captured = payload("captured-firing")
    old = (FIXTURES / "alertmanager" / "firing-0.18-no-fingerprint.json").read_bytes()
    group = parse_group(old)
    assert [a.fingerprint for a in group.alerts] == [a["fingerprint"] for a in captured["alerts"]]
    assert label_fingerprint({}) == "cbf29ce484222325"  # FNV-1a's offset: no labels

    client = await start(aiohttp_client, tmp_path)
    assert (await post(client, old))["duplicate"] is False
    # the same alerts from a newer Alertmanager (an HA pair mid-upgrade) are repeats
    assert (await post(client, captured))["duplicate"] is True
    incident = await only_incident(client)
    assert len(incident.alerts) == 3


async def test_nanosecond_timestamps_are_cut_to_the_microsecond_not_rounded(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """Alertmanager writes nanoseconds; alert states are keyed by their start to the
    microsecond, cut as stored by every earlier version. Rounded, a state stored before an
    upgrade would come back as a new one."""
    client = await start(aiohttp_client, tmp_path)
    nanos = payload("captured-firing")
    for alert in nanos["alerts"]:
        alert["startsAt"] = alert["startsAt"].replace("Z", "999Z")  # .389845 -> .389845999
    assert (await post(client, nanos))["duplicate"] is False
    assert (await post(client, payload("captured-firing")))["duplicate"] is True
    incident = await only_incident(client)
    assert len(incident.alerts) == 3


def test_timestamps_other_senders_write() -> None:
    def starts(value: Any) -> str:
        body = payload("captured-firing")
        body["alerts"][0]["startsAt"] = value
        return parse_group(json.dumps(body)).alerts[0].startsAt.isoformat()

    assert starts("2026-11-21T05:12:00.5-07:30") == "2026-11-21T05:12:00.500000-07:30"
    assert starts("2026-11-21t05:12:00z") == "2026-11-21T05:12:00+00:00"
    assert starts(1_763_701_920) == "2025-11-21T05:12:00+00:00"  # Unix seconds
    assert starts(1_763_701_920_000) == "2025-11-21T05:12:00+00:00"  # milliseconds
    assert starts("1763701920") == "2025-11-21T05:12:00+00:00"  # as a string
    for wrong in ("2026-W47-6T05:12:00Z", "20261121T051200Z", "yesterday", "", "nan", True, None):
        with pytest.raises(PayloadError) as refused:
            starts(wrong)
        assert refused.value.code == "invalid_payload"
        assert "startsAt" in str(refused.value) and "$.alerts[0]" in str(refused.value)


def test_end_times_firing_and_resolved() -> None:
    def ends(value: Any) -> datetime:
        body = payload("captured-firing")
        body["alerts"][0]["endsAt"] = value
        return parse_group(json.dumps(body)).alerts[0].endsAt

    # Alertmanager's firing alerts end at Go's zero time, written one way or another.
    assert all(
        a.endsAt is ZERO_TIME for a in parse_group(json.dumps(payload("captured-firing"))).alerts
    )
    assert ends("0001-01-01T00:00:00.000Z") == ZERO_TIME
    assert ends("0001-01-01T00:00:00+00:00") == ZERO_TIME
    assert ends("2026-11-21T06:00:00.123456789Z").isoformat() == "2026-11-21T06:00:00.123456+00:00"
    for wrong in ("never", "", 1e30):
        with pytest.raises(PayloadError) as refused:
            ends(wrong)
        assert "endsAt" in str(refused.value) and "$.alerts[0]" in str(refused.value)


def test_parsed_payloads_stay_out_of_the_garbage_collector() -> None:
    group = parse_group(json.dumps(payload("captured-firing")))
    assert not gc.is_tracked(group) and not any(gc.is_tracked(a) for a in group.alerts)
    assert not gc.is_tracked(group.alerts[0].labels)  # plain strings: untracked too


def test_an_alert_copied_or_rebuilt_keeps_its_values() -> None:
    group = parse_group(json.dumps(payload("captured-firing")))
    alert = group.alerts[0]
    resolved = msgspec.structs.replace(alert, status="resolved", endsAt=alert.startsAt)
    assert (resolved.startsAt, resolved.endsAt) == (alert.startsAt, alert.startsAt)
    assert resolved.state_key == (alert.fingerprint, "resolved", alert.state_key[2])
    assert copy.deepcopy(group) == group
    assert pickle.loads(pickle.dumps(group)) == group


def _six_alerts(status: str, *, sent: list[int], truncated: int) -> dict[str, Any]:
    """A group of six alerts of which Alertmanager sent ``sent`` (max_alerts)."""
    body = payload("captured-firing")
    template = body["alerts"][0]
    alerts = []
    for n in sent:
        alert = copy.deepcopy(template)
        alert["labels"]["instance"] = f"pod-{n}"
        alert["fingerprint"] = label_fingerprint(alert["labels"])
        alert["status"] = status
        if status == "resolved":
            alert["endsAt"] = "2026-11-21T06:00:00Z"
        alerts.append(alert)
    body["alerts"], body["status"], body["truncatedAlerts"] = alerts, status, truncated
    return body


async def test_a_truncated_group_does_not_resolve_until_a_complete_one_says_so(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)
    await post(client, _six_alerts("firing", sent=[0, 1, 2], truncated=3))
    # The three sent resolve while the three left out still fire: Alertmanager says
    # "resolved" for the group it sent.
    await post(client, _six_alerts("resolved", sent=[0, 1, 2], truncated=3))
    incident = await only_incident(client)
    assert incident.status is Status.TRIGGERED
    notes = [e.message for e in incident.timeline if e.kind == EventKind.NOTE]
    assert notes[-1] == (
        "Alertmanager left out 3 alert(s) of this group (max_alerts); the sent alerts"
        " resolved, but the incident stays open until a delivery that leaves none out says"
        " all are resolved"
    )
    assert "Alertmanager left out 3 alert(s) of this group (max_alerts)" in shown(incident)

    # All six resolved, none left out: now it resolves.
    await post(client, _six_alerts("resolved", sent=list(range(6)), truncated=0))
    incident = await only_incident(client)
    assert incident.status is Status.RESOLVED
    assert "truncated" not in incident.data
    assert [e.kind for e in incident.timeline].count(EventKind.RESOLVED) == 1


async def test_endpoints_of_a_feature_that_is_off_say_which_section_turns_it_on(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, tmp_path)  # no slack, no pagerduty section
    for method, path, section in [
        ("POST", "/slack/events", "slack"),
        ("POST", "/pagerduty", "pagerduty"),
        ("GET", "/api/v1/oncall", "pagerduty"),
    ]:
        resp = await client.request(method, path, data=b"{}")
        assert resp.status == 404, path
        answer = await resp.json()
        assert answer["error"] == "not_configured"
        assert f"'{section}' section" in answer["message"], answer
