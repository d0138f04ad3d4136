"""Escaping of alert-derived text, the graph (PNG, threshold, files upload v2), Socket Mode."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from PIL import Image

from bot import keys
from bot.core.incidents import AlertRecord, Incident, Status
from bot.core.matchers import Matcher, MatchOp, parse_matchers
from bot.notify.links import LinkPolicy
from bot.settings import Severity
from bot.slack import mrkdwn
from bot.slack.graph import split_threshold
from bot.slack.png import THRESHOLD, line_chart
from bot.slack.render import Extras, incident_message
from conftest import payload
from fakes import FakeSlack
from slackkit import CHANNEL, message_text, settle, slack_settings, start
from stack import LoopbackApp

HOSTILE = "<!channel> <!here> <@U123> <http://evil.example|click> & <!subteam^S1>"
CONTROL = re.compile(r"<(!channel|!here|!everyone|!subteam|@U|https?://)")
MENTION = re.compile(r"<(!channel|!here|!everyone|!subteam|@)")
LINK = re.compile(r"<([^<>|]*)\|([^<>]*)>")
OUR_LABELS = {
    "Prometheus graph",
    "Runbook",
    "Alertmanager",
    "Silence in Alertmanager",
    "silence",
    "PagerDuty incident",
}


def assert_safe(text: str) -> None:
    """No mention, and every link is one alertpilot made, with its own label."""
    assert not MENTION.search(text), text
    for target, label in LINK.findall(text):
        if target.startswith("!date^"):
            continue
        assert label in OUR_LABELS or label.startswith("incident #"), (target, label)
        assert target.startswith("http") and "evil.example|" not in target


def test_escape_neutralises_mentions_and_links() -> None:
    out = mrkdwn.escape(HOSTILE)
    assert not CONTROL.search(out)
    assert out.startswith("&lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt;")
    assert "&amp;" in out
    assert mrkdwn.link("javascript:alert(1)", "x") == "x"
    assert mrkdwn.link("https://ok.example/a|b>c", "t|x") == "<https://ok.example/a%7Cb%3Ec|t¦x>"


async def test_hostile_labels_and_annotations_reach_slack_escaped(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack, graphs=False))
    body = payload("captured-firing")
    body["groupLabels"]["service"] = HOSTILE
    body["commonLabels"]["service"] = HOSTILE
    body["commonAnnotations"]["runbook_url"] = "http://evil.example/|<!channel>"
    for alert in body["alerts"]:
        alert["labels"]["service"] = HOSTILE
        alert["labels"]["instance"] = "<@U999> pod"
        alert["annotations"]["summary"] = "<!here> click <http://evil.example|here>"
    await client.post("/alertmanager", json=body)
    await settle(client)
    actions = client.app[keys.ACTIONS]
    await actions.note(1, actor="<!channel>", source="api", text="see <http://evil.example|this>")
    await settle(client)
    sent = fake_slack.calls("chat.postMessage") + fake_slack.calls("chat.update")
    assert len(sent) >= 2
    for request in sent:
        blocks = request.params.get("blocks", [])
        assert_safe(message_text({"text": request.params.get("text"), "blocks": blocks}))
    ts = (await client.app[keys.STORE].get_incident(1)).data["slack"]["ts"]
    shown = message_text(fake_slack.messages[(CHANNEL, ts)])
    assert "&lt;!channel&gt;" in shown and "&lt;@U999&gt; pod" in shown


def _incident(**overrides: Any) -> Incident:
    fields: dict[str, Any] = {
        "id": 7,
        "key": "k7",
        "group_hash": "h7",
        "receiver": "bot",
        "group_key": '{}:{alertname="HighErrorRate"}',
        "status": Status.TRIGGERED,
        "severity": Severity.P1,
        "title": "HighErrorRate",
        "summary": "errors",
        "group_labels": {"alertname": "HighErrorRate", "service": 'check"out\\eu'},
        "common_labels": {"alertname": "HighErrorRate", "env": "prod"},
        "common_annotations": {},
        "external_url": "http://alertmanager.example:9093/",
        "opened_at": 0.0,
        "updated_at": 0.0,
    }
    return Incident(**(fields | overrides))


def _links_of(incident: Incident, extras: Extras) -> dict[str, str]:
    text = message_text({"blocks": incident_message(incident, extras).blocks})
    return {label: target for target, label in LINK.findall(text)}


def test_the_message_links_a_new_silence_prefilled_with_the_firing_alerts_labels() -> None:
    """The link prefills what the Silence button silences: the firing alert's whole label
    set, equality only, never the group labels (which reach other alerts)."""
    labels = {"alertname": "HighErrorRate", "service": 'check"out\\eu', "instance": "db.1|.*"}
    alert = AlertRecord("fp1", "firing", labels, {}, "", "", "")
    gone = AlertRecord("fp2", "resolved", {**labels, "instance": "db-2"}, {}, "", "", "")
    extras = Extras(
        alertmanager_url="http://am.internal:9093",
        links=LinkPolicy(("http://alertmanager.example:9093",)),
    )
    target = _links_of(_incident(alerts=(alert, gone)), extras)["Silence in Alertmanager"]
    base = "http://alertmanager.example:9093/#/silences/new?filter="
    assert target.startswith(base)
    shown = unquote(target.removeprefix(base))
    assert shown == '{alertname="HighErrorRate",instance="db.1|.*",service="check\\"out\\\\eu"}'
    assert parse_matchers(shown) == [
        Matcher("alertname", MatchOp.EQ, "HighErrorRate"),
        Matcher("instance", MatchOp.EQ, "db.1|.*"),
        Matcher("service", MatchOp.EQ, 'check"out\\eu'),
    ]
    assert not set(target.removeprefix(base)) & set('{}"= ,|<>&')  # all of it encoded

    no_external = _incident(alerts=(alert,), external_url="")
    assert _links_of(no_external, extras)["Silence in Alertmanager"].startswith(
        "http://am.internal:9093/#/silences/new?filter=%7B"
    )
    # an external URL on a host not configured is no base for it: the configured one is
    elsewhere = _incident(alerts=(alert,), external_url="http://evil.example:9093/")
    assert _links_of(elsewhere, extras)["Silence in Alertmanager"].startswith(
        "http://am.internal:9093/#/silences/new?filter=%7B"
    )
    assert "Silence in Alertmanager" not in _links_of(no_external, Extras())
    # no single silence selects two alerts and nothing else; none selects no alert
    other = AlertRecord("fp3", "firing", {**labels, "instance": "db-3"}, {}, "", "", "")
    assert "Silence in Alertmanager" not in _links_of(_incident(alerts=(alert, other)), extras)
    assert "Silence in Alertmanager" not in _links_of(_incident(alerts=(gone,)), extras)
    bad = AlertRecord("fp4", "firing", {**labels, "bad-name": "x"}, {}, "", "", "")
    assert "Silence in Alertmanager" not in _links_of(_incident(alerts=(bad,)), extras)


def test_links_that_came_with_the_alert_are_links_only_to_configured_hosts() -> None:
    """Generator URL, runbook and external URL are the sender's: a link on a configured
    host, the title and "hidden" elsewhere; a value that is no http(s) URL is dropped."""
    leak = "label_replace(prometheus_build_info,'x','$1','version','(.*)')"
    alert = AlertRecord(
        "fp1", "firing", {"alertname": "X"}, {}, "", "",
        f"http://evil.example/graph?g0.expr={leak}",
    )  # fmt: skip
    hostile = _incident(
        alerts=(alert,),
        common_annotations={"runbook_url": "https://evil.example/runbook"},
        external_url="http://evil.example:9093",
    )
    policy = LinkPolicy(("http://prometheus.example:9090", "http://alertmanager.example:9093"))
    text = message_text({"blocks": incident_message(hostile, Extras(links=policy)).blocks})
    assert "evil.example" not in text
    for title in ("Prometheus graph", "Runbook", "Alertmanager"):
        assert f"{title} _(link to untrusted host hidden)_" in text, title

    ours = AlertRecord(
        "fp1", "firing", {"alertname": "X"}, {}, "", "",
        "http://prometheus.example:9090/graph?g0.expr=up",
    )  # fmt: skip
    trusted = _incident(alerts=(ours,), common_annotations={"runbook_url": "javascript:alert(1)"})
    links = _links_of(trusted, Extras(links=policy))
    assert links["Prometheus graph"] == "http://prometheus.example:9090/graph?g0.expr=up"
    assert links["Alertmanager"] == "http://alertmanager.example:9093/"
    text = message_text({"blocks": incident_message(trusted, Extras(links=policy)).blocks})
    assert "Runbook" not in text and "hidden" not in text  # not a link at all: left out
    # no policy (the default): nothing the alert brought is a link
    assert [t for t in _links_of(trusted, Extras()).values() if t.startswith("http")] == []


def test_text_from_the_alert_is_never_turned_into_links_by_slack() -> None:
    """A bare URL, a channel name or a mention in an annotation stays text: every mrkdwn
    object is ``verbatim``, so Slack does not link-ify what the alert wrote."""
    hostile = _incident(summary="log in again at https://evil.example/login #general @here")
    blocks = incident_message(hostile, Extras()).blocks
    objects = [
        obj
        for block in blocks
        for obj in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]
        if isinstance(obj, dict) and obj.get("type") == "mrkdwn"
    ]
    assert objects and all(obj["verbatim"] is True for obj in objects)
    assert "https://evil.example/login" in message_text({"blocks": blocks})


def _pixels(png: bytes) -> tuple[int, int, bytes]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.load()  # decodes and checks every chunk
    assert image.format == "PNG"
    return image.width, image.height, image.convert("RGB").tobytes()


def test_png_chart_draws_series_and_threshold() -> None:
    start = 1_800_000_000.0
    points = [(start + 60 * i, 0.02 + 0.001 * i) for i in range(61)]
    png = line_chart([points], start=start, end=start + 3600, threshold=0.05)
    width, height, pixels = _pixels(png)
    assert (width, height) == (800, 320)
    colors = {pixels[i : i + 3] for i in range(0, len(pixels), 3)}
    assert bytes(THRESHOLD) in colors and bytes((31, 119, 180)) in colors


def test_split_threshold() -> None:
    expr = 'sum by (instance) (rate(http_requests_total{code=~"5..", x=">"}[5m])) > 0.05'
    assert split_threshold(expr) == (expr.rsplit(" > ", 1)[0], 0.05)
    assert split_threshold("up == bool 0") == ("up", 0.0)
    assert split_threshold("1e3 < foo") == ("foo", 1000.0)
    assert split_threshold("a > b") == ("a > b", None)


CHECKOUT_RULE = (
    'sum by (instance) (rate(http_requests_total{service="checkout",code=~"5.."}[5m])) > 0.05'
)


class FakePrometheus(LoopbackApp):
    """Prometheus's HTTP API over a real socket: ``query_range``, and ``rules`` with one
    alerting rule, HighErrorRate, whose expression is the captured alerts' ``g0.expr``
    (the rule check itself runs against the real Prometheus in test_security_graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[dict[str, str]] = []
        self.rules_asked = 0
        self.app.router.add_post("/api/v1/query_range", self._range)
        self.app.router.add_get("/api/v1/rules", self._rules)

    async def _rules(self, request: web.Request) -> web.Response:
        assert request.query.get("type") == "alert"
        self.rules_asked += 1
        rule = {"name": "HighErrorRate", "query": CHECKOUT_RULE, "type": "alerting"}
        groups = [{"name": "checkout", "file": "checkout.yml", "rules": [rule]}]
        return web.json_response({"status": "success", "data": {"groups": groups}})

    async def _range(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.queries.append({k: str(v) for k, v in form.items()})
        start, end, step = float(form["start"]), float(form["end"]), float(form["step"])
        values = []
        t = start
        while t <= end:
            values.append([t, str(0.03 + (t - start) / (end - start) * 0.1)])
            t += step
        result = [{"metric": {"instance": f"pod-{c}"}, "values": values} for c in "abc"]
        return web.json_response(
            {"status": "success", "data": {"resultType": "matrix", "result": result}}
        )


async def test_graph_of_the_alert_expression_is_uploaded_to_the_thread(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    async with FakePrometheus() as prom:
        settings = slack_settings(tmp_path, fake_slack)
        settings = settings.model_copy(
            update={"prometheus": settings.prometheus.model_copy(update={
                "url": f"http://{prom.target}",
                # where the captured alerts' generator URLs point
                "external_url": "http://prometheus.example.com:9090",
            })}
        )  # fmt: skip
        client = await start(aiohttp_client, settings)
        await client.post("/alertmanager", json=payload("captured-firing"))
        await settle(client)
        assert prom.rules_asked == 1
        [query] = prom.queries
        assert query["query"] == CHECKOUT_RULE.removesuffix(" > 0.05")
        assert float(query["end"]) - float(query["start"]) == 3600
    incident = await client.app[keys.STORE].get_incident(1)
    ts = incident.data["slack"]["ts"]
    [get_url] = fake_slack.calls("files.getUploadURLExternal")
    [complete] = fake_slack.calls("files.completeUploadExternal")
    assert get_url.params["filename"] == "incident-1.png"
    assert complete.params["channel_id"] == CHANNEL and complete.params["thread_ts"] == ts
    assert "threshold 0.05 (dashed red)" in complete.params["initial_comment"]
    [uploaded] = fake_slack.files.values()
    assert uploaded.completed and uploaded.data is not None
    width, _, pixels = _pixels(uploaded.data)
    assert width == 800 and bytes(THRESHOLD) in pixels
    thread = fake_slack.thread(CHANNEL, ts)
    assert any(m.get("files") for m in thread[1:])
