"""The Events API v2 trigger built from an incident, and the per-routing-key rate limiter."""

from __future__ import annotations

from typing import Any

import pytest

from bot.core.incidents import AlertRecord, Incident, Status
from bot.notify.links import LinkPolicy
from bot.pagerduty.events import RateLimiter
from bot.pagerduty.payload import (
    MAX_DEDUP_KEY,
    MAX_SUMMARY,
    dedup_key,
    follow_event,
    trigger_event,
)
from bot.playbook.model import Playbook
from bot.settings import Severity


def incident(**overrides: Any) -> Incident:
    labels = {"alertname": "DiskFull", "host": "db-7", "team": "storage", "severity": "x"}
    fields: dict[str, Any] = {
        "id": 12,
        "key": "alertpilot-0123456789abcdef0123-12",
        "group_hash": "0123456789abcdef0123",
        "receiver": "bot",
        "group_key": '{}:{alertname="DiskFull"}',
        "status": Status.TRIGGERED,
        "severity": Severity.P1,
        "title": "DiskFull (host=db-7)",
        "summary": "Disk /var is 97% full",
        "group_labels": {"alertname": "DiskFull"},
        "common_labels": labels,
        "common_annotations": {"runbook": "https://wiki.example/disk"},
        "external_url": "not-a-url",
        "opened_at": 1_800_000_000.0,
        "updated_at": 1_800_000_000.0,
        "alerts": (
            AlertRecord("fp1", "firing", labels, {}, "", "", "https://prom.example/graph?g0=1"),
            AlertRecord("fp2", "resolved", labels, {}, "", "", "javascript:alert(1)"),
        ),
    }
    return Incident(**(fields | overrides))


@pytest.mark.parametrize(
    ("severity", "expected"),
    [(Severity.P0, "critical"), (Severity.P1, "error"), (Severity.P2, "warning"),
     (Severity.P3, "info")],
)  # fmt: skip
def test_severity_mapping(severity: Severity, expected: str) -> None:
    event = trigger_event(incident(severity=severity), playbooks=[], reason="test")
    assert event["payload"]["severity"] == expected
    assert event["payload"]["summary"].startswith(f"[{severity.value}] ")


def test_fields_from_labels_and_fallbacks() -> None:
    event = trigger_event(incident(), playbooks=[], reason="because")
    payload = event["payload"]
    assert payload["source"] == "db-7"  # no instance/pod label: host
    assert payload["group"] == "storage"
    assert payload["class"] == "DiskFull"
    assert "component" not in payload  # no service/component/app/job label
    assert payload["timestamp"] == "2027-01-15T08:00:00Z"
    assert payload["custom_details"]["firing"] == ["DiskFull {host=db-7, severity=x, team=storage}"]
    assert event["client"] == "alertpilot"
    assert follow_event(incident(), "resolve") == {
        "event_action": "resolve",
        "dedup_key": "alertpilot-0123456789abcdef0123-12",
    }


def test_summary_and_dedup_key_stay_within_limits() -> None:
    long = incident(summary="x " * 3000, key="k" * 400)
    event = trigger_event(long, playbooks=[], reason="r")
    assert len(event["payload"]["summary"]) <= MAX_SUMMARY
    assert event["payload"]["summary"].endswith("…")
    key = dedup_key(long)
    assert len(key) <= MAX_DEDUP_KEY and key == event["dedup_key"]
    assert dedup_key(incident(key="k" * 401)) != key  # still unique
    assert dedup_key(incident()) == incident().key  # short keys go as they are


def test_links_details_and_excerpts() -> None:
    data = {
        "slack": {"permalink": "https://acme.slack.com/archives/C1/p1"},
        "diagnostics": [
            {"name": "a", "status": "success", "passed": True, "text": "fine"},
            "not a result",
            {"name": "b", "label": "Prometheus", "status": "error", "text": "unavailable"},
            {"name": "c", "label": "Free space", "status": "success", "passed": False,
             "value": 0.03},
        ],
        "narrative": {"text": "word " * 500, "source": "template"},
    }  # fmt: skip
    playbook = Playbook.model_validate(
        {
            "name": "disk",
            "match": ['alertname="DiskFull"'],
            "links": [
                {"title": "Dashboard", "url": "https://grafana.example/d/disk"},
                {"title": "Again", "url": "https://wiki.example/disk"},
                {"title": "Shell", "url": "ssh://db-7"},
            ],
        }
    )
    allowed = LinkPolicy(("https://prom.example", "https://wiki.example/disk"))
    event = trigger_event(incident(data=data), playbooks=[playbook], reason="r", links=allowed)
    assert event["links"] == [
        {"href": "https://acme.slack.com/archives/C1/p1", "text": "Slack thread"},
        {"href": "https://prom.example/graph?g0=1", "text": "Prometheus graph"},
        {"href": "https://wiki.example/disk", "text": "Runbook"},
        {"href": "https://grafana.example/d/disk", "text": "Dashboard"},
    ]
    details = event["payload"]["custom_details"]
    assert details["diagnostics"] == [
        "checks: 1 failed (c), 1 passed, 1 not checked (error: b)",
        "FAIL Free space: 0.03",
        "NOT CHECKED Prometheus: not checked (error: unavailable)",
        "ok a: fine",
    ]
    assert len(details["narrative"]) <= 1000 and details["narrative"].endswith("…")


