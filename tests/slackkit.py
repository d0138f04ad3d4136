"""Helpers for the Slack tests: settings pointing at the fake, signed requests, settling."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.clock import Clock
from bot.settings import Settings
from conftest import make_settings
from fakes import FakeSlack

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0ALERTS"


def slack_settings(
    tmp_path: Path,
    fake: FakeSlack,
    *,
    workers: dict[str, Any] | None = None,
    sections: dict[str, Any] | None = None,
    **slack: Any,
) -> Settings:
    """Settings with a ``slack`` section for the fake (``slack`` overrides its keys) and
    any other ``sections`` (``links``, ``prometheus``...)."""
    section = {
        "bot_token": fake.token,
        "signing_secret": SECRET,
        "api_url": fake.base_url,
        "default_channel": CHANNEL,
        "channel_rate": 50,
        "storm_threshold": 50,
        **slack,
    }
    return make_settings(
        tmp_path,
        slack=section,
        workers={"max_attempts": 30, **(workers or {})},
        **(sections or {}),
    )


async def start(aiohttp_client: Any, settings: Settings, clock: Clock | None = None) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(settings, clock=clock))
    return client


async def settle(client: TestClient, timeout: float = 15.0) -> None:
    """Run the inbox, due jobs and background work until nothing is left to do."""
    app = client.app
    deadline = time.monotonic() + timeout
    while True:
        await app[keys.INBOX].drain()
        await app[keys.RUNNER].run_due()
        await app[keys.SLACK].tasks.join()
        stats = await app[keys.STORE].stats()
        if stats.jobs_pending == 0 and stats.inbox_depth == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"still pending after {timeout}s: {stats}")
        await asyncio.sleep(0.02)


async def settle_due(client: TestClient) -> None:
    """Run what is due now; the escalation timers due later stay pending."""
    app = client.app
    for _ in range(100):
        await app[keys.INBOX].drain()
        await app[keys.RUNNER].run_due()
        await app[keys.SLACK].tasks.join()
        due = await app[keys.STORE].next_job_due(app[keys.HANDLERS].kinds)
        quiet = due is None or due > app[keys.CLOCK].now() + 1
        if quiet and not app[keys.RUNNER].busy:  # nothing due, nothing still running
            return
        await asyncio.sleep(0.02)
    raise AssertionError("jobs kept coming")


def signed(body: bytes, secret: str = SECRET, timestamp: float | None = None) -> dict[str, str]:
    ts = str(int(time.time() if timestamp is None else timestamp))
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def command_body(
    text: str,
    fake: FakeSlack,
    *,
    user: str = "U0ALICE",
    name: str = "alice",
    command: str = "/alertpilot",
    rid: str = "r1",
    channel: str = CHANNEL,
    channel_name: str = "alerts",
) -> bytes:
    return urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": "T0FAKE",
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": channel_name,
            "user_id": user,
            "user_name": name,
            "command": command,
            "text": text,
            "api_app_id": "A0APP",
            "is_enterprise_install": "false",
            "response_url": fake.response_url(rid),
            "trigger_id": "1.2.3",
        }
    ).encode()


def action_body(
    action_id: str,
    value: str,
    fake: FakeSlack,
    *,
    user: str = "U0ALICE",
    name: str = "alice",
    rid: str = "b1",
    select: bool = False,
    message_ts: str = "1700000000.000100",
    channel: str = CHANNEL,
    channel_name: str = "alerts",
) -> bytes:
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": "incident",
        "action_ts": "1700000001.000200",
    }
    if select:
        action |= {"type": "static_select", "selected_option": {"value": value}}
    else:
        action |= {"type": "button", "value": value, "text": {"type": "plain_text", "text": "x"}}
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": name, "name": name, "team_id": "T0FAKE"},
        "api_app_id": "A0APP",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "trigger_id": "1.2.3",
        "team": {"id": "T0FAKE", "domain": "fake"},
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": channel_name},
        "message": {"ts": message_ts, "text": "incident"},
        "response_url": fake.response_url(rid),
        "actions": [action],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


async def post_signed(client: TestClient, body: bytes, **kwargs: Any) -> Any:
    return await client.post("/slack/events", data=body, headers=signed(body, **kwargs))


def texts(fake: FakeSlack, rid: str) -> list[str]:
    """What a response_url received (the ephemeral answers), as text."""
    out = []
    for body in fake.responses.get(rid, []):
        out.append(body.get("text", "") if isinstance(body, dict) else str(body))
    return out


def message_text(message: dict[str, Any]) -> str:
    """Everything a message shows: its text and every text inside its blocks."""
    parts = [str(message.get("text", ""))]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    parts.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.get("blocks", []))
    return "\n".join(parts)


def action_ids(message: dict[str, Any]) -> list[str]:
    ids = []
    for block in message.get("blocks", []):
        if block.get("type") == "actions":
            ids += [e.get("action_id") for e in block.get("elements", [])]
    return ids
