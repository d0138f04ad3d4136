"""A browser on the on-call's machine must not drive alertpilot (bot/server/exposure.py).

The attacks as they were tried, each a request on a socket, against the default
configuration (no tokens, listening on 127.0.0.1): a page on another site POSTs an alert
as ``text/plain`` (no CORS preflight), reads the incident API through DNS rebinding (the
attacker's name resolving to 127.0.0.1, so the Host header is the attacker's), and
approves a remediation. Each is refused, and nothing is stored or run. What the real
senders send (Alertmanager, Grafana, curl with JSON) still works, and ``serve`` refuses to
listen off loopback with an open webhook.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot import keys
from bot.cli import main
from bot.remediation.records import StepState
from bot.server.exposure import Guard, hostname, is_loopback
from bot.server.routes import check_guarded, guarded
from conftest import API, JSON, make_settings, payload
from remediation_kit import Receiver, playbook, start
from stack import free_port

ALERT = json.dumps(payload("captured-firing")).encode()
EVIL = "http://evil.example"


async def raw(client: TestClient, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes as a browser would have them on the wire; the status and JSON answer."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        return int(head.split()[1]), json.loads(body) if body else {}
    finally:
        writer.close()


def browser_post(
    path: str, body: bytes, *, host: str, origin: str | None, kind: str = "text/plain"
) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        f"Content-Type: {kind}",
        f"Content-Length: {len(body)}",
        "Sec-Fetch-Mode: no-cors",
        "Connection: close",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
        lines.append("Sec-Fetch-Site: cross-site")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def browser_get(path: str, *, host: str) -> bytes:
    # A rebinding page reads its "own" origin: same-origin to the browser, no Origin.
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nSec-Fetch-Site: same-origin\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


@pytest.fixture
def open_settings(tmp_path: Path) -> Any:
    """The default: no webhook token, no API token."""
    return make_settings(tmp_path, server={"api_token": None})


async def test_a_cross_site_page_cannot_post_an_alert(
    aiohttp_client: Any, open_settings: Any
) -> None:
    from bot.app import create_app

    client: TestClient = await aiohttp_client(create_app(open_settings))
    here = f"127.0.0.1:{client.server.port}"
    tries = [
        browser_post("/alertmanager", ALERT, host=here, origin=EVIL),  # fetch(no-cors)
        browser_post("/alertmanager", ALERT, host=here, origin=None),  # a form, old browser
        browser_post(
            "/alertmanager", ALERT, host=here, origin=None, kind="application/x-www-form-urlencoded"
        ),
        browser_post("/alertmanager", ALERT, host=here, origin="null"),  # sandboxed frame
        browser_post(  # even as JSON (a preflight would have stopped it), from elsewhere
            "/alertmanager", ALERT, host=here, origin=EVIL, kind="application/json"
        ),
    ]
    statuses = []
    for request in tries:
        status, answer = await raw(client, request)
        statuses.append((status, answer["error"]))
    assert statuses == [
        (403, "cross_origin"),
        (415, "unsupported_media_type"),
        (415, "unsupported_media_type"),
        (403, "cross_origin"),
        (403, "cross_origin"),
    ]
    assert await client.app[keys.STORE].pending_payloads(10) == []
    # What Alertmanager sends is accepted as before.
    ok = await client.post("/alertmanager", data=ALERT, headers=JSON)
    assert ok.status == 200


async def test_dns_rebinding_reads_nothing(aiohttp_client: Any, tmp_path: Path) -> None:
    from bot.app import create_app

    client: TestClient = await aiohttp_client(create_app(make_settings(tmp_path)))
    assert (await client.post("/alertmanager", data=ALERT, headers=JSON)).status == 200
    await client.app[keys.INBOX].drain()
    port = client.server.port
    for path in ("/api/v1/incidents", "/api/v1/incidents/1", "/metrics", "/healthz"):
        status, answer = await raw(client, browser_get(path, host=f"rebind.evil.example:{port}"))
        assert (status, answer.get("error")) == (421, "host_not_allowed"), path
        assert "server.allowed_hosts" in answer["message"]
    # By a name of its own, with the token, the API answers.
    listed = await client.get("/api/v1/incidents", headers=API)
    assert listed.status == 200 and len((await listed.json())["incidents"]) == 1


async def test_without_an_api_token_the_api_is_off(aiohttp_client: Any, open_settings: Any) -> None:
    from bot.app import create_app

    client: TestClient = await aiohttp_client(create_app(open_settings))
    assert (await client.post("/alertmanager", data=ALERT, headers=JSON)).status == 200
    await client.app[keys.INBOX].drain()
    for method, path in [
        ("GET", "/api/v1/incidents"),
        ("GET", "/api/v1/incidents/1"),
        ("POST", "/api/v1/incidents/1/approvals"),
        ("POST", "/api/v1/narratives"),
        ("POST", "/api/v1/mira/rca_analyze"),
    ]:
        resp = await client.request(method, path, json={"incidentId": 1})
        answer = await resp.json()
        assert resp.status == 404, (method, path, resp.status)
        assert "server.api_token" in answer["message"], answer


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def test_a_page_cannot_approve_a_remediation(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    step = {
        "name": "restart",
        "mode": "approval",
        "description": "restart the cache workers",
        "cooldown": 0,
        "action": {"kind": "webhook", "url": f"{receiver.url}/workers/restart"},
    }
    h = await start(
        aiohttp_client,
        tmp_path,
        [playbook(step)],
        remediation={"mode": "auto", "allowed_urls": [f"{receiver.url}/workers"]},
    )
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.wait_step(incident_id, "restart", {StepState.PENDING_APPROVAL})
    path = f"/api/v1/incidents/{incident_id}/approvals"
    body = json.dumps({"step": "restart", "decision": "approve", "actor": "ana"}).encode()
    here = f"127.0.0.1:{h.client.server.port}"
    token = f"Authorization: {API['Authorization']}\r\n".encode()
    attempts = [
        browser_post(path, body, host=here, origin=EVIL),
        browser_post(path, body, host=here, origin=None),  # text/plain
        browser_post(path, body, host=f"evil.example:{h.client.server.port}", origin=None),
        # even a page that somehow has the token: the Origin gives it away
        browser_post(path, body, host=here, origin=EVIL, kind="application/json").replace(
            b"Connection: close\r\n", b"Connection: close\r\n" + token
        ),
    ]
    statuses = [(await raw(h.client, request))[0] for request in attempts]
    assert statuses == [403, 415, 421, 403]
    await h.settle()
    assert (await h.step(incident_id, "restart")).state is StepState.PENDING_APPROVAL
    assert receiver.received == []


async def test_what_real_senders_send_still_works(aiohttp_client: Any, tmp_path: Path) -> None:
    """Alertmanager, Grafana and curl send no Origin; a same-origin page (the console)
    and requests addressed by public_url or allowed_hosts pass."""
    from bot.app import create_app

    settings = make_settings(
        tmp_path,
        server={"public_url": "https://alertpilot.example.com", "allowed_hosts": ["ap.internal"]},
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    port = client.server.port
    for host, origin in [
        ("alertpilot.example.com", None),
        ("ap.internal:8080", None),
        ("AP.INTERNAL.", None),
        (f"localhost:{port}", None),
        (f"[::1]:{port}", None),
        ("alertpilot.example.com", "https://alertpilot.example.com"),
        (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"),
    ]:
        request = browser_post("/alertmanager", ALERT, host=host, origin=None, kind=JSON_TYPE)
        if origin is not None:
            request = request.replace(b"Connection: close\r\n", f"Origin: {origin}\r\n".encode())
        status, answer = await raw(client, request)
        assert status == 200, (host, origin, answer)
    # Slack's form posts are its own (signed) business.
    assert "/slack/events" in client.app[keys.GUARD].not_json


JSON_TYPE = JSON["Content-Type"]


def test_host_parsing() -> None:
    assert hostname("Example.COM.:8080") == "example.com"
    assert hostname("[::1]:9") == "::1"
    assert hostname("::1") == "::1"
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "localhost", "[::1]:80"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "localhost.evil.example"))
    guard = Guard(make_settings(Path("/nonexistent"), server={"allowed_hosts": ["*"]}))
    assert guard.host_allowed("anything.example")


def test_check_says_what_is_open(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "alertpilot.yaml"
    config.write_text(f"store:\n  url: sqlite:///{tmp_path}/a.db\nplaybooks:\n  paths: []\n")
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "endpoint: POST /alertmanager: OPEN: no credentials" in out
    assert "endpoint: /api/v1 (incidents, approvals, narratives, rca_analyze, oncall): off" in out
    assert "endpoint: POST /slack/events: off" in out
    assert "endpoint: Host names answered: loopback, 127.0.0.1" in out
    config.write_text(config.read_text() + "server:\n  listen: 0.0.0.0:8080\n")
    assert main(["check", "--config", str(config)]) == 2
    assert "serve would refuse to start: server.listen is 0.0.0.0:8080" in capsys.readouterr().err


def check_output(config: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``alertpilot check`` prints for a config of ``text`` (which it accepts)."""
    config.write_text(text)
    assert main(["check", "--config", str(config)]) == 0
    return capsys.readouterr().out


