"""The inbox's writer: webhook payloads are committed by a child process.

Every acknowledged webhook waits for one durable commit (``synchronous=FULL``, an fsync).
Done on a thread of the serving process, each commit hands the interpreter lock back and
forth with the event loop that is parsing the next requests, and both wait on each
other. In a process of its own the writer holds its own interpreter lock: the loop sends
a batch down a pipe, goes on serving, and reads the row ids back when they are on disk.

The child (``bot.store.inbox_child``) speaks length-prefixed ``marshal`` frames over
stdin/stdout, one reply per request, in order. It imports nothing but the standard
library, ignores SIGINT (a Ctrl-C in a terminal reaches the whole process group; the
parent decides when writing stops) and exits when its stdin closes, which is also what
happens when the parent dies, even by SIGKILL. A child that dies is replaced on the next
commit; the requests it held fail with ``StoreUnavailable``, so Alertmanager retries
them and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import marshal
import sqlite3
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.store import inbox_child
from bot.store.inbox_child import HEADER, InboxRow, insert_rows, pack, unpack

__all__ = ["InboxRow", "InboxWriter", "WriterError", "insert_rows", "pack", "unpack"]

PIPE_SIZE = 1 << 20  # Linux's default limit for an unprivileged process
CHILD = str(Path(inbox_child.__file__).resolve())


class WriterError(Exception):
    """The child could not do what was asked: an SQLite error (``error`` is rebuilt
    from the child's, with its extended code) or the child is gone (``error`` None)."""

    def __init__(self, message: str, error: sqlite3.Error | None = None) -> None:
        super().__init__(message)
        self.error = error


Settle = Callable[["asyncio.Future[Any]"], None]


class _Child(asyncio.SubprocessProtocol):
    """One child process: frames go out on its stdin; each reply read from its stdout
    goes to the oldest waiting request; when it exits, every request it held fails."""

    def __init__(self) -> None:
        self.transport: asyncio.SubprocessTransport | None = None
        # A request's future, and what to call as soon as it is settled, if anything.
        self.waiting: deque[tuple[asyncio.Future[Any], Settle | None]] = deque()
        self.exited = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        # The child's first frame, sent once it is ready, before any request.
        self.ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((self.ready, None))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport
        stdin = transport.get_pipe_transport(0)
        pipe = None if stdin is None else stdin.get_extra_info("pipe")
        if pipe is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
            # A batch of payloads in one write, not 64 KiB at a time with a wake-up each.
            with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)

    def send(self, request: tuple[Any, ...], settled: Settle | None = None) -> asyncio.Future[Any]:
        """Write ``request``; its future gets the reply. ``settled`` is called with it
        right then, from the read of the reply: a future's own callbacks would wait
        for the next turn of the event loop."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.exited.done() or self.transport is None:
            future.set_exception(WriterError("the inbox writer has exited"))
            if settled is not None:
                future.add_done_callback(settled)
            return future
        data = marshal.dumps(request)
        stdin = self.transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        self.waiting.append((future, settled))  # replies come in the order frames are written
        stdin.writelines((HEADER.pack(len(data)), data))
        return future

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        buffer = self._buffer
        buffer += data if isinstance(data, bytes) else data.encode()
        while len(buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer)
            if len(buffer) < HEADER.size + size:
                return
            reply = marshal.loads(bytes(buffer[HEADER.size : HEADER.size + size]))  # noqa: S302
            del buffer[: HEADER.size + size]
            future, settled = self.waiting.popleft()
            if not future.done():
                future.set_result(reply)
                if settled is not None:
                    settled(future)

    def process_exited(self) -> None:
        code = None if self.transport is None else self.transport.get_returncode()
        while self.waiting:
            future, settled = self.waiting.popleft()
            if not future.done():
                future.set_exception(WriterError(f"the inbox writer exited (code {code})"))
                if settled is not None:
                    settled(future)
        if not self.exited.done():
            self.exited.set_result(code)

    def close_input(self) -> None:
        if self.transport is not None:
            stdin = self.transport.get_pipe_transport(0)
            if stdin is not None:
                stdin.close()

    def kill(self) -> None:
        if self.transport is not None and not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                self.transport.kill()


class InboxWriter:
    """Parent side: one child at a time. Requests are written as they come and answered
    in order, so the next batch can wait in the pipe while the child commits this one."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._child: _Child | None = None
        self._spawning = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        child = self._child
        return None if child is None or child.transport is None else child.transport.get_pid()

    async def start(self) -> None:
        await self._running()

    async def insert(self, rows: list[InboxRow]) -> list[int]:
        ids: list[int] = await self._call(("insert", rows))
        return ids

    def send_insert(self, rows: list[InboxRow], settled: Settle) -> asyncio.Future[Any] | None:
        """``insert`` without a coroutine, for a writer already running: the future of
        its raw reply (read it with ``result``), passed to ``settled`` as soon as it is
        read; or None when no child is running."""
        child = self._child
        if child is None or child.exited.done() or not child.ready.done():
            return None  # not one that has said it is ready: ``insert`` waits for it, in order
        return child.send(("insert", rows), settled)

    async def max_pages(self, pages: int) -> int:
        """Cap the inbox's file at ``pages`` pages (0: the pages it has now) on the
        writer's connection (SQLite's ``max_page_count`` is per connection); return the
        cap in force."""
        return int(await self._call(("max_pages", pages)))

    async def ping(self) -> None:
        """The writer answers, and can take the inbox's write lock."""
        await self._call(("ping",))

    async def close(self) -> None:
        """Let the child answer what it holds, then stop it."""
        async with self._spawning:
            child, self._child = self._child, None
            if child is None:
                return
            child.close_input()
            try:
                await asyncio.wait_for(asyncio.shield(child.exited), 10)
            except TimeoutError:
                child.kill()
                await child.exited
            if child.transport is not None:
                child.transport.close()

    async def _running(self) -> _Child:
        child = self._child
        if child is not None and not child.exited.done() and child.ready.done():
            return child
        # Starting one, or one is starting: wait in line, so batches keep their order.
        async with self._spawning:
            child = self._child
            if child is None or child.exited.done():
                if child is not None and child.transport is not None:
                    child.transport.close()
                _, child = await asyncio.get_running_loop().subprocess_exec(
                    _Child,
                    sys.executable,
                    CHILD,
                    self.path,
                    str(self.busy_timeout),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=None,
                    start_new_session=True,  # signals to the terminal's group do not reach it
                )
                self._child = child
                await self._reply(child.ready)
            return child

    async def _call(self, request: tuple[Any, ...]) -> Any:
        child = await self._running()
        return await self._reply(child.send(request))

    @classmethod
    async def _reply(cls, future: asyncio.Future[Any]) -> Any:
        return cls.result(await future)

    @staticmethod
    def result(reply: tuple[Any, ...]) -> Any:
        """What the child answered, or its error raised as ``WriterError``."""
        if reply[0] == "ok":
            return reply[1]
        _, kind, code, message = reply
        error: sqlite3.Error = getattr(sqlite3, kind, sqlite3.DatabaseError)(message)
        error.sqlite_errorcode = code
        raise WriterError(message, error)
