"""Socket Mode, for a workspace that cannot reach alertpilot over HTTPS: with
``slack.app_token`` set, bolt's ``AsyncSocketModeHandler`` opens a WebSocket to Slack
(``apps.connections.open`` with the app-level token) and the same listeners answer.

Connecting runs in the background and keeps retrying, so a Slack outage at start-up
delays commands and buttons without stopping alertpilot from starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class SocketMode:
    def __init__(
        self, bolt: AsyncApp, app_token: str, client: AsyncWebClient, *, ping_interval: float = 10
    ) -> None:
        self.handler = AsyncSocketModeHandler(
            bolt, app_token, web_client=client, ping_interval=ping_interval
        )
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect(), name="slack-socket-mode")

    async def _connect(self) -> None:
        await self.handler.connect_async()  # type: ignore[no-untyped-call]  # retries until up
        log.info("Slack Socket Mode connected")

    async def connected(self) -> bool:
        return bool(await self.handler.client.is_connected())

    async def close(self) -> None:
        client = self.handler.client
        await self.handler.close_async()  # type: ignore[no-untyped-call]
        tasks = [
            t
            for t in (
                self._connecting,
                client.message_processor,
                client.current_session_monitor,
                client.message_receiver,
            )
            if t is not None
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        log.info("Slack Socket Mode closed")