def test_check_says_who_may_act_from_slack_and_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "alertpilot.yaml"
    base = f"store:\n  url: sqlite:///{tmp_path}/a.db\nplaybooks:\n  paths: []\n"
    slack = "slack:\n  bot_token: xoxb-1\n  signing_secret: s\n  default_channel: '#ops'\n"
    console = "console:\n  users: [{name: ana, token: ana-token-0123456789abcdef}]\n"
    out = check_output(config, base + slack + console, capsys)
    assert (
        "endpoint: POST /slack/events: Slack request signature; an incident is acted on "
        "from its own channel; query off; approvals by nobody; silences up to 1d\n"
    ) in out
    assert (
        "endpoint: /ui (console): sign-in with a token per person (1 person); approvals by nobody\n"
    ) in out
    slack += (
        "  app_token: xapp-1\n  responders: [U0RESP, S0ONCALL]\n  query_users: [U0RESP]\n"
        "  query_channels: [C0OPS, C0SRE]\n  approvers: [U0LEAD]\n  max_silence: 4h\n"
    )
    console += "  trusted_proxies: [127.0.0.1/32]\n  approvers: [ana]\n"
    out = check_output(config, base + slack + console, capsys)
    assert (
        "endpoint: POST /slack/events: Slack request signature (and Socket Mode: "
        "slack.app_token); an incident is acted on from its own channel; slack.responders "
        "(2 users or groups) from anywhere; query for 1 user and in 2 channels; approvals by 1 "
        "approver; silences up to 4h\n"
    ) in out
    assert (
        "endpoint: /ui (console): sign-in with a token per person (1 person) or "
        "X-Forwarded-User from trusted_proxies; approvals by 1 approver\n"
    ) in out


async def test_serve_refuses_a_non_loopback_listen_without_a_webhook_token(
    tmp_path: Path,
) -> None:
    config = tmp_path / "alertpilot.yaml"
    config.write_text(f"store:\n  url: sqlite:///{tmp_path}/a.db\nplaybooks:\n  paths: []\n")
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "serve", "--config", str(config),
        "--listen", f"0.0.0.0:{free_port()}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(serve.communicate(), 60)
    assert serve.returncode == 2
    text = err.decode()
    assert "refusing to serve: server.listen is 0.0.0.0:" in text
    assert "set server.webhook_token" in text and "Traceback" not in text


def test_an_app_with_a_route_outside_the_guard_is_refused() -> None:
    """Every route goes through the guard (``bot.server.routes.guarded``): a feature that
    registers a handler without it stops the app from being built, so no endpoint can
    be reached around the Host, Origin and Content-Type checks."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="reached")

    app = web.Application()
    app.router.add_post("/guarded", guarded(handler))
    check_guarded(app)
    app.router.add_get("/bare", handler)
    with pytest.raises(RuntimeError, match=r"GET /bare"):
        check_guarded(app)
