"""Slow clients must not lock Alertmanager out (bot/server/connections.py).

The attack as it was tried: 1,100 connections that send part of a request's headers and
never the rest, from a client that needs no credentials, against a server whose process
may open 1,024 files. Before, ``accept`` failed with "Too many open files" and
``POST /alertmanager`` timed out. Each test runs ``alertpilot serve`` as a process and
talks to it over sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import aiohttp

from bot.server.connections import BACKLOG, LISTEN_QUEUE, RESERVED_FILES
from conftest import JSON, payload
from serving import ServeProcess

PARTIAL = b"POST /alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


async def slow_connections(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connections, each with half its headers sent; those the server refused
    to take are left out."""
    writers = []
    for _ in range(count):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            continue
        writer.write(PARTIAL)
        writers.append(writer)
    for writer in writers:
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    return writers


async def deliver(url: str) -> tuple[int, float]:
    """POST the captured alert group on a new connection; the status and seconds taken."""
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(
            f"{url}/alertmanager", data=json.dumps(payload("captured-firing")), headers=JSON
        ) as resp,
    ):
        await resp.read()
        return resp.status, time.monotonic() - started


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def test_a_thousand_slow_connections_do_not_lock_alertmanager_out(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, open_files=(1024, 1024))
    writers: list[asyncio.StreamWriter] = []
    try:
        await server.start()
        writers = await slow_connections(server.port, 1100)
        status, took = await deliver(server.url)
        assert status == 200 and took < 5, (status, took)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.url}/metrics") as resp,
        ):
            text = await resp.text()
        assert metric(text, 'alertpilot_http_connections_closed_total{reason="evicted"}') >= 300, (
            text[:2000]
        )
        assert metric(text, "alertpilot_http_connections") <= 1024 - RESERVED_FILES
    finally:
        for writer in writers:
            writer.close()
        await server.stop()
    log = server.log.read_text()
    assert "open files are limited to 1024 (ulimit -n): server.max_connections lowered" in log
    assert "Too many open files" not in log


async def test_bursts_of_new_connections_never_run_the_server_out_of_files(
    tmp_path: Path,
) -> None:
    """Connections opened all at once, not one after another: the server accepts a whole
    backlog of them before the cap has counted any, and while it closes others to make
    room. Had that run it out of files, ``accept`` would fail and asyncio would accept
    nothing for a second, Alertmanager's next delivery included."""
    server = ServeProcess(tmp_path, open_files=(1024, 1024))
    writers: list[asyncio.StreamWriter] = []
    try:
        await server.start()
        writers = await slow_connections(server.port, 1100)

        async def one() -> None:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(PARTIAL)
                writers.append(writer)

        for _ in range(3):
            await asyncio.gather(*(one() for _ in range(400)))
            status, took = await deliver(server.url)
            assert status == 200 and took < 1, (status, took)
    finally:
        for writer in writers:
            writer.close()
        await server.stop()
    log = server.log.read_text()
    assert "Too many open files" not in log and "out of system resource" not in log


async def test_the_open_files_limit_is_raised_at_start(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, open_files=(512, 4096))
    try:
        await server.start()
        assert server.proc is not None
        limits = await asyncio.to_thread(Path(f"/proc/{server.proc.pid}/limits").read_text)
        [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
        assert line.split()[3:5] == ["4096", "4096"], line
    finally:
        await server.stop()


async def test_a_request_whose_headers_never_end_is_closed(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, {"server": {"idle_timeout": "1s", "body_timeout": "1s"}})
    try:
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(PARTIAL)
        await writer.drain()
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing said
        assert 0.5 < time.monotonic() - started < 5
        writer.close()

        # headers complete, the body never all there: 408
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(PARTIAL + b'Content-Length: 1000\r\n\r\n{"version": ')
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)  # the answer, then it lingers
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b'"error": "request_timeout"' in answer
        writer.close()
        status, _ = await deliver(server.url)
        assert status == 200
    finally:
        await server.stop()


async def test_the_kernel_queues_a_flood_of_new_connections_for_the_server(
    tmp_path: Path,
) -> None:
    """A full accept queue drops new connections' SYNs, and the client tries again only
    a second later: under a flood of connections, Alertmanager's delivery waits that
    second. ``serve`` listens with a queue of ``LISTEN_QUEUE``, not asyncio's 128: with
    the server stopped (SIGSTOP), that many connections still complete their handshake,
    and are served once it goes on."""
    server = ServeProcess(tmp_path, open_files=(1024, 1024))
    opened: list[asyncio.StreamWriter] = []
    try:
        await server.start()
        wanted = min(LISTEN_QUEUE, somaxconn()) - 20
        assert wanted > 2 * BACKLOG
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:

            async def one() -> None:
                with contextlib.suppress(OSError, TimeoutError):
                    _, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", server.port), 0.5
                    )
                    opened.append(writer)

            await asyncio.gather(*(one() for _ in range(wanted)))
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert len(opened) == wanted
        for writer in opened:
            writer.close()
        status, took = await deliver(server.url)
        assert status == 200 and took < 1, (status, took)
    finally:
        await server.stop()


def somaxconn() -> int:
    """The kernel's cap on a listening socket's queue."""
    return int(Path("/proc/sys/net/core/somaxconn").read_text())
