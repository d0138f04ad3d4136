"""Integration tests for tests/stack.py against the real Debian binaries.

They also capture real Alertmanager webhook payloads into tests/fixtures/alertmanager/.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
import yaml
from aiohttp import web

# tests/ is not a package, so pytest (rootdir/prepend import mode) puts tests/ on sys.path.
from stack import Alertmanager, LoopbackApp, MetricsExporter, Prometheus

FIXTURES = Path(__file__).parent / "fixtures" / "alertmanager"
Payload = dict[str, Any]


@dataclass
class Received:
    headers: dict[str, str]
    payload: Payload


class WebhookRecorder(LoopbackApp):
    """Records every JSON POST, standing in for the bot's webhook endpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.app.router.add_post("/webhook", self._handle)

    @property
    def url(self) -> str:
        return f"http://{self.target}/webhook"

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(dict(request.headers), await request.json()))
        return web.Response(text="ok")

    async def wait_for(
        self,
        predicate: Callable[[Payload], bool],
        timeout: float = 15.0,
    ) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.received:
                if predicate(item.payload):
                    return item
            await asyncio.sleep(0.05)
        payloads = [r.payload for r in self.received]
        raise TimeoutError(f"no matching webhook within {timeout}s; got {payloads!r:.3000}")


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookRecorder]:
    async with WebhookRecorder() as recorder:
        yield recorder


def checkout_alerts() -> list[dict[str, Any]]:
    """One realistic alert group: HighErrorRate on three checkout pods."""
    now = datetime.now(UTC)
    expr = (
        'sum by (instance) (rate(http_requests_total{service="checkout",code=~"5.."}[5m])) > 0.05'
    )
    generator_url = f"http://prometheus.example.com:9090/graph?g0.expr={quote_plus(expr)}&g0.tab=1"
    return [
        {
            "labels": {
                "alertname": "HighErrorRate",
                "service": "checkout",
                "severity": "critical",
                "namespace": "shop",
                "job": "checkout",
                "instance": pod,
            },
            "annotations": {
                "summary": f"High 5xx error rate on checkout ({pod})",
                "description": f"{pod} answers {rate}% of requests with 5xx over the last 5m.",
                "runbook_url": "https://runbooks.example.com/checkout/high-error-rate",
            },
            "startsAt": now - timedelta(minutes=minutes_ago),
            "generatorURL": generator_url,
        }
        for pod, rate, minutes_ago in (("pod-a", 12.5, 7), ("pod-b", 9.1, 6), ("pod-c", 7.4, 4))
    ]


def save_fixture(name: str, payload: Payload) -> None:
    """Write a captured payload once; later runs keep the committed file stable."""
    path = FIXTURES / name
    if not path.exists():
        FIXTURES.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")


def alert_names(payload: Payload) -> set[str]:
    return {alert["labels"]["alertname"] for alert in payload["alerts"]}


@pytest.mark.integration
async def test_alertmanager_delivers_firing_and_resolved_webhooks(
    tmp_path: Path, webhook: WebhookRecorder
) -> None:
    alerts = checkout_alerts()
    http_config = {"authorization": {"credentials": "s3cret"}}
    external_url = "http://alertmanager.example.com:9093"
    async with Alertmanager(
        tmp_path, webhook.url, group_wait="1s", http_config=http_config, external_url=external_url
    ) as am:
        await am.post_alerts(alerts)

        firing = await webhook.wait_for(lambda p: p["status"] == "firing" and len(p["alerts"]) == 3)
        payload = firing.payload
        assert firing.headers["Authorization"] == "Bearer s3cret"
        assert payload["version"] == "4"
        assert payload["receiver"] == "bot"
        assert payload["truncatedAlerts"] == 0
        assert payload["externalURL"] == external_url
        assert payload["groupLabels"] == {"alertname": "HighErrorRate", "service": "checkout"}
        assert payload["commonLabels"]["severity"] == "critical"
        assert payload["groupKey"] == '{}:{alertname="HighErrorRate", service="checkout"}'
        assert sorted(a["labels"]["instance"] for a in payload["alerts"]) == [
            "pod-a",
            "pod-b",
            "pod-c",
        ]
        for alert in payload["alerts"]:
            assert alert["status"] == "firing"
            assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"])
            assert alert["annotations"]["runbook_url"].startswith("https://")
        assert len(await am.alerts('alertname="HighErrorRate"')) == 3
        assert await am.silences() == []
        save_fixture("captured-firing.json", payload)

        await am.resolve_alerts(alerts)

        resolved = await webhook.wait_for(
            lambda p: p["status"] == "resolved" and len(p["alerts"]) == 3
        )
        payload = resolved.payload
        assert {a["status"] for a in payload["alerts"]} == {"resolved"}
        assert {a["fingerprint"] for a in payload["alerts"]} == {
            a["fingerprint"] for a in firing.payload["alerts"]
        }
        assert payload["groupKey"] == firing.payload["groupKey"]
        save_fixture("captured-resolved.json", payload)


@pytest.mark.integration
async def test_prometheus_rule_fires_through_alertmanager(
    tmp_path: Path, webhook: WebhookRecorder
) -> None:
    rules = tmp_path / "rules.yml"
    rule = {
        "alert": "TestHigh",
        "expr": "test_value > 5",
        "for": "0s",
        "labels": {"severity": "warning", "service": "app"},
        "annotations": {"summary": "test_value is {{ $value }}"},
    }
    rules.write_text(yaml.safe_dump({"groups": [{"name": "test", "rules": [rule]}]}))

    async with MetricsExporter() as exporter:
        exporter.set("test_value", 10)
        exporter.inc("test_requests_total", 3, {"code": "500", "path": '/a"b\\c'})
        async with (
            Alertmanager(tmp_path, webhook.url) as am,
            Prometheus(
                tmp_path,
                scrape_targets=[exporter.target],
                rule_files=[rules],
                alertmanager_url=am.url,
            ) as prom,
        ):
            await prom.wait_for("test_value", lambda data: bool(data["result"]))
            assert await prom.value("test_value") == 10
            assert await prom.value('test_requests_total{code="500", path="/a\\"b\\\\c"}') == 3

            received = await webhook.wait_for(lambda p: "TestHigh" in alert_names(p), timeout=30)
            alert = received.payload["alerts"][0]
            assert received.payload["status"] == "firing"
            assert alert["labels"]["job"] == "app"
            assert alert["labels"]["instance"] == exporter.target
            assert alert["annotations"]["summary"] == "test_value is 10"
            assert alert["generatorURL"].startswith(prom.url)
