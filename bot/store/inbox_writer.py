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
import functools
import logging
import marshal
import sqlite3
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bot.errors import StoreError, StoreUnavailable
from bot.store import inbox_child
from bot.store.inbox_child import HEADER, InboxRow, insert_rows, pack, unpack

__all__ = [
    "InboxBatches",
    "InboxRow",
    "InboxWriter",
    "PostgresInboxWriter",
    "WriterError",
    "insert_rows",
    "pack",
    "store_error",
    "unpack",
]

log = logging.getLogger(__name__)

PIPE_SIZE = 1 << 20  # Linux's default limit for an unprivileged process
CHILD = str(Path(inbox_child.__file__).resolve())
PG_CHILD = str(Path(CHILD).with_name("inbox_child_pg.py"))
INBOX_CHUNK = 500  # rows per INSERT: 2,500 parameters, far below SQLite's limit
SEND_AT = 4  # payloads sent together while an inbox batch is out (see InboxBatches)
# A payload waiting for its commit: source, body, received at, result, its request's future.
PendingPayload = tuple[str, str, float, str | None, "asyncio.Future[int]"]


class WriterError(Exception):
    """The child could not do what was asked: a database error (``error`` is rebuilt
    from the child's as ``sqlite3``'s class of that name, with SQLite's extended code;
    PostgreSQL's child says OperationalError for a lost or refused connection) or the
    child is gone (``error`` None)."""

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
        self.waiting.append((future, settled))  # replies come in the order frames are written
        self.write(request)
        return future

    def write(self, request: tuple[Any, ...]) -> None:
        """One frame down the child's stdin (``send`` waits for its reply; the PostgreSQL
        child's settings get none of their own: its ready frame answers them)."""
        assert self.transport is not None
        data = marshal.dumps(request)
        stdin = self.transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        stdin.writelines((HEADER.pack(len(data)), data))

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
    in order, so the next batch can wait in the pipe while the child commits this one.
    This one commits to SQLite's inbox file at ``path``; ``PostgresInboxWriter`` to a
    PostgreSQL database."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self._set_child([sys.executable, CHILD, path, str(busy_timeout)])

    def _set_child(self, argv: list[str], hello: tuple[Any, ...] | None = None) -> None:
        """How a child is started: its command line, and a first frame it reads before it
        says it is ready (None: none)."""
        self._argv = argv
        self._hello = hello
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
                    *self._argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=None,
                    start_new_session=True,  # signals to the terminal's group do not reach it
                )
                self._child = child
                if self._hello is not None:
                    child.write(self._hello)
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


class PostgresInboxWriter(InboxWriter):
    """The inbox's writer for PostgreSQL: a child (``bot.store.inbox_child_pg``) with one
    connection of its own, committing batches of payloads as the SQLite one does.

    On the serving process's event loop, a commit through the async driver waited for
    several turns of that loop (the statement out, the answer in, the pooled connection
    back), and under a steady stream of alerts each turn also ran the jobs' store calls:
    acks waited milliseconds on work that was not theirs. The child's answer is one read
    on the loop. The database's address goes to the child on its stdin, never on its
    command line, where every user of the machine could read its password."""

    def __init__(self, url: str, connect_timeout: float) -> None:
        self._set_child([sys.executable, PG_CHILD], ("connect", url, connect_timeout))


