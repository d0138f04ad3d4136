"""Every inbound endpoint but health and metrics requires authentication, compared in
constant time.

The routes are read from the app's router with every feature on, so a route added
later is covered without anyone remembering to list it here.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import create_app
from conftest import JSON, make_settings, payload
from fakes import FakePagerDuty, FakeSlack, sign_v3, webhook_v3_event
from pagerduty_kit import pd_section
from slackkit import command_body, signed

JSON_TYPE = JSON["Content-Type"]
PUBLIC = {"/healthz", "/readyz", "/metrics"}
# The console's way in (its sign-in form, which takes a token in its body) and its
# stylesheet and script: open, and they show no incident.
SIGN_IN = {"/ui/signin", "/ui/static/console.css", "/ui/static/console.js"}
CONSOLE_TOKEN = "console-token-0123456789abcdef"
WEBHOOK_TOKEN = "webhook-token-0123456789abcdef"
API_TOKEN = "api-token-0123456789abcdef"
BASIC = ("alertmanager", "basic-password-0123456789")
SLACK_SECRET = "slack-signing-secret-0123456789"
PD_SECRET = "pagerduty-webhook-secret-0123"
# every route the product documents; the router may hold more, never fewer
DOCUMENTED = {
    ("POST", "/alertmanager"),
    ("POST", "/slack/events"),
    ("POST", "/pagerduty"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/incidents"),
    ("GET", "/api/v1/incidents/{incident_id}"),
    ("POST", "/api/v1/incidents/{incident_id}/approvals"),
    ("POST", "/api/v1/narratives"),
    ("GET", "/api/v1/oncall"),
    ("GET", "/ui/"),
    ("GET", "/ui/incidents/{id}"),
    ("GET", "/ui/playbooks"),
    ("POST", "/ui/action"),
}

Headers = dict[str, str]


async def start(
    aiohttp_client: Any, tmp_path: Path, slack: FakeSlack, pagerduty: FakePagerDuty
) -> TestClient:
    settings = make_settings(
        tmp_path,
        server={
            "webhook_token": WEBHOOK_TOKEN,
            "webhook_basic_auth": {"username": BASIC[0], "password": BASIC[1]},
            "api_token": API_TOKEN,
        },
        slack={
            "bot_token": slack.token,
            "signing_secret": SLACK_SECRET,
            "api_url": slack.base_url,
            "default_channel": "C0ALERTS",
        },
        pagerduty=pd_section(pagerduty, webhook_secret=PD_SECRET),
        llm={"api_rate_limit": 1000},
        console={
            "users": [{"name": "ana", "token": CONSOLE_TOKEN}],
            "trusted_proxies": ["127.0.0.0/8"],  # the test client is the auth proxy
        },
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


def routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        assert isinstance(path, str), route
        found.add((route.method, path))
    return sorted(found)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def body_for(path: str, slack: FakeSlack) -> bytes:
    """A body the endpoint would accept, so only the credentials are missing."""
    if path == "/alertmanager":
        return json.dumps(payload("captured-firing")).encode()
    if path == "/slack/events":
        return command_body("list", slack)
    if path == "/pagerduty":
        return json.dumps(webhook_v3_event("incident.acknowledged", "PX", "key")).encode()
    if path.endswith("/approvals"):
        return json.dumps({"step": "restart", "decision": "approve", "actor": "ana"}).encode()
    if path == "/api/v1/narratives":
        return json.dumps({"incidentId": 1}).encode()
    return b""


def wrong_credentials(body: bytes) -> list[Headers]:
    """Credentials of every kind, each wrong (right scheme, wrong secret)."""
    basic = base64.b64encode(f"{BASIC[0]}:nope".encode()).decode()
    return [
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": f"Bearer {API_TOKEN}x"},
        {"Authorization": f"Bearer {WEBHOOK_TOKEN[:-1]}"},
        {"Authorization": f"Basic {basic}"},
        {"Authorization": f"Token token={API_TOKEN}"},
        signed(body, secret="not-the-signing-secret"),
        signed(body, secret=SLACK_SECRET, timestamp=1_000_000_000),  # a replay: too old
        {"X-PagerDuty-Signature": sign_v3(body, ["not-the-webhook-secret"])},
        {"X-PagerDuty-Signature": sign_v3(body + b" ", [PD_SECRET])},
    ]


def right_credentials(body: bytes) -> list[Headers]:
    basic = base64.b64encode(f"{BASIC[0]}:{BASIC[1]}".encode()).decode()
    return [
        {"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        {"Authorization": f"Basic {basic}"},
        {"Authorization": f"Bearer {API_TOKEN}"},
        signed(body, secret=SLACK_SECRET),
        {"X-PagerDuty-Signature": sign_v3(body, [PD_SECRET])},
        {"X-Forwarded-User": "ana"},  # the console's, from its trusted proxy
    ]


async def test_every_route_but_health_and_metrics_refuses_the_unauthenticated(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    client = await start(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    served = routes(client.app)
    assert set(served) >= DOCUMENTED, DOCUMENTED - set(served)
    for method, template in served:
        path = concrete(template)
        body = body_for(template, fake_slack)
        data = body if method not in ("GET", "HEAD") else None
        headers = {"Content-Type": "application/json"}
        if template == "/slack/events":
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if template in PUBLIC:
            resp = await client.request(method, path)
            assert resp.status in (200, 503), (method, path, resp.status)
            continue
        if template in SIGN_IN:  # a form, or what it is drawn with: no incident in sight
            resp = await client.request(method, path)
            assert resp.status in (200, 403, 415), (method, path, resp.status)
            assert "incidents/" not in await resp.text()
            continue
        resp = await client.request(method, path, data=data, headers=headers)
        assert resp.status == 401, (method, path, resp.status, await resp.text())
        for wrong in wrong_credentials(body):
            resp = await client.request(method, path, data=data, headers={**wrong, **headers})
            assert resp.status == 401, (method, path, wrong, resp.status, await resp.text())
        # ... and the right credential for this route is accepted (so the 401 was about
        # credentials, not something else about the request)
        statuses = []
        for right in right_credentials(body):
            resp = await client.request(method, path, data=data, headers={**right, **headers})
            statuses.append(resp.status)
        assert any(status != 401 for status in statuses), (method, path, statuses)


async def test_every_route_refuses_a_rebinding_host_even_with_its_credentials(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    """Each route, every feature on, is behind the Host check (``guarded``): addressed by
    a name the server does not answer to, it refuses before its handler runs, whatever
    credential came with it."""
    client = await start(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    host = f"rebind.evil.example:{client.server.port}"
    for method, template in routes(client.app):
        if method == "HEAD":
            continue
        path, body = concrete(template), body_for(template, fake_slack)
        for credential in [*right_credentials(body), {}]:
            resp = await client.request(
                "GET" if method == "*" else method,
                path,
                data=body if method not in ("GET", "*") else None,
                headers={**credential, "Host": host, "Content-Type": "application/json"},
            )
            assert resp.status == 421, (method, path, resp.status, await resp.text())
            assert (await resp.json())["error"] == "host_not_allowed"


async def test_pagerduty_webhooks_without_a_secret_refuse_everything(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    section = pd_section(fake_pagerduty)
    section.pop("webhook_secret")
    client: TestClient = await aiohttp_client(
        create_app(make_settings(tmp_path, pagerduty=section))
    )
    body = json.dumps(webhook_v3_event("incident.acknowledged", "PX", "key")).encode()
    for headers in ({}, {"X-PagerDuty-Signature": sign_v3(body, ["anything"])}):
        resp = await client.post("/pagerduty", data=body, headers={**JSON, **headers})
        assert resp.status == 401


# -- constant-time comparisons -------------------------------------------------------------


class Spy:
    """Wraps ``hmac.compare_digest`` and keeps what it compared."""

    def __init__(self, real: Callable[[Any, Any], bool]) -> None:
        self.real = real
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return self.real(a, b)

    def compared(self, value: str) -> bool:
        """Whether ``value`` (as str or bytes) was one side of a comparison."""
        forms = {value, value.encode()}
        return any(a in forms or b in forms for a, b in self.calls)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy(hmac.compare_digest)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    return spy


async def test_every_credential_is_compared_with_compare_digest(
    aiohttp_client: Any,
    tmp_path: Path,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
    spy: Spy,
) -> None:
    client = await start(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    alert = json.dumps(payload("captured-firing")).encode()
    presented = "Bearer wrong-webhook-token"
    await client.post("/alertmanager", data=alert, headers={**JSON, "Authorization": presented})
    assert spy.compared("wrong-webhook-token"), "the bearer token"

    basic = base64.b64encode(b"alertmanager:wrong-password").decode()
    await client.post(
        "/alertmanager", data=alert, headers={**JSON, "Authorization": f"Basic {basic}"}
    )
    assert spy.compared("wrong-password"), "the basic-auth password"
    assert spy.compared("alertmanager"), "the basic-auth user name"

    await client.get("/api/v1/incidents", headers={"Authorization": "Bearer wrong-api-token"})
    assert spy.compared("wrong-api-token"), "the API token"

    command = command_body("list", fake_slack)
    headers = signed(command, secret="wrong-signing-secret")
    await client.post("/slack/events", data=command, headers=headers)
    assert spy.compared(headers["X-Slack-Signature"]), "the Slack signature"

    event = json.dumps(webhook_v3_event("incident.acknowledged", "PX", "key")).encode()
    signature = sign_v3(event, ["wrong-webhook-secret"])
    await client.post(
        "/pagerduty", data=event, headers={**JSON, "X-PagerDuty-Signature": signature}
    )
    assert spy.compared(signature.removeprefix("v1=")), "the PagerDuty signature"

    # and the right ones pass through it too
    spy.calls.clear()
    ok = await client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert ok.status == 200 and spy.compared(API_TOKEN)
    digest = hmac.new(PD_SECRET.encode(), event, hashlib.sha256).hexdigest()
    ok = await client.post(
        "/pagerduty", data=event, headers={**JSON, "X-PagerDuty-Signature": f"v1={digest}"}
    )
    assert ok.status == 200 and spy.compared(digest)


SECRETISH = re.compile(
    r"token|secret|signature|password|passwd|api_key|credential|get_secret_value", re.I
)


def test_no_credential_is_compared_with_equality() -> None:
    """Nowhere in ``bot/`` does ``==`` or ``!=`` compare two values of which one looks
    like a credential (comparisons to literals, such as a scheme name, are fine)."""
    found = []
    for path in sorted((Path(__file__).parents[1] / "bot").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) for o in operands):
                continue
            if SECRETISH.search(ast.unparse(node)):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


# -- credentials no client library would send ----------------------------------------------


async def raw_request(
    client: TestClient, method: str, path: str, headers: bytes, body: bytes
) -> int:
    """Send a request byte for byte (a header's value need not be text) and return its
    status."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".encode()
            + headers
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()


async def test_credentials_that_are_not_text_get_401_not_500(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    """Header bytes that are not UTF-8, and a Slack timestamp longer than ``int()`` takes,
    are wrong credentials like any other."""
    client = await start(aiohttp_client, tmp_path, fake_slack, fake_pagerduty)
    now = str(int(time.time())).encode()
    bad: list[bytes] = [
        b"Authorization: Bearer \xff\xfe\r\n",
        b"Authorization: Bearer " + WEBHOOK_TOKEN.encode() + b"\xff\r\n",
        b"Authorization: Basic \xc0\xaf\r\n",
        b"X-PagerDuty-Signature: v1=\xff\xfe\r\n",
        b"X-Slack-Request-Timestamp: " + now + b"\r\nX-Slack-Signature: v0=\xff\r\n",
        b"X-Slack-Request-Timestamp: " + b"9" * 5000 + b"\r\nX-Slack-Signature: v0=00\r\n",
    ]
    for method, template in routes(client.app):
        if template in PUBLIC | SIGN_IN:
            continue
        body = body_for(template, fake_slack) if method == "POST" else b""
        kind = "application/x-www-form-urlencoded" if template == "/slack/events" else JSON_TYPE
        for headers in bad:
            headers += f"Content-Type: {kind}\r\n".encode()
            status = await raw_request(client, method, concrete(template), headers, body)
            assert status == 401, (method, template, headers[:60], status)
    assert (await client.get("/healthz")).status == 200
