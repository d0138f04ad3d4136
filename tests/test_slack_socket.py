"""Socket Mode with ``slack.app_token``: apps.connections.open, a WebSocket, envelopes acked.

The WebSocket server is a loopback stand-in for Slack's: it says hello, sends envelopes
the way Slack does, and records the acks. What cannot be tested offline is Slack's own
server (its reconnect requests, ``disconnect`` messages and rate limits).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from bot import keys
from bot.core.incidents import Status
from bot.slack.socket import SocketMode
from conftest import payload
from fakes import FakeSlack
from fakes._base import record_of
from slackkit import settle, slack_settings, start

APP_TOKEN = "xapp-1-A0APP-fake"


class SocketSlack(FakeSlack):
    def __init__(self) -> None:
        super().__init__()
        self.acks: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self.ws: web.WebSocketResponse | None = None

    def _setup_routes(self, router: web.UrlDispatcher) -> None:
        super()._setup_routes(router)
        router.add_get("/link", self._socket)

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["method"] == "apps.connections.open":
            record_of(request)
            if request.headers.get("Authorization") != f"Bearer {APP_TOKEN}":
                return web.json_response({"ok": False, "error": "invalid_auth"})
            return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"})
        return await super()._api(request)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1})
        self.ws = ws
        self.connected.set()
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self.acks.append(json.loads(message.data))
        return ws

    async def envelope(self, envelope_id: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.ws is not None
        await self.ws.send_json(
            {"envelope_id": envelope_id, "type": kind, "payload": body,
             "accepts_response_payload": True}
        )  # fmt: skip
        for _ in range(200):
            for ack in self.acks:
                if ack.get("envelope_id") == envelope_id:
                    return ack
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no ack for {envelope_id}; got {self.acks}")


def command(text: str, fake: FakeSlack, rid: str) -> dict[str, Any]:
    return {
        "token": "x", "team_id": "T0FAKE", "team_domain": "fake", "channel_id": "C0ALERTS",
        "channel_name": "alerts", "user_id": "U0ALICE", "user_name": "alice",
        "command": "/alertpilot", "text": text, "api_app_id": "A0APP",
        "response_url": fake.response_url(rid), "trigger_id": "1.2.3",
    }  # fmt: skip


async def test_socket_mode_answers_commands_over_the_websocket(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    async with SocketSlack() as fake:
        settings = slack_settings(tmp_path, fake, app_token=APP_TOKEN, graphs=False)
        client = await start(aiohttp_client, settings)
        state = client.app[keys.SLACK]
        assert isinstance(state.socket, SocketMode)
        await asyncio.wait_for(fake.connected.wait(), 15)
        assert await state.socket.connected()
        await client.post("/alertmanager", json=payload("captured-firing"))
        await settle(client)

        ack = await fake.envelope("e1", "slash_commands", command("help", fake, "r1"))
        assert "`/alertpilot ack ID`" in ack["payload"]["text"]
        await fake.envelope("e2", "slash_commands", command("ack 1", fake, "r2"))
        await settle(client)
        assert (await client.app[keys.STORE].get_incident(1)).status is Status.ACKNOWLEDGED
        assert fake.responses["r2"][0]["text"] == ":eyes: You acknowledged #1."
        opened = [r for r in fake.requests if r.path == "/api/apps.connections.open"]
        assert len(opened) == 1
        await client.close()
        assert fake.ws is not None
        for _ in range(100):
            if fake.ws.closed:
                break
            await asyncio.sleep(0.02)
        assert fake.ws.closed  # the app closed its socket on shutdown


async def test_without_app_token_there_is_no_socket(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    client = await start(aiohttp_client, slack_settings(tmp_path, fake_slack))
    assert client.app[keys.SLACK].socket is None