def test_rate_limiter_reserves_slots_in_order() -> None:
    limiter = RateLimiter(2, window=60.0)
    assert limiter.acquire("rk", "a", 0.0) == 0.0
    assert limiter.acquire("rk", "b", 0.0) == 0.0
    assert limiter.acquire("rk", "c", 0.0) == 60.0
    assert limiter.acquire("rk", "d", 1.0) == 59.0
    assert limiter.acquire("rk", "e", 1.0) == 119.0
    assert limiter.acquire("other", "a", 1.0) == 0.0  # per routing key
    assert limiter.acquire("rk", "c", 30.0) == 30.0  # early: still waiting for its slot
    assert limiter.acquire("rk", "c", 60.0) == 0.0
    assert limiter.acquire("rk", "d", 60.0) == 0.0
    assert limiter.acquire("rk", "f", 60.0) == 60.0  # e holds 120, c and d fill 60
    assert limiter.acquire("rk", "e", 120.0) == 0.0


def test_narrative_keeps_its_lines() -> None:
    data = {"narrative": {"text": "What happened:\n5xx at 12%.\n\nNext: roll back."}}
    event = trigger_event(incident(data=data), playbooks=[], reason="r")
    assert event["payload"]["custom_details"]["narrative"] == data["narrative"]["text"]


def test_links_that_came_with_the_alert_go_only_to_allowed_hosts() -> None:
    """The generator URL, runbook and external URL are the sender's words: on a host not
    configured they are left out, and the page says so; the playbook's own links stay."""
    evil = incident(
        common_annotations={"runbook_url": "https://evil.example/runbook"},
        external_url="https://evil.example:9093",
        alerts=(
            AlertRecord(
                "fp1", "firing", {"alertname": "DiskFull"}, {}, "", "",
                "http://evil.example/graph?g0.expr=label_replace(prometheus_build_info%2C"
                "%22x%22%2C%22%241%22%2C%22version%22%2C%22(.*)%22)",
            ),
        ),
    )  # fmt: skip
    playbook = Playbook.model_validate(
        {
            "name": "disk",
            "match": ['alertname="DiskFull"'],
            "links": [{"title": "Dashboard", "url": "https://grafana.example/d/disk"}],
        }
    )
    allowed = LinkPolicy(("https://prom.example", "https://wiki.example"))
    for other_host in (
        "https://prom.example.evil.example/graph",  # starts like an allowed name
        "https://prom.example@evil.example/graph",  # the allowed name as a user name
        "https://evil.example\\@prom.example/graph",  # browsers end the host at the backslash
        "http://prom.example/graph",  # another scheme, another port
    ):
        assert not allowed.allows(other_host), other_host
    assert allowed.allows("https://PROM.example:443/graph?g0.expr=up")
    event = trigger_event(evil, playbooks=[playbook], reason="r", links=allowed)
    assert event["links"] == [{"href": "https://grafana.example/d/disk", "text": "Dashboard"}]
    assert "evil.example" not in str(event)
    assert event["payload"]["custom_details"]["hidden_links"] == [
        "Prometheus graph (link to untrusted host hidden)",
        "Runbook (link to untrusted host hidden)",
        "Alertmanager (link to untrusted host hidden)",
    ]
    # without a policy, nothing the alert brought is linked
    default = trigger_event(incident(), playbooks=[], reason="r")
    assert default.get("links", []) == []
    assert default["payload"]["custom_details"]["hidden_links"] == [
        "Prometheus graph (link to untrusted host hidden)",
        "Runbook (link to untrusted host hidden)",
    ]
