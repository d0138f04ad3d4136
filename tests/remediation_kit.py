"""Helpers for the remediation tests: an app with playbooks, alert groups, a receiver."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.clock import Clock
from bot.core.incidents import Event, EventKind, Incident
from bot.playbook.model import Playbook
from bot.playbook.registry import PlaybookSet
from bot.remediation.engine import RemediationEngine
from bot.remediation.records import StepRecord, StepState, steps_of
from bot.store.base import Store
from conftest import make_settings
from stack import LoopbackApp, _Service

STARTS = "2026-05-01T10:00:00Z"
ZERO = "0001-01-01T00:00:00Z"


def group(
    group_labels: Mapping[str, str],
    *,
    labels: Mapping[str, str] | None = None,
    status: str = "firing",
    fingerprint: str = "f0000001",
) -> dict[str, Any]:
    """An Alertmanager v4 payload: one alert, grouped by ``group_labels``."""
    all_labels = {**group_labels, **(labels or {})}
    key = "{}:{" + ",".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}"
    return {
        "version": "4",
        "groupKey": key,
        "status": status,
        "receiver": "bot",
        "groupLabels": dict(group_labels),
        "commonLabels": all_labels,
        "commonAnnotations": {"summary": "test alert"},
        "externalURL": "http://alertmanager.example",
        "alerts": [
            {
                "status": status,
                "labels": all_labels,
                "annotations": {"summary": "test alert"},
                "startsAt": STARTS,
                "endsAt": ZERO if status == "firing" else "2026-05-01T10:30:00Z",
                "generatorURL": "",
                "fingerprint": fingerprint,
            }
        ],
    }


CART, SEARCH = "fa000001", "fa000002"  # the fingerprints of cart_and_search's alerts


def cart_and_search(cart: str, search: str) -> dict[str, Any]:
    """One CacheDown group (grouped by alertname) with an alert for service=cart and one
    for service=search, each ``"firing"`` or ``"resolved"``."""
    labels = {"alertname": "CacheDown"}

    def alert(service: str, status: str, fingerprint: str) -> dict[str, Any]:
        return {
            "status": status,
            "labels": {**labels, "service": service},
            "annotations": {"summary": f"{service} cache down"},
            "startsAt": STARTS,
            "endsAt": ZERO if status == "firing" else "2026-05-01T10:30:00Z",
            "generatorURL": "",
            "fingerprint": fingerprint,
        }

    return {
        "version": "4",
        "groupKey": '{}:{alertname="CacheDown"}',
        "status": "firing" if "firing" in (cart, search) else "resolved",
        "receiver": "bot",
        "groupLabels": dict(labels),
        "commonLabels": dict(labels),
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "alerts": [alert("cart", cart, CART), alert("search", search, SEARCH)],
    }


def playbook(*remediations: dict[str, Any], alertname: str = "CacheDown") -> dict[str, Any]:
    return {
        "name": "cache",
        "match": [f'alertname="{alertname}"'],
        "remediations": list(remediations),
    }


@dataclass
class Harness:
    client: TestClient
    tmp_path: Path

    @property
    def app(self) -> web.Application:
        return self.client.app

    @property
    def store(self) -> Store:
        return self.app[keys.STORE]

    @property
    def engine(self) -> RemediationEngine:
        return self.app[keys.REMEDIATION]

    async def post(self, payload: Mapping[str, Any]) -> None:
        resp = await self.client.post("/alertmanager", json=payload)
        assert resp.status == 200, await resp.text()
        await self.app[keys.INBOX].drain()

    async def fire(self, group_labels: Mapping[str, str], **kwargs: Any) -> int:
        """Post a firing group; return its open incident's id."""
        await self.post(group(group_labels, **kwargs))
        wanted = dict(group_labels)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the background inbox worker may hold the payload
            incidents = await self.store.list_incidents(limit=500)
            found = [i for i in incidents if dict(i.group_labels) == wanted]
            if found:
                return max(i.id for i in found)
            await asyncio.sleep(0.02)
        raise AssertionError(f"no incident for {wanted}")

    async def settle(self) -> None:
        """Run every due job now (for tests that stopped the background runner)."""
        for _ in range(20):
            if not await self.app[keys.RUNNER].run_due():
                return

    async def incident(self, incident_id: int) -> Incident:
        return await self.store.get_incident(incident_id)

    async def step(self, incident_id: int, key: str) -> StepRecord:
        return steps_of(await self.store.get_incident(incident_id, timeline=False))[key]

    async def wait_step(
        self,
        incident_id: int,
        key: str,
        states: Iterable[StepState],
        timeout: float = 15.0,
    ) -> StepRecord:
        wanted = set(states)
        deadline = time.monotonic() + timeout
        last: StepRecord | None = None
        while time.monotonic() < deadline:
            incident = await self.store.get_incident(incident_id, timeline=False)
            last = steps_of(incident).get(key)
            if last is not None and last.state in wanted:
                return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"{key} not in {wanted} within {timeout}s; last: {last!r}")

    async def events(self, incident_id: int, kind: str | None = None) -> list[Event]:
        events = await self.store.events(incident_id)
        return [e for e in events if kind is None or e.kind == kind]

    async def remediation_events(self, incident_id: int, step: str) -> list[Event]:
        return [
            e
            for e in await self.events(incident_id)
            if e.kind in (EventKind.REMEDIATION, EventKind.APPROVAL) and e.data.get("step") == step
        ]


async def start(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    playbooks: list[dict[str, Any]],
    *,
    clock: Clock | None = None,
    background: bool = True,
    **sections: Any,
) -> Harness:
    """An app with these playbooks. ``background=False`` stops the job runner: the test
    runs due jobs itself with ``settle()``."""
    settings = make_settings(tmp_path, **sections)
    app = create_app(settings, clock=clock)
    app[keys.PLAYBOOKS] = PlaybookSet([Playbook.model_validate(p) for p in playbooks])
    client: TestClient = await aiohttp_client(app)
    if not background:
        await app[keys.RUNNER].stop()
    return Harness(client, tmp_path)


@dataclass
class Received:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


class Receiver(LoopbackApp):
    """Records every request; answers ``status``; runs ``on_request`` hooks first."""

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.received: list[Received] = []
        self.on_request: Callable[[Received], None] | None = None
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        item = Received(request.method, request.path, body, dict(request.headers))
        self.received.append(item)
        if self.on_request is not None:
            self.on_request(item)
        return web.json_response({"ok": self.status < 400}, status=self.status)


@dataclass
class RawRequest:
    line: str  # the request line as it came over the socket, e.g. "POST /v1/x HTTP/1.1"
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class RawReceiver(_Service):
    """A bare HTTP/1.1 server on loopback that keeps each request line byte for byte.

    No framework sits between the socket and the record, so nothing is decoded or
    normalised on the way: what is recorded is what a service behind any server would
    be handed. Answers every request 200 ``{"ok": true}``; keeps connections alive.
    """

    def __init__(self) -> None:
        self.received: list[RawRequest] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def lines(self) -> list[str]:
        return [r.line for r in self.received]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for writer in list(self._open):  # kept-alive connections would hold wait_closed
                writer.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            while line := await reader.readline():
                headers: list[tuple[str, str]] = []
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers.append((name.strip(), value.strip()))
                request = RawRequest(line.decode("latin-1").rstrip("\r\n"), headers, b"")
                length = int(request.header("Content-Length") or 0)
                request.body = await reader.readexactly(length) if length else b""
                self.received.append(request)
                answer = b'{"ok": true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()
