"""An open-loop HTTP/1.1 load generator with little overhead of its own.

Requests go out at fixed times whatever the server does (no coordinated omission), each
on a keep-alive connection that is free at that moment (a new one when none is). Each
latency runs from the request's scheduled time to the last byte of its response.

The client is plain asyncio protocols writing prepared request bytes and reading the
status line and Content-Length of each response, so what it adds to a latency is small
next to what an HTTP client library adds (aiohttp's client costs more than the server
handler being measured). Its own floor is measured the same way, against a bare handler.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._done: asyncio.Future[int] | None = None
        self._need = -1  # bytes of the whole response, once its headers are in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def request(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self._done = asyncio.get_running_loop().create_future()
        self._need = -1
        self.transport.write(data)
        return self._done

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if self._need < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name == "content-length":
                    length = int(value)
            self._need = end + 4 + length
        if len(buffer) >= self._need:
            status = int(bytes(buffer[9:12]))
            del buffer[: self._need]
            self._need = -1
            if self._done is not None and not self._done.done():
                self._done.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError("connection closed mid-response"))
        if not self.lost.done():
            self.lost.set_result(None)


async def open_loop(url: str, path: str, bodies: list[bytes], rate: float) -> list[float]:
    """POST each of ``bodies`` (JSON) to ``url`` + ``path``, ``rate`` per second; return
    the latencies in seconds. A response other than 200 raises.

    The send times are kept by a thread of their own: the event loop's timers wake up to
    a millisecond late (epoll counts whole milliseconds), which would be measured as the
    server's latency. The thread sleeps to just before each send time, waits out the last
    0.3 ms and hands the request to the loop."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []
    latencies: list[float] = []

    async def send(body: bytes, scheduled: float) -> None:
        conn = idle.pop() if idle else (await loop.create_connection(_Connection, host, port))[1]
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        status = await conn.request(head.encode() + body)
        latencies.append(time.perf_counter() - scheduled)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        idle.append(conn)

    tasks: list[asyncio.Task[None]] = []
    all_sent = loop.create_future()

    def fire(body: bytes, scheduled: float, last: bool) -> None:
        tasks.append(loop.create_task(send(body, scheduled)))
        if last:
            all_sent.set_result(None)

    start = time.perf_counter() + 0.2
    ticker = threading.Thread(target=_tick, args=(loop, fire, bodies, start, rate), daemon=True)
    ticker.start()
    await all_sent
    try:
        await asyncio.gather(*tasks)
    finally:
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()
    return latencies


SPIN = 0.0003  # the last moments before a send time are waited out, not slept


def _tick(
    loop: asyncio.AbstractEventLoop,
    fire: Callable[[bytes, float, bool], None],
    bodies: list[bytes],
    start: float,
    rate: float,
) -> None:
    last = len(bodies) - 1
    for i, body in enumerate(bodies):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > SPIN:
            time.sleep(delay - SPIN)
        while time.perf_counter() < scheduled:
            pass
        loop.call_soon_threadsafe(fire, body, scheduled, i == last)
