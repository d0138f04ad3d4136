"""An alert picks neither the PromQL alertpilot runs nor where its links go, end to end.

Debian's Prometheus evaluates a rule file; alertpilot reaches it only through a loopback
proxy that records every request, so the tests assert on what Prometheus was asked.
Slack and PagerDuty are the loopback fakes: the tests read the ``chat.postMessage``,
``chat.update`` and files upload calls and the Events API bodies as they arrived.

- The attack as tried: an alert with no playbook, its generatorURL on another host with
  ``g0.expr=label_replace(prometheus_build_info, ...)``, its runbook and external URL on
  that host too; and the same expression on the real Prometheus's host, under the name
  of a real rule. Prometheus is asked for its rules and nothing else, no graph is
  uploaded, the thread says why, and neither Slack nor PagerDuty gets a link (or even
  the name) of the other host: they say a link was hidden.
- The allowed case: the rule fires in that Prometheus, the alert comes through a real
  Alertmanager, and its expression (the rule's) is graphed and uploaded to the thread.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from bot import keys
from bot.app import create_app
from bot.core.incidents import Incident
from bot.slack.png import THRESHOLD
from bot.store.base import Store
from fakes import FakePagerDuty, FakeSlack
from narrative_support import eventually
from pagerduty_kit import pd_section
from slackkit import CHANNEL, message_text, slack_settings
from stack import Alertmanager, LoopbackApp, MetricsExporter, Prometheus, free_port

pytestmark = pytest.mark.integration

RULE = "CheckoutErrors"
RULE_EXPR = "checkout_error_ratio > 0.05"  # as Prometheus prints it, in rules and g0.expr
RUNBOOK = "https://runbooks.example.com/checkout-errors"
LEAK = 'label_replace(prometheus_build_info, "leak", "$1", "version", "(.*)")'
EVIL = "evil.example"
HIDDEN = "_(link to untrusted host hidden)_"


class RecordingProxy(LoopbackApp):
    """Hands every request to ``upstream`` (the real Prometheus) and records what it was
    asked: method, path and parameters (query string and form body), in order."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.asked: list[tuple[str, str, dict[str, str]]] = []
        self.app.router.add_route("*", "/{tail:.*}", self._forward)

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        params = dict(request.query)
        if request.content_type == "application/x-www-form-urlencoded":
            params |= dict(parse_qsl(body.decode(), keep_blank_values=True))
        self.asked.append((request.method, request.path, params))
        headers = {"Content-Type": request.content_type} if body else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, f"{self.upstream}{request.path_qs}", data=body, headers=headers
            ) as resp,
        ):
            return web.Response(
                body=await resp.read(), status=resp.status, content_type=resp.content_type
            )


def rule_file(tmp_path: Path) -> Path:
    path = tmp_path / "checkout.rules.yml"
    rule = {
        "alert": RULE,
        "expr": RULE_EXPR,
        "labels": {"severity": "critical"},
        "annotations": {"summary": "Checkout error ratio above 5%", "runbook_url": RUNBOOK},
    }
    path.write_text(yaml.safe_dump({"groups": [{"name": "checkout", "rules": [rule]}]}))
    return path


def sent_to_slack(fake: FakeSlack) -> list[str]:
    """Every message and update as the fake Web API received it, as text."""
    calls = fake.calls("chat.postMessage") + fake.calls("chat.update")
    return [
        message_text({"text": c.params.get("text"), "blocks": c.params.get("blocks", [])})
        for c in calls
    ]


async def graph_done(store: Store, incident_id: int) -> bool:
    """The graph job finished for the incident (a graph or a note posted)."""
    return await store.kv_get(f"slack:graph:{incident_id}", 0.0) is not None


def group(alertname: str, generator_url: str, *, key: str) -> dict[str, Any]:
    annotations = {"summary": f"{alertname} ({key})", "runbook_url": f"http://{EVIL}/runbook"}
    labels = {"alertname": alertname, "severity": "critical", "case": key}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{case="{key}"}}',
        "status": "firing",
        "receiver": "alertpilot",
        "groupLabels": {"case": key},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": f"http://{EVIL}:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": "2026-05-01T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": generator_url,
                "dashboardURL": f"http://{EVIL}/d/x",  # Grafana's, on a v4 body too
            }
        ],
    }


