"""The inbox writer's child process (see ``bot.store.inbox_writer``).

Run by path, not as part of the package, and importing only the standard library, so
it starts quickly and stays small: it commits batches of webhook payloads and answers
with their row ids, one length-prefixed ``marshal`` frame per request and reply.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import select
import signal
import sqlite3
import struct
import sys
import time
from types import TracebackType
from typing import Any

HEADER = struct.Struct(">I")

InboxRow = tuple[str, str, float, float | None, str | None]  # source, body, at, processed, result


def insert_rows(conn: sqlite3.Connection, rows: list[InboxRow]) -> list[int]:
    """One INSERT statement for all ``rows``: on an autocommit connection that is one
    transaction in one call into SQLite. There is one writer, so the rowids are
    consecutive."""
    values = ",".join(["(?,?,?,?,?)"] * len(rows))
    cursor = conn.execute(
        f"INSERT INTO inbox (source, body, received_at, processed_at, result) VALUES {values}",  # noqa: S608
        [value for row in rows for value in row],
    )
    last = cursor.lastrowid
    if last is None:  # pragma: no cover - an INSERT always sets it
        raise sqlite3.DatabaseError("inbox insert returned no rowid")
    return list(range(last - len(rows) + 1, last + 1))


class WriteLock:
    """One write transaction at a time on the inbox's file, across the processes that
    write it: the inbox writer holds it for each commit, the server's store thread for
    its rare writes there (pruning old payloads, moving an old inbox over).

    SQLite would serialize them too, but a writer that finds the database locked sleeps
    in SQLite's busy handler for 1, 2, 5, 10 ... ms, so a webhook's commit that met the
    store's transaction would wait tens of milliseconds for a lock freed in one. Waiting
    here polls every 100 µs instead, up to ``timeout`` seconds, then fails as SQLite
    would ("database is locked").

    The inbox writer takes it ``urgent``: an acknowledgement is waiting on its commit.
    While it waits it says so (an exclusive lock on a second file), and the store thread
    starts no new transaction there until it has had its turn.
    """

    POLL = 0.0001

    def __init__(self, db_path: str, timeout: float, *, urgent: bool = False) -> None:
        self.path = f"{db_path}-writer.lock"
        self.timeout = timeout
        self.urgent = urgent
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._want = os.open(f"{db_path}-writer.want", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            os.close(self._fd)
            raise

    def __enter__(self) -> WriteLock:
        if not self.urgent:
            deadline = None
            while True:
                if self._nobody_urgent() and _try(self._fd, fcntl.LOCK_EX):
                    if self._nobody_urgent():
                        return self
                    fcntl.flock(self._fd, fcntl.LOCK_UN)  # it began to wait meanwhile: after it
                deadline = deadline or time.monotonic() + self.timeout
                _wait(deadline)
        if _try(self._fd, fcntl.LOCK_EX):
            return self
        deadline = time.monotonic() + self.timeout
        while not _try(self._want, fcntl.LOCK_EX):  # free but for a moment's check
            _wait(deadline)
        try:
            while not _try(self._fd, fcntl.LOCK_EX):
                _wait(deadline)
        finally:
            fcntl.flock(self._want, fcntl.LOCK_UN)
        return self

    def _nobody_urgent(self) -> bool:
        if not _try(self._want, fcntl.LOCK_SH):
            return False
        fcntl.flock(self._want, fcntl.LOCK_UN)
        return True

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._want)


def _try(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait(deadline: float) -> None:
    if time.monotonic() >= deadline:
        raise sqlite3.OperationalError("database is locked (another alertpilot writer holds it)")
    time.sleep(WriteLock.POLL)


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA cache_size=-512")  # KiB: it only appends
    conn.execute("PRAGMA wal_autocheckpoint=0")  # it checkpoints when idle: see Checkpoints
    return conn


class Requests:
    """Frames read from the parent's pipe, and whether another one is already waiting."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()

    def next(self) -> Any:
        """The next request, or None once the parent has closed the pipe."""
        header = self._take(HEADER.size)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        body = self._take(size)
        if body is None:
            return None
        return marshal.loads(body)  # noqa: S302 - our own parent, over a private pipe

    def waiting(self) -> bool:
        return bool(self._buffer) or bool(select.select([self.fd], [], [], 0)[0])

    def _take(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            chunk = os.read(self.fd, max(1 << 16, size - len(self._buffer)))
            if not chunk:
                return None
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


class Checkpoints:
    """The writer checkpoints its own file, between commits, when no request waits.

    A WAL that has been checkpointed in full starts again from its beginning at the next
    commit, so commits overwrite blocks the file already has. A WAL that only grows makes
    every commit's fsync write the file's new size too: on ext4 that is a journal commit,
    and the commit took twice as long (0.5 against 0.26 ms at the median, on a virtual
    disk). The writer is the file's only writer, so a checkpoint it runs between two of
    its commits copies everything and the WAL restarts; one from another connection
    would race the next commit and seldom finish in time. Below ``idle`` bytes of
    payloads it waits; from there it checkpoints when no request is waiting (about 1 ms
    for 256 KiB); from ``always`` on, even if one is (a sustained flood)."""

    def __init__(self, idle: int = 256 << 10, always: int = 4 << 20) -> None:
        self.idle = idle
        self.always = always
        self.written = 0

    def after_insert(
        self, conn: sqlite3.Connection, rows: list[InboxRow], requests: Requests
    ) -> None:
        self.written += sum(len(row[1]) for row in rows)
        if self.written >= self.always or (self.written >= self.idle and not requests.waiting()):
            self.written = 0
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _write_frame(stream: Any, message: Any) -> None:
    data = marshal.dumps(message)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def _answer(conn: sqlite3.Connection, lock: WriteLock, request: tuple[Any, ...]) -> tuple[Any, ...]:
    op = request[0]
    try:
        if op == "insert":
            with lock:
                return ("ok", insert_rows(conn, request[1]))
        if op == "ping":  # the write lock can be had: take it and let go
            with lock:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            return ("ok", None)
        if op == "max_pages":  # 0: the pages the file has now
            pages = int(request[1]) or int(conn.execute("PRAGMA page_count").fetchone()[0])
            return ("ok", int(conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0]))
        return ("error", "ProgrammingError", 0, f"unknown request {op!r}")
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", 0) or 0
        return ("error", type(exc).__name__, code, str(exc))


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, busy_timeout = argv[0], float(argv[1])
    stdout = sys.stdout.buffer
    try:
        conn = connect(path, busy_timeout)
        lock = WriteLock(path, busy_timeout, urgent=True)
    except (sqlite3.Error, OSError) as exc:
        _write_frame(stdout, ("error", type(exc).__name__, 0, str(exc)))
        return 1
    _write_frame(stdout, ("ok", "ready"))  # signals are set up and the database is open
    requests, checkpoints = Requests(sys.stdin.fileno()), Checkpoints()
    while (request := requests.next()) is not None:
        reply = _answer(conn, lock, request)
        _write_frame(stdout, reply)
        if request[0] == "insert" and reply[0] == "ok":
            try:
                checkpoints.after_insert(conn, request[1], requests)
            except sqlite3.Error as exc:  # the next one may work; the commits stand
                sys.stderr.write(f"alertpilot inbox writer: checkpoint failed: {exc}\n")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
