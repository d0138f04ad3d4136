"""Helpers for the fault tests: timed acks, what an operator scrapes, faults on the wire.

``FaultProxy`` sits on a real TCP port in front of a real service (Prometheus,
Alertmanager) and breaks the path the way networks and restarts do: ``down()`` stops
listening (connection refused), ``stall()`` accepts and never answers, ``cut_reply()``
passes the request through and drops the answer (the service acted, the caller never
hears of it). ``up()`` restores it on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bot import keys
from conftest import payload

ACK_BUDGET = 1.0  # seconds: the goal for the slowest ack while everything else hangs

Mode = Literal["up", "stall", "cut_reply"]


def alert_group(n: int, *, status: str = "firing") -> dict[str, Any]:
    """The captured firing payload as alert group ``n`` (its own incident), one alert."""
    body = copy.deepcopy(payload("captured-firing"))
    name = f"Fault{n:03d}"
    body["groupKey"] = f'{{}}:{{alertname="{name}"}}'
    body["groupLabels"] = {"alertname": name}
    body["commonLabels"] = {**body["commonLabels"], "alertname": name}
    body["status"] = status
    alert = body["alerts"][0]
    alert["labels"] = {**alert["labels"], "alertname": name}
    alert["fingerprint"] = f"{n:016x}"
    alert["status"] = status
    if status == "resolved":
        alert["endsAt"] = "2026-05-01T10:30:00Z"
    body["alerts"] = [alert]
    return body


async def timed_post(client: TestClient, body: dict[str, Any]) -> tuple[int, float]:
    """POST /alertmanager; the status and how long the answer took (wall clock)."""
    started = time.monotonic()
    resp = await client.post("/alertmanager", json=body)
    await resp.read()
    return resp.status, time.monotonic() - started


async def ack(client: TestClient, body: dict[str, Any]) -> float:
    """POST /alertmanager, which must answer 200 within ``ACK_BUDGET``; the time taken."""
    status, took = await timed_post(client, body)
    assert status == 200, status
    assert took < ACK_BUDGET, f"ack took {took:.3f}s"
    return took


class Scrape:
    """One ``GET /metrics``, as an operator's Prometheus sees it."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (0 when absent, as PromQL would show)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample whose labels include these."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)


async def scrape(client: TestClient) -> Scrape:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return Scrape(await resp.text())


async def readyz(client: TestClient) -> tuple[int, dict[str, Any]]:
    resp = await client.get("/readyz")
    body: dict[str, Any] = await resp.json()
    return resp.status, body


async def until(
    probe: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``probe`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def quiet(client: TestClient, timeout: float = 10.0) -> None:
    """Process the inbox and run due jobs until none is due or running.

    The app's own job runner stays on (``/readyz`` checks it), so on a ManualClock a job
    it claimed may still be in flight: wait for that too.
    """
    app = client.app
    path, clock = app[keys.SETTINGS].store.sqlite_path, app[keys.CLOCK]
    sql = (  # what the runner would claim now (jobs of a kind run in order per incident)
        "SELECT COUNT(*) FROM jobs j WHERE status = 'running' OR (status = 'pending'"
        " AND due_at <= ? AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.incident_id ="
        " j.incident_id AND e.kind = j.kind AND e.id < j.id"
        " AND e.status IN ('pending', 'running')))"
    )
    deadline = time.monotonic() + timeout
    while True:
        await app[keys.INBOX].drain()
        await app[keys.RUNNER].run_due()
        slack = app.get(keys.SLACK)
        if slack is not None:
            await slack.tasks.join()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            busy = conn.execute(sql, (clock.now(),)).fetchone()[0]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{busy} job(s) still due or running after {timeout}s")
        await asyncio.sleep(0.01)


# the store --------------------------------------------------------------------------


@contextlib.contextmanager
def exclusive_lock(path: str) -> Iterator[sqlite3.Connection]:
    """Another process's write transaction on the store's file (``BEGIN EXCLUSIVE``)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def limit_pages(client: TestClient, pages: int | None) -> int:
    """Cap the store's database at ``pages`` pages (None: the pages it has now); return
    the cap. See test_faults_store for why."""
    return await client.app[keys.STORE].set_max_pages(pages)


# the network ------------------------------------------------------------------------


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target`` (host:port); see the module doc."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.mode: Mode = "up"
        self.port = 0
        self.connections = 0
        self.cut = 0  # replies dropped by cut_reply
        self._cuts_left = 0
        self._server: asyncio.Server | None = None
        self._held: socket.socket | None = None  # the port, kept while down
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        await self.up()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.down()
        if self._held is not None:
            self._held.close()
            self._held = None

    async def up(self, mode: Mode = "up") -> None:
        self.mode = mode
        if self._server is None:
            if self._held is not None:
                self._held.close()
                self._held = None
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = int(self._server.sockets[0].getsockname()[1])

    def stall(self) -> None:
        self.mode = "stall"

    def cut_reply(self, times: int = 1) -> None:
        """Drop the next ``times`` replies (the requests get through), then pass all."""
        self.mode, self._cuts_left = "cut_reply", times

    async def down(self) -> None:
        """Stop listening and drop every open connection: the service is gone."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # Keep the port bound but not listening: connecting is refused, and no other
            # server started meanwhile (the bot under test, say) can be handed this port.
            self._held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._held.bind(("127.0.0.1", self.port))
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.mode == "stall":
                await reader.read()  # hold the connection open; answer nothing
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            try:
                await asyncio.gather(
                    self._pipe(reader, up_writer), self._pipe(up_reader, writer, reply=True)
                )
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, reply: bool = False
    ) -> None:
        while chunk := await reader.read(65536):
            if reply and self.mode == "cut_reply":
                self.cut += 1
                self._cuts_left -= 1
                if self._cuts_left <= 0:
                    self.mode = "up"
                raise ConnectionResetError("reply cut")  # the service answered; drop it
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
