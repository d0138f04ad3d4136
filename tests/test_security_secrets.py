"""Secrets never reach the logs, the API, the timeline or the store.

The whole flow runs with a distinctive value in every secret setting: an Alertmanager
webhook, the pipeline (a PromQL diagnostic against a Prometheus that wants its bearer
token, an approval step), Slack, PagerDuty, the LLM narrative, Slack buttons (approve,
acknowledge), a PagerDuty webhook, the APIs, and some refused requests and failing
calls on the way. Every log record of every logger is captured at DEBUG, before any
scrubbing (the scrubber is a last line of defence, not the reason this passes), and
searched for each secret, as are every API answer, every timeline event, every
incident's data, the metrics, what Slack was shown, and the SQLite files themselves.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.incidents import Status
from conftest import JSON, make_settings
from fakes import FakeOpenAI, FakePagerDuty, FakeSlack, oncall_entry, sign_v3, webhook_v3_event
from narrative_support import eventually, llm_section, until_quiet
from pagerduty_kit import SEVERITY_MAP, alert_group, pd_section
from remediation_kit import Receiver
from slackkit import action_body, message_text, signed
from test_security_hostile import PrometheusStandIn

WEBHOOK_TOKEN = "whtok-Q7f3Kx9Lm2Pz8Rv4"
BASIC_PASSWORD = "basicpw-Hs6Dd2Ww9Ee1"
API_TOKEN = "apitok-N4c8Vb1Xz6Ty3Ju5"
BOT_TOKEN = "xoxb-botTok-B9g2Hh7Kk4Mm"
SIGNING_SECRET = "slsign-Y5t1Rr8Ee3Ww6Qq"
ROUTING_KEY = "pdroute0R2d4F6h8J0l2N4p6R8t0V2xZ"  # the Events API wants 32 characters
PD_API_TOKEN = "pdapi-U7i3Oo9Pp2Aa5Ss"
PD_WEBHOOK_SECRET = "pdwhsec-C1v5Bb8Nn4Mm0"
LLM_KEY = "sk-llmkey-G6h2Jj9Kk3Ll7Zz1"
PROM_TOKEN = "promtok-E3r7Tt1Yy5Uu9"
SECRETS = {
    "server.webhook_token": WEBHOOK_TOKEN,
    "server.webhook_basic_auth.password": BASIC_PASSWORD,
    "server.api_token": API_TOKEN,
    "slack.bot_token": BOT_TOKEN,
    "slack.signing_secret": SIGNING_SECRET,
    "pagerduty.routing_key": ROUTING_KEY,
    "pagerduty.api_token": PD_API_TOKEN,
    "pagerduty.webhook_secret": PD_WEBHOOK_SECRET,
    "llm.api_key": LLM_KEY,
    "prometheus.bearer_token": PROM_TOKEN,
}
assert len(ROUTING_KEY) == 32

# Every library's logger at DEBUG: ours, the HTTP stack, the SDKs.
LOGGERS = [
    "", "bot", "asyncio", "aiohttp", "aiohttp.access", "aiohttp.client", "aiohttp.server",
    "aiohttp.web", "aiohttp.internal", "slack_sdk", "slack_bolt", "openai", "httpx",
    "httpcore", "httpx2", "httpcore2", "pagerduty", "urllib3", "requests",
]  # fmt: skip

PLAYBOOK = """\
- name: checkout-errors
  match: ['alertname="CheckoutErrors"']
  diagnostics:
    - name: error_share
      kind: promql
      primary: true
      expect: "< 0.05"
      query: sum(rate(http_requests_total{{service={{{{ labels.service | promql }}}}}}[5m]))
  remediations:
    - name: flip-flag
      mode: approval
      action:
        kind: webhook
        url: {receiver}/flags/fallback
        body: {{service: "{{{{ labels.service }}}}", enabled: true}}
"""

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class Everything(logging.Handler):
    """Keeps every record, rendered the way any formatter could render it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.name, record.getMessage(), repr(record.args)]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
        parts += [f"{k}={v!r}" for k, v in record.__dict__.items() if k not in _RESERVED]
        self.texts.append("\n".join(parts))