async def test_an_alert_cannot_pick_the_graphed_query_or_its_link_hosts(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    graph_path = f"/graph?g0.expr={quote_plus(LEAK)}&g0.tab=1"
    async with (
        Prometheus(tmp_path, rule_files=[rule_file(tmp_path)]) as prom,
        RecordingProxy(prom.url) as proxy,
    ):
        settings = slack_settings(
            tmp_path,
            fake_slack,
            sections={
                "prometheus": {"url": proxy.url, "external_url": prom.url, "timeout": 5},
                "links": {"allowed_urls": ["https://runbooks.example.com"]},
                "pagerduty": pd_section(fake_pagerduty),
                "incidents": {"severity_map": {"critical": "P0"}},  # paged at once
            },
        )
        client: TestClient = await aiohttp_client(create_app(settings))
        store = client.app[keys.STORE]
        attacks = {
            "elsewhere": group("BuildInfo", f"http://{EVIL}{graph_path}", key="elsewhere"),
            # the real Prometheus's host and a real rule's name, not that rule's expression
            "renamed": group(RULE, f"{prom.url}{graph_path}", key="renamed"),
        }
        for body in attacks.values():
            resp = await client.post("/alertmanager", json=body)
            assert resp.status == 200, await resp.text()

        async def finished() -> dict[str, Incident] | None:
            found = {}
            for brief in await store.list_incidents():
                incident = await store.get_incident(brief.id, timeline=False)
                if not await graph_done(store, incident.id):
                    return None
                found[incident.common_labels["case"]] = incident
            pages = len(fake_pagerduty.events)
            return found if len(found) == len(attacks) and pages == len(attacks) else None

        incidents = await eventually(finished, timeout=30, what="graph notes and pages")

    # Prometheus was asked for its alerting rules (the renamed alert's check), only that
    assert [(method, path) for method, path, _ in proxy.asked] == [("GET", "/api/v1/rules")]
    for _, _, params in proxy.asked:
        assert not any("build_info" in v or "label_replace" in v for v in params.values())

    # no graph uploaded; each thread says why there is none
    assert fake_slack.calls("files.getUploadURLExternal") == []
    assert fake_slack.calls("files.completeUploadExternal") == []
    why = {
        "elsewhere": "the alert's generator URL is not on the configured Prometheus",
        "renamed": f'not the expression of an alerting rule named "{RULE}"',
    }
    for case, incident in incidents.items():
        ts = incident.data["slack"]["ts"]
        notes = [str(m.get("text")) for m in fake_slack.thread(CHANNEL, ts)[1:]]
        assert any("Graph not drawn" in n and why[case] in n for n in notes), notes

    # Slack: the other host is in no call at all; the message says what it hid
    for request in fake_slack.requests:
        assert EVIL.encode() not in request.raw, request.params
    shown = "\n".join(sent_to_slack(fake_slack))
    for title in ("Runbook", "Alertmanager", "Grafana dashboard", "Grafana rule"):
        assert f"{title} {HIDDEN}" in shown, title
    # the renamed alert's generator URL is on the configured Prometheus: a link is fine
    assert f"<{prom.url}/graph?g0.expr=" in shown

    # PagerDuty: no link to the other host, and the page says which were hidden
    for event in fake_pagerduty.events:
        assert EVIL not in json.dumps(event), event
        details = event["payload"]["custom_details"]
        assert "Runbook (link to untrusted host hidden)" in details["hidden_links"]
        assert "Alertmanager (link to untrusted host hidden)" in details["hidden_links"]


def _png_pixels(png: bytes) -> bytes:
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG" and image.width == 800
    return image.convert("RGB").tobytes()


async def test_the_expression_of_a_real_rule_is_graphed(
    aiohttp_server: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """The rule fires in Prometheus, the alert reaches alertpilot through Alertmanager:
    its generator URL is Prometheus's own, its expression the rule's, and it is drawn."""
    port = free_port()  # alertpilot's, so Alertmanager can be told where to deliver
    exporter = MetricsExporter()
    exporter.set("checkout_error_ratio", 0.12, {"service": "checkout"})
    async with (
        exporter,
        Alertmanager(tmp_path, f"http://127.0.0.1:{port}/alertmanager") as am,
        Prometheus(
            tmp_path,
            scrape_targets=[exporter.target],
            rule_files=[rule_file(tmp_path)],
            alertmanager_url=am.url,
        ) as prom,
        RecordingProxy(prom.url) as proxy,
    ):
        settings = slack_settings(
            tmp_path,
            fake_slack,
            sections={
                # alertpilot asks through the proxy; people (and generator URLs) use prom.url
                "prometheus": {"url": proxy.url, "external_url": prom.url, "timeout": 5},
                "alertmanager": {"url": am.url, "timeout": 5},
                "links": {"allowed_urls": ["https://runbooks.example.com"]},
            },
        )
        server: TestServer = await aiohttp_server(create_app(settings), port=port)
        store = server.app[keys.STORE]

        async def graphed() -> Incident | None:
            for brief in await store.list_incidents():
                if brief.group_labels.get("alertname") == RULE and await graph_done(
                    store, brief.id
                ):
                    return await store.get_incident(brief.id, timeline=False)
            return None

        incident = await eventually(graphed, timeout=40, what="the rule's alert, graphed")

    [alert] = incident.alerts
    assert alert.generator_url == f"{prom.url}/graph?g0.expr={quote_plus(RULE_EXPR)}&g0.tab=1"
    # Prometheus was asked for its rules, then for the rule's left side over the last hour
    asked = [(method, path) for method, path, _ in proxy.asked]
    assert asked == [("GET", "/api/v1/rules"), ("POST", "/api/v1/query_range")], asked
    rules_params, range_params = proxy.asked[0][2], proxy.asked[1][2]
    assert rules_params == {"type": "alert"}
    assert range_params["query"] == "checkout_error_ratio"
    assert float(range_params["end"]) - float(range_params["start"]) == 3600

    # the graph went to the incident's thread, its threshold the rule's
    ts = incident.data["slack"]["ts"]
    [complete] = fake_slack.calls("files.completeUploadExternal")
    assert complete.params["channel_id"] == CHANNEL and complete.params["thread_ts"] == ts
    comment = complete.params["initial_comment"]
    assert "`checkout_error_ratio`" in comment and "threshold 0.05 (dashed red)" in comment
    [uploaded] = fake_slack.files.values()
    assert uploaded.completed and uploaded.data is not None
    assert bytes(THRESHOLD) in _png_pixels(uploaded.data)

    # and its links: Prometheus's graph and the runbook, nothing hidden
    message: Mapping[str, Any] = fake_slack.messages[(CHANNEL, ts)]
    shown = message_text(dict(message))
    assert f"<{alert.generator_url.replace('&', '&amp;')}|Prometheus graph>" in shown
    assert f"<{RUNBOOK}|Runbook>" in shown and "hidden" not in shown
