"""The server's connections: how many stay open, how long a request may take to arrive,
and how many files the process may open.

A client that opens connections and never finishes a request's headers (slowloris)
costs nothing to send and, unchecked, holds a file descriptor per connection until the
process can accept no more: Alertmanager's next delivery then times out. Four limits,
each of which alone is not enough:

- **Time to a request.** A connection that has not sent a complete request's headers
  ``server.idle_timeout`` after it opened (or after its last answer) is closed; aiohttp's
  keep-alive timer does this when it is given that value. A body that has not all
  arrived ``server.body_timeout`` after the handler asked for it is answered 408.
- **A cap on open connections,** ``server.max_connections``. At the cap, a connection
  with no request in progress is closed to make room: the oldest that has never carried
  a whole request (a slow client's never does), else the oldest idle one (a keep-alive
  connection between requests; its client opens another). Only when every open
  connection is serving a request is the new one closed.
- **Open files.** At start the soft limit on open files is raised to the hard one, and
  the cap is lowered (with a warning) if even that leaves too few for the cap, the store
  and outbound connections.
- **A reverse proxy** in front buffers requests and answers slow clients itself; the
  README says how.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bot.errors import RequestRefused
from bot.runtime.metrics import Metrics

log = logging.getLogger(__name__)

# The listening socket's backlog (aiohttp's default). asyncio accepts up to that many
# connections each time the socket is ready, and each counts against the cap only when
# it is made, a turn of the loop later; the connections closed to make room for them let
# go of their files a turn after that. So a burst of new connections holds up to two
# backlogs' worth of files beyond the cap, and with too few left ``accept`` fails with
# "Too many open files", after which asyncio accepts nothing for a whole second.
BACKLOG = 128
# How many connections the kernel holds, handshake done, for the server to accept. Past
# it, it drops new connections' SYNs, and a client tries again only after a second (then
# three, then seven): under a flood of new connections, Alertmanager's next delivery
# among them. asyncio listens with ``BACKLOG``, the number of connections it accepts at
# a time; the queue is then deepened to this (the kernel caps it at net.core.somaxconn,
# 4096 by default). Connections waiting in it hold no file of this process.
LISTEN_QUEUE = 1024
# Files the process needs besides its inbound connections: the store and inbox files,
# the inbox writer's pipes, outbound connections (Prometheus, Slack, PagerDuty, LLM);
# and those of a burst of connections the cap has not counted yet.
RESERVED_FILES = 256 + 2 * BACKLOG


class Connections:
    """The open connections of one server, oldest first, and which of them are serving
    a request. ``attach`` puts the cap on a running server; without it (a test client)
    it only keeps count."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.metrics = metrics
        self._open: dict[RequestHandler, asyncio.Transport] = {}  # in the order they came
        # Connections serving a request, and those that have carried one; kept by
        # ``bot.server.routes.guarded``, inline, since it runs for every request.
        self.serving: set[Any] = set()
        self.used: set[Any] = set()

    def attach(self, server: web.Server) -> None:
        """Watch ``server``'s connections as they open and close."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._opened(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            lost(handler, exc)
            self._open.pop(handler, None)
            self.serving.discard(handler)
            self.used.discard(handler)
            self.metrics.connections_open.set(len(self._open))

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def _opened(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if len(self._open) >= self.limit:
            serving, used = self.serving, self.used
            idle = next((h for h in self._open if h not in used), None)
            if idle is None:
                idle = next((h for h in self._open if h not in serving), None)
            if idle is None:  # every one is serving a request: this one waits its turn
                self.metrics.connections_closed.labels("refused").inc()
                transport.close()
                return
            self.metrics.connections_closed.labels("evicted").inc()
            self._open.pop(idle).close()
        self._open[handler] = transport
        self.metrics.connections_open.set(len(self._open))


def deepen_listen_queue(server: asyncio.AbstractServer | None, queue: int = LISTEN_QUEUE) -> None:
    """Let the kernel queue ``queue`` connections on ``server``'s listening sockets,
    leaving asyncio's accept loop to take ``BACKLOG`` at a time."""
    for sock in getattr(server, "sockets", ()):
        listening = sock.dup()  # the same socket: asyncio's wrapper has no listen()
        try:
            listening.listen(queue)
        finally:
            listening.close()


async def read_body(request: web.Request, timeout: float) -> bytes:
    """The request's body, or 408 if it has not all arrived within ``timeout``."""
    if request.content.is_eof():  # it came with the headers: nothing to wait for
        return await request.read()
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestRefused(
            408, "request_timeout", f"the body did not arrive within {timeout:g}s"
        ) from None


def raise_open_files(wanted: int) -> int:
    """Raise the soft limit on open files to the hard limit; return how many inbound
    connections it leaves room for (``wanted`` at most)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + RESERVED_FILES)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d: %s", soft, exc)
    room = soft - RESERVED_FILES
    if room < wanted:
        log.warning(
            "open files are limited to %d (ulimit -n): server.max_connections lowered from "
            "%d to %d",
            soft,
            wanted,
            max(room, 1),
        )
        return max(room, 1)
    return wanted