@pytest.fixture
def everything(caplog: pytest.LogCaptureFixture) -> Iterator[Everything]:
    handler = Everything()
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    root = logging.getLogger()
    root.addHandler(handler)
    quiet = [  # loggers that do not propagate to the root get the handler themselves
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]
    for logger in quiet:
        logger.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    for logger in quiet:
        logger.removeHandler(handler)


class BearerPrometheus(PrometheusStandIn):
    """The stand-in, refusing any request without the configured bearer token."""

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {PROM_TOKEN}":
            return web.json_response({"status": "error", "error": "unauthorized"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    def __init__(self) -> None:
        super().__init__()
        self.app.middlewares.append(self._auth)


def find_secrets(where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, value in SECRETS.items() if value in text]


async def test_no_secret_reaches_logs_api_timeline_or_store(
    aiohttp_client: Any, tmp_path: Path, everything: Everything
) -> None:
    answers: list[str] = []

    async def call(client: TestClient, method: str, path: str, **kwargs: Any) -> Any:
        resp = await client.request(method, path, **kwargs)
        text = await resp.text()
        answers.append(f"{method} {path} -> {resp.status}: {text} {dict(resp.headers)}")
        return resp, text

    async with (
        FakeSlack(token=BOT_TOKEN) as slack,
        FakePagerDuty(api_token=PD_API_TOKEN) as pagerduty,
        FakeOpenAI(api_key=LLM_KEY, reply="- checkout 5xx at 25%\nNext: flip the flag") as llm,
        BearerPrometheus() as prometheus,
        Receiver() as receiver,
    ):
        folder = tmp_path / "playbooks"
        folder.mkdir()
        (folder / "checkout.yaml").write_text(PLAYBOOK.format(receiver=receiver.url))
        pagerduty.set_oncalls([oncall_entry("Ana", "PUSER01")])
        settings = make_settings(
            tmp_path,
            server={
                "webhook_token": WEBHOOK_TOKEN,
                "webhook_basic_auth": {"username": "alertmanager", "password": BASIC_PASSWORD},
                "api_token": API_TOKEN,
            },
            logging={"level": "DEBUG"},
            prometheus={"url": prometheus.url, "bearer_token": PROM_TOKEN, "timeout": 2},
            playbooks={"paths": [str(folder)]},
            incidents={"severity_map": SEVERITY_MAP},
            slack={
                "bot_token": BOT_TOKEN,
                "signing_secret": SIGNING_SECRET,
                "api_url": slack.base_url,
                "default_channel": "C0ALERTS",
                "channel_rate": 50,
                "approvers": ["U0ALICE"],
            },
            pagerduty=pd_section(
                pagerduty,
                routing_key=ROUTING_KEY,
                api_token=PD_API_TOKEN,
                webhook_secret=PD_WEBHOOK_SECRET,
                retry_backoff=0.05,
            ),
            llm=llm_section(llm, api_key=LLM_KEY, settle=0.05, llm_fallback_delay=0.5),
            remediation={"mode": "approval", "allowed_urls": [f"{receiver.url}/flags"]},
            workers={"max_attempts": 30},
        )
        assert sorted(settings.secret_values()) == sorted(SECRETS.values())
        client: TestClient = await aiohttp_client(create_app(settings))
        store = client.app[keys.STORE]

        # each outside service fails once on the way: error paths log too
        slack.fail_next(1, match="chat.postMessage")
        pagerduty.fail_next(1, match="enqueue")
        llm.fail_next(1)

        # refused on the way in: wrong credentials everywhere
        alert = alert_group()
        await call(client, "POST", "/alertmanager", json=alert, headers={"Authorization": "x"})
        await call(
            client, "POST", "/alertmanager", json=alert, headers={"Authorization": "Bearer no"}
        )
        await call(client, "GET", "/api/v1/incidents", headers={"Authorization": "Bearer no"})
        bad = action_body("ap_ack", "1", slack)
        await call(client, "POST", "/slack/events", data=bad, headers=signed(bad, secret="no"))
        await call(
            client,
            "POST",
            "/pagerduty",
            data=b"{}",
            headers={**JSON, "X-PagerDuty-Signature": "v1=0"},
        )

        # 1. the webhook (basic auth this time), the pipeline, Slack, PagerDuty, the LLM
        resp, _ = await call(
            client, "POST", "/alertmanager", json=alert, headers=_basic("alertmanager")
        )
        assert resp.status == 200
        incident = await eventually(lambda: _opened(store), what="the incident")

        async def ready() -> bool:
            current = await store.get_incident(incident.id)
            narrative = current.data.get("narrative") or {}
            return bool(
                narrative.get("source") == "llm"
                and (current.data.get("slack") or {}).get("ts")
                and pagerduty.triggers_for(current.key)
                and (current.data.get("approvals") or {})
            )

        await eventually(ready, timeout=30, what="Slack, PagerDuty, narrative, approval")

        # 2. Slack buttons: approve the step, acknowledge the incident
        for action_id, value in (("ap_approve", f"{incident.id}:flip-flag"), ("ap_ack", "1")):
            body = action_body(action_id, value, slack, rid=action_id)
            resp, _ = await call(client, "POST", "/slack/events", data=body, headers=signed(
                body, secret=SIGNING_SECRET
            ))  # fmt: skip
            assert resp.status == 200
        await eventually(lambda: _received(receiver), what="the approved step's webhook")
        await eventually(
            lambda: _status(store, incident.id, Status.ACKNOWLEDGED), what="acknowledged"
        )

        # 3. PagerDuty says it is resolved
        event = json.dumps(
            webhook_v3_event("incident.resolved", "PINC001", incident.key, "Ada")
        ).encode()
        resp, _ = await call(
            client,
            "POST",
            "/pagerduty",
            data=event,
            headers={**JSON, "X-PagerDuty-Signature": sign_v3(event, [PD_WEBHOOK_SECRET])},
        )
        assert resp.status == 200
        await eventually(lambda: _status(store, incident.id, Status.RESOLVED), what="resolved")

        # 4. the APIs
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        for method, path, sent in [
            ("GET", "/api/v1/incidents", None),
            ("GET", f"/api/v1/incidents/{incident.id}", None),
            ("GET", "/api/v1/oncall", None),
            ("POST", "/api/v1/narratives", {"incidentId": incident.id}),
            ("POST", f"/api/v1/incidents/{incident.id}/approvals", {"step": "x"}),
            ("GET", "/metrics", None),
            ("GET", "/readyz", None),
        ]:
            resp, _ = await call(client, method, path, json=sent, headers=auth)
            assert resp.status < 500, (path, resp.status)
        await until_quiet(client, incident.id, steady=0.5)

        timeline = [
            json.dumps([e.kind, e.actor, e.message, e.data], default=str)
            for e in await store.events(incident.id)
        ]
        data = json.dumps((await store.get_incident(incident.id)).data, default=str)
        shown = [
            message_text({"text": r.params.get("text"), "blocks": r.params.get("blocks", [])})
            for r in slack.requests
            if isinstance(r.params, dict)
        ]
        pd_payloads = [json.dumps(e.get("payload"), default=str) for e in pagerduty.events]

    assert receiver.received, "the approved step never ran"
    assert everything.texts, "nothing was logged: the capture is not working"
    assert any("slack_sdk" in text for text in everything.texts), "no SDK debug logs seen"
    problems = []
    for i, text in enumerate(everything.texts):
        problems += find_secrets(f"log record {i}: {text[:300]!r}", text)
    for text in answers:
        problems += find_secrets(f"API answer {text[:200]!r}", text)
    for text in timeline:
        problems += find_secrets(f"timeline event {text[:200]!r}", text)
    problems += find_secrets("incident data", data)
    for text in shown + pd_payloads:
        problems += find_secrets(f"what Slack or PagerDuty showed: {text[:200]!r}", text)
    problems += stored_secrets(tmp_path)
    assert problems == []


def stored_secrets(folder: Path) -> list[str]:
    """Secrets in the SQLite files (database, WAL), read as bytes."""
    found = []
    for path in folder.glob("alertpilot.db*"):
        found += find_secrets(f"the store file {path.name}", path.read_bytes().decode("latin-1"))
    return found


def _basic(user: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{BASIC_PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def _opened(store: Any) -> Any:
    incidents = await store.list_incidents(limit=5)
    return incidents[0] if incidents else None


async def _status(store: Any, incident_id: int, status: Status) -> bool:
    return bool((await store.get_incident(incident_id, timeline=False)).status is status)


async def _received(receiver: Receiver) -> bool:
    return bool(receiver.received)


async def test_the_store_and_inbox_files_are_private(tmp_path: Path) -> None:
    import stat

    from bot.core.clock import ManualClock
    from bot.store.sqlite import SqliteStore

    folder = tmp_path / "var"
    clock = ManualClock()
    store = SqliteStore(str(folder / "alertpilot.db"), clock=clock.now)
    await store.open()
    try:
        await store.enqueue_payload("alertmanager", '{"a": 1}')
        files = sorted(p.name for p in folder.iterdir())
        assert "alertpilot.db" in files and "alertpilot.db-inbox" in files
        for path in folder.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (path, oct(path.stat().st_mode))
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        await store.close()


async def test_configured_secrets_an_alert_quotes_never_reach_the_model(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """A runbook line or a copied command in an alert can hold a configured secret in a
    shape no built-in pattern knows; it is replaced anyway: as written, full width, and
    when the fact's clip cuts it in half."""
    from bot.core.clock import SystemClock
    from bot.narrative.facts import MAX_TEXT
    from narrative_support import app_settings, group, narrative_of, running_app

    fake_openai.reply = "HighErrorRate is firing on checkout."
    settings = app_settings(
        tmp_path,
        fake_openai,
        llm={"settle": 0.05, "llm_fallback_delay": 0.1},
        server={
            "webhook_token": WEBHOOK_TOKEN,
            "webhook_basic_auth": {"username": "am", "password": BASIC_PASSWORD},
            "api_token": API_TOKEN,
        },
    )
    wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in API_TOKEN)
    said = f"api {wide} then retry "
    cut = "x" * (MAX_TEXT - 1 - 10 - len(said) - 1)  # the clip keeps 10 of the password
    annotations = {
        "summary": f"replay with: curl -H 'X-Token {WEBHOOK_TOKEN}' http://svc/replay",
        "description": f"{said}{cut} {BASIC_PASSWORD} and more",
    }
    body = group(annotations=annotations)
    async with running_app(settings, SystemClock()) as client:
        resp = await client.post(
            "/alertmanager",
            json=body,
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        )
        assert resp.status == 200, await resp.text()
        store = client.app[keys.STORE]

        async def narrated() -> object:
            found = await store.list_incidents(limit=1)
            if not found:
                return None
            incident = await store.get_incident(found[0].id)
            return incident if narrative_of(incident).get("source") == "llm" else None

        await eventually(narrated, what="the LLM narrative")
    sent = json.dumps(fake_openai.completions, ensure_ascii=False)
    assert "curl -H 'X-Token [secret]' http://svc/replay" in sent  # the rest is kept
    assert "api [secret] then retry" in sent
    assert "xx [secret]..." in sent  # the clip's "…", folded like the rest
    assert find_secrets("the model's requests", sent) == []
    assert BASIC_PASSWORD[:6] not in sent and wide not in sent


def readable_by_others(folder: Path) -> list[str]:
    return [f"{p.name} {p.stat().st_mode:o}" for p in folder.iterdir() if p.stat().st_mode & 0o077]


async def test_store_files_an_earlier_version_left_readable_are_made_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.core.clock import ManualClock
    from bot.store.sqlite import SqliteStore

    path = tmp_path / "alertpilot.db"
    store = SqliteStore(str(path), clock=ManualClock().now)
    await store.open()
    await store.close()
    for file in (path, tmp_path / "alertpilot.db-inbox"):  # as earlier versions left them
        file.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="bot.store")
    store = SqliteStore(str(path), clock=ManualClock().now)
    await store.open()
    try:
        await store.enqueue_payload("alertmanager", '{"a": 1}')
        assert readable_by_others(tmp_path) == []
    finally:
        await store.close()
    said = " ".join(r.getMessage() for r in caplog.records if r.name == "bot.store.sqlite")
    assert f"{path} was mode 644, now 600" in said
    assert f"{path}-inbox was mode 644, now 600" in said