class InboxBatches:
    """Group commit of webhook payloads through a writer child (``InboxWriter``), for
    either store: a payload goes to the writer at once when no batch is out; while one
    is, they go ``SEND_AT`` at a time, and the rest as soon as one comes back. The
    writer commits every batch waiting for it in one transaction.

    Nothing waits for a timer or a turn of the event loop: under load each turn parses
    every request that came in, and a commit that waited for the next turn waited for
    all of them, with the loop idle meanwhile. Sent a few at a time, most of a turn's
    payloads are on disk by the time it ends.

    ``fallback`` commits rows when there is no writer (SQLite in memory); ``signal`` is
    set when rows to process are committed; ``outcome`` hears of each batch's result
    (None: committed)."""

    def __init__(
        self,
        writer: Callable[[], InboxWriter | None],
        fallback: Callable[[list[InboxRow]], Awaitable[list[int]]],
        *,
        signal: asyncio.Event,
        outcome: Callable[[StoreError | None], None] = lambda error: None,
    ) -> None:
        self._writer = writer
        self._fallback = fallback
        self._signal = signal
        self._outcome = outcome
        self._pending: list[PendingPayload] = []
        self._batches: set[asyncio.Future[Any]] = set()  # batches out
        self._loop: asyncio.AbstractEventLoop | None = None  # the one the first add ran on

    def add(self, source: str, body: str, at: float, result: str | None) -> asyncio.Future[int]:
        """Commit one payload (processed at once if it has a ``result``): its row id, once
        committed. A future, not a coroutine: an ack's await reaches it without two more
        coroutines to step through on the way in and out."""
        loop = self._loop
        if loop is None or loop.is_closed():  # asking asyncio for it is a system call
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((source, body, at, result, future))
        if not self._batches or len(self._pending) >= SEND_AT:
            self._send_pending()
        return future

    async def close(self) -> None:
        """Wait for the batches out (each settles its requests); cancel none."""
        while self._batches:
            await asyncio.wait(set(self._batches))

    def _send_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:INBOX_CHUNK], self._pending[INBOX_CHUNK:]
            rows = [
                (source, body, at, None if result is None else at, result)
                for source, body, at, result, _ in batch
            ]
            # With the writer running, the batch goes down its pipe now and the reply
            # settles it as soon as it is read: no task, no coroutine and no callback
            # scheduled per batch. Otherwise the slow path starts the writer first.
            writer = self._writer()
            try:
                sent = (
                    None
                    if writer is None
                    else writer.send_insert(
                        rows, functools.partial(self._committed, batch, rows, True)
                    )
                )
            except Exception as exc:  # a bug in sending: these requests fail, not hang
                log.exception("store: an inbox batch could not be sent to the writer")
                _fail(batch, StoreUnavailable(f"store cannot commit: {exc}"))
                continue
            if sent is None:
                sent = asyncio.ensure_future(self._commit(writer, rows))
                sent.add_done_callback(functools.partial(self._committed, batch, rows, False))
            self._batches.add(sent)

    async def _commit(self, writer: InboxWriter | None, rows: list[InboxRow]) -> list[int]:
        if writer is None:
            return await self._fallback(rows)
        try:
            return await writer.insert(rows)
        except WriterError as exc:
            raise store_error(exc) from exc.error

    def _committed(
        self,
        batch: list[PendingPayload],
        rows: list[InboxRow],
        raw: bool,
        sent: asyncio.Future[Any],
    ) -> None:
        """Settle a batch's requests from the writer's answer, and send what is pending.
        Whatever went wrong, each request gets an answer: a webhook waiting on its
        commit never hangs."""
        self._batches.discard(sent)
        try:
            ids = self._ids(batch, raw, sent)
            if ids is None:
                return
            for (*_, future), row_id in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(row_id)
            if any(row[4] is None for row in rows):
                self._signal.set()
        finally:
            if self._pending:
                self._send_pending()

    def _ids(
        self, batch: list[PendingPayload], raw: bool, sent: asyncio.Future[Any]
    ) -> list[int] | None:
        """The ids the writer answered for ``batch``; or None, its requests failed."""
        try:
            try:
                ids: list[int] = InboxWriter.result(sent.result()) if raw else sent.result()
            except WriterError as exc:
                raise store_error(exc) from exc.error
            if len(ids) != len(batch):
                raise StoreError(f"the writer answered {len(ids)} ids for {len(batch)} rows")
        except StoreError as exc:
            self._outcome(exc)
            _fail(batch, StoreUnavailable(str(exc)))
            return None
        except BaseException as exc:  # cancelled at shutdown, or a bug
            _fail(batch, StoreUnavailable(f"store cannot commit: {exc!r}"))
            if not isinstance(exc, Exception | asyncio.CancelledError):
                raise
            return None
        self._outcome(None)
        return ids


def store_error(exc: WriterError) -> StoreError:
    """The inbox writer's failure as the store's: unavailable (locked, full, the
    connection lost, the writer gone) or an error."""
    if exc.error is None or isinstance(exc.error, sqlite3.OperationalError):
        return StoreUnavailable(f"store cannot commit: {exc}")
    return StoreError(f"store error: {exc}")


def _fail(batch: Sequence[PendingPayload], error: StoreError) -> None:
    for *_, future in batch:
        if not future.done():
            future.set_exception(error)
