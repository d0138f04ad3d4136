"""The inbox writer's child process (see ``bot.store.inbox_writer``).

Run by path, not as part of the package, and importing only the standard library and
``zstandard``, so it starts quickly and stays small: it commits batches of webhook
payloads and answers with their row ids, one length-prefixed ``marshal`` frame per
request and reply.
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
import zlib
from types import TracebackType
from typing import Any

import zstandard

HEADER = struct.Struct(">I")

InboxRow = tuple[str, str, float, float | None, str | None]  # source, body, at, processed, result
StoredRow = tuple[str, bytes, float, float | None, str | None]  # the body compressed

# Payload bytes that batches waiting in the pipe may bring into one commit. A WAL can
# start again only between commits: one commit of a flood's worth would grow it.
MERGE_BYTES = 1 << 20


# zstd's frame magic number: a body stored compressed before zstd is zlib's.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_COMPRESSOR = zstandard.ZstdCompressor(level=-1)
_DECOMPRESSOR = zstandard.ZstdDecompressor()


def pack(rows: list[InboxRow]) -> list[StoredRow]:
    """Rows as the inbox stores them: the body compressed with zstd, level -1. A webhook
    payload is JSON and shrinks about three times; every byte of it is written twice (to
    the WAL, then by the checkpoint) and kept for ``store.retention``. Uncompressed, a
    flood's inbox grew by a gigabyte a minute, and its commits slowed as the file grew.

    Compressing is the largest part of this process's work for a webhook, done while
    its ack waits, on the cores the server shares with it. For a 2.7 KB payload of new
    alerts, zstd's level 3 made it 4.1 times smaller in 17 µs, level 1 4.0 times in
    14 µs, level -1 3.2 times in 8.6 µs (zlib's level 1 took three times level 3's
    time): a quarter more bytes for half the time."""
    compress = _COMPRESSOR.compress
    return [
        (source, compress(body.encode()), at, processed, result)
        for source, body, at, processed, result in rows
    ]


def unpack(body: str | bytes) -> str:
    """A stored body as it was received: zstd, or zlib (stored by earlier versions), or
    text (stored before compression)."""
    if isinstance(body, str):
        return body
    if body[:4] == ZSTD_MAGIC:
        return _DECOMPRESSOR.decompress(body).decode()
    return zlib.decompress(body).decode()


def payload_bytes(rows: list[InboxRow] | list[StoredRow]) -> int:
    return sum(len(row[1]) for row in rows)


def insert_rows(conn: sqlite3.Connection, rows: list[StoredRow]) -> list[int]:
    """One INSERT statement for all ``rows``. There is one writer, so the rowids are
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


def private_file(path: str) -> str | None:
    """Create ``path`` readable and writable by this user only. If it exists (made by an
    earlier version, 0644) and others may read it or its ``-wal`` and ``-shm``, those are
    made private; what was changed, or could not be, is returned for the log."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    else:
        return None
    said = []
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            mode = os.stat(name).st_mode & 0o7777
            if mode & 0o077:
                os.chmod(name, mode & 0o700)
                said.append(f"{name} was mode {mode:o}, now {mode & 0o700:o}")
        except FileNotFoundError:
            continue
        except OSError as exc:  # another user's file: say so, and go on
            said.append(f"{name} is readable by others and cannot be changed: {exc.strerror}")
    return "; ".join(said) or None


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    if path != ":memory:":  # private to this user, as the store's own file
        private_file(path)
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
        self._held: Any = None  # read ahead by ``inserts_waiting``, not yet handed out

    def next(self) -> Any:
        """The next request, or None once the parent has closed the pipe."""
        if self._held is not None:
            request, self._held = self._held, None
            return request
        header = self._take(HEADER.size)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        body = self._take(size)
        if body is None:
            return None
        return marshal.loads(body)  # noqa: S302 - our own parent, over a private pipe

    def waiting(self) -> bool:
        return (
            self._held is not None
            or bool(self._buffer)
            or bool(select.select([self.fd], [], [], 0)[0])
        )

    def inserts_waiting(self, size: int) -> list[list[InboxRow]]:
        """The batches of the insert requests already in the pipe, in order, until one
        that is not an insert or until they hold ``size`` bytes of payloads or more."""
        batches: list[list[InboxRow]] = []
        while size > 0 and self._held is None and self.waiting():
            request = self.next()
            if request is None:  # closed: the next ``next`` finds that out again
                break
            if request[0] != "insert":
                self._held = request
                break
            batches.append(request[1])
            size -= payload_bytes(request[1])
        return batches

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
    payloads as stored (compressed) it waits; from there it checkpoints when no request
    is waiting (about 1 ms for 256 KiB); from ``always`` on, even if one is (a sustained
    flood)."""

    def __init__(self, idle: int = 256 << 10, always: int = 4 << 20) -> None:
        self.idle = idle
        self.always = always
        self.written = 0

    def after_insert(
        self, conn: sqlite3.Connection, batches: list[list[StoredRow]], requests: Requests
    ) -> None:
        self.written += sum(payload_bytes(rows) for rows in batches)
        if self.written >= self.always or (self.written >= self.idle and not requests.waiting()):
            self.written = 0
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def write_frames(stream: Any, messages: list[Any]) -> None:
    """One write for all of them: the parent reads them in one go."""
    data = [marshal.dumps(message) for message in messages]
    stream.write(b"".join(HEADER.pack(len(part)) + part for part in data))
    stream.flush()


def _error(exc: sqlite3.Error) -> tuple[Any, ...]:
    code = getattr(exc, "sqlite_errorcode", 0) or 0
    return ("error", type(exc).__name__, code, str(exc))


def _insert(conn: sqlite3.Connection, lock: WriteLock, batches: list[list[StoredRow]]) -> list[Any]:
    """All ``batches`` in one transaction, one fsync: one reply per batch, in order."""
    try:
        with lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = [insert_rows(conn, rows) for rows in batches]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return [("ok", batch) for batch in ids]
    except sqlite3.Error as exc:
        return [_error(exc)] * len(batches)


def _answer(conn: sqlite3.Connection, lock: WriteLock, request: tuple[Any, ...]) -> tuple[Any, ...]:
    op = request[0]
    try:
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
        return _error(exc)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, busy_timeout = argv[0], float(argv[1])
    stdout = sys.stdout.buffer
    try:
        conn = connect(path, busy_timeout)
        lock = WriteLock(path, busy_timeout, urgent=True)
    except (sqlite3.Error, OSError) as exc:
        write_frames(stdout, [("error", type(exc).__name__, 0, str(exc))])
        return 1
    write_frames(stdout, [("ok", "ready")])  # signals are set up and the database is open
    requests, checkpoints = Requests(sys.stdin.fileno()), Checkpoints()
    while (request := requests.next()) is not None:
        if request[0] != "insert":
            write_frames(stdout, [_answer(conn, lock, request)])
            continue
        # The batches the parent sent while the last commit ran share this one: a
        # webhook that arrived meanwhile waits for one commit, not for the one queued
        # ahead of it too.
        batches = [request[1]]
        batches += requests.inserts_waiting(MERGE_BYTES - payload_bytes(request[1]))
        stored = [pack(rows) for rows in batches]
        replies = _insert(conn, lock, stored)
        write_frames(stdout, replies)
        if replies[0][0] == "ok":
            try:
                checkpoints.after_insert(conn, stored, requests)
            except sqlite3.Error as exc:  # the next one may work; the commits stand
                sys.stderr.write(f"alertpilot inbox writer: checkpoint failed: {exc}\n")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
