"""The inbox writer's child process for PostgreSQL (see ``bot.store.inbox_writer``).

The same frames as SQLite's (``bot.store.inbox_child``), the same order of replies and
the same merging of the batches waiting in the pipe into one commit. Its first frame
from the parent is ``("connect", url, connect_timeout)``: the database's address, with
its password, is never on the command line. It connects, answers ready, and then
commits each batch in one statement, autocommitted, with ``synchronous_commit=on``: a
reply means the rows are on the server's disk.

A lost connection fails the batches it held (the parent answers 503, so Alertmanager
retries) and is opened again for the next one.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # Run by path, its own folder comes first on sys.path, where the store's copy.py
    # hides the standard library's copy (which psycopg imports): it goes last, where
    # only the SQLite child's framing is looked for.
    sys.path.append(sys.path.pop(0))

import signal
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq

if TYPE_CHECKING or __name__ != "__main__":
    from bot.store.inbox_child import MERGE_BYTES, Requests, payload_bytes, write_frames
else:  # run by path, as SQLite's: its framing is the module next to this one
    from inbox_child import MERGE_BYTES, Requests, payload_bytes, write_frames

# The rows go in the order given (ORDER BY n), so the ids their default draws from the
# sequence rise in that order (other writers' ids may fall between them): sorted, the
# ids RETURNING gives are the rows', in order. RETURNING itself promises no order. A CTE
# that drew the ids and returned each with its position cost the server a third more per
# row, and each commit a third longer.
INSERT_PAYLOADS = (
    "INSERT INTO inbox (source, body, received_at, processed_at, result)"
    " SELECT source, body, received_at, processed_at, result"
    " FROM unnest(%b::text[], %b::text[], %b::float8[], %b::float8[], %b::text[])"
    " WITH ORDINALITY AS u(source, body, received_at, processed_at, result, n)"
    " ORDER BY n RETURNING id"
)
# The same statement, as the writer prepares it on each of its connections: it binds the
# five arrays in PostgreSQL's binary format and runs it with libpq (see ``Writer``).
PREPARED = b"alertpilot_inbox_insert"
TEXT_ARRAY, FLOAT8_ARRAY, TEXT, FLOAT8 = 1009, 1022, 25, 701
_STATEMENT = INSERT_PAYLOADS.replace("%b", "$%d") % (1, 2, 3, 4, 5)
_ARRAY_HEAD = struct.Struct(">iiiii")  # dimensions, has nulls, element type, length, lower bound
_LENGTH = struct.Struct(">i")
_FLOAT8 = struct.Struct(">id")  # its length (8), then the value
_NULL = _LENGTH.pack(-1)


def text_array(values: list[str | None]) -> bytes:
    """A one-dimensional text[] in PostgreSQL's binary format: each element its length
    and its UTF-8 bytes, or -1 for NULL."""
    parts = [_ARRAY_HEAD.pack(1, None in values, TEXT, len(values), 1)]
    for value in values:
        if value is None:
            parts.append(_NULL)
        else:
            data = value.encode()
            parts += (_LENGTH.pack(len(data)), data)
    return b"".join(parts)


def float8_array(values: list[float | None]) -> bytes:
    parts = [_ARRAY_HEAD.pack(1, None in values, FLOAT8, len(values), 1)]
    parts += (_NULL if value is None else _FLOAT8.pack(8, value) for value in values)
    return b"".join(parts)


def payload_ids(returned: Iterable[Any]) -> list[int]:
    """The ids ``INSERT_PAYLOADS`` returned, in the order its rows were given."""
    return sorted(int(value) for value in returned)


InboxRow = tuple[str, str, float, "float | None", "str | None"]


def _text(value: str | None) -> str | None:
    """PostgreSQL's text holds no NUL: stored as U+FFFD, as the store's own writes do."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


class Writer:
    """The child's connection, and the insert prepared on it.

    The insert goes straight to libpq (``PGconn.exec_prepared``) with its arrays already
    in binary: psycopg's ``execute`` took, for each batch, twice the CPU in this process
    and a third more in PostgreSQL's, and each commit half as long again (5 payloads a
    commit, 15,000 in all: 27-33 against 12-17 µs per payload here, 29-36 against 21-29
    in the server, 0.34-0.47 against 0.22-0.31 ms per commit). psycopg still opens the
    connection, with its options and timeouts, and answers ``ping``."""

    def __init__(self, url: str, connect_timeout: float) -> None:
        self.url = url
        self.connect_timeout = max(1, round(connect_timeout))
        self.timeout_ms = max(1000, round(connect_timeout * 1000))
        self.conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                # A commit that takes longer fails (503: Alertmanager retries) rather
                # than holding every ack behind it; TCP gives up on a silent server too.
                options=f"-c synchronous_commit=on -c statement_timeout={self.timeout_ms}",
                tcp_user_timeout=self.timeout_ms,
                application_name="alertpilot-inbox",
                connect_timeout=self.connect_timeout,
            )
            try:
                types = [TEXT_ARRAY, TEXT_ARRAY, FLOAT8_ARRAY, FLOAT8_ARRAY, TEXT_ARRAY]
                _check(conn, conn.pgconn.prepare(PREPARED, _STATEMENT.encode(), types))
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        return self.conn

    def insert(self, batches: list[list[InboxRow]]) -> list[tuple[Any, ...]]:
        """All ``batches`` in one statement, one commit: one reply per batch, in order."""
        rows = [row for batch in batches for row in batch]
        try:
            conn = self.connection()
            result = conn.pgconn.exec_prepared(
                PREPARED,
                [
                    text_array([_text(row[0]) for row in rows]),
                    text_array([_text(row[1]) for row in rows]),
                    float8_array([row[2] for row in rows]),
                    float8_array([row[3] for row in rows]),
                    text_array([_text(row[4]) for row in rows]),
                ],
                [1, 1, 1, 1, 1],  # binary
            )
            _check(conn, result)
            ids = payload_ids(result.get_value(i, 0) for i in range(result.ntuples))
        except psycopg.Error as exc:
            self.drop(exc)
            return [_error(exc)] * len(batches)
        replies: list[tuple[Any, ...]] = []
        start = 0
        for batch in batches:
            replies.append(("ok", ids[start : start + len(batch)]))
            start += len(batch)
        return replies

    def ping(self) -> tuple[Any, ...]:
        try:
            self.connection().execute("SELECT 1")
        except psycopg.Error as exc:
            self.drop(exc)
            return _error(exc)
        return ("ok", None)

    def drop(self, exc: Exception) -> None:
        """After a failed statement: a connection that is no longer good goes, and the
        next request opens a new one."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if (
            isinstance(exc, psycopg.OperationalError)
            or conn.broken
            or conn.pgconn.status != pq.ConnStatus.OK
        ):
            conn.close()
        else:
            self.conn = conn  # a refused statement: the connection is still good


def _check(conn: psycopg.Connection[Any], result: pq.abc.PGresult) -> None:
    """Raise the error a libpq result holds, as psycopg would have: a lost connection
    is an OperationalError, and so is a statement cancelled by its timeout."""
    if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        return
    if conn.pgconn.status != pq.ConnStatus.OK:
        message = result.error_message or conn.pgconn.error_message
        raise psycopg.OperationalError(message.decode(errors="replace").strip() or "lost")
    raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)


def _error(exc: Exception) -> tuple[Any, ...]:
    # The store's errors: a lost or refused connection is "unavailable" (retry later).
    kind = "OperationalError" if isinstance(exc, psycopg.OperationalError) else "DatabaseError"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ("error", kind, 0, message)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdout = sys.stdout.buffer
    requests = Requests(sys.stdin.fileno())
    hello = requests.next()
    if hello is None or hello[0] != "connect":
        write_frames(stdout, [("error", "ProgrammingError", 0, "expected the connect frame")])
        return 1
    writer = Writer(hello[1], float(hello[2]))
    try:
        writer.connection()
    except psycopg.Error as exc:  # told to the parent, which decides
        write_frames(stdout, [_error(exc)])
        return 1
    write_frames(stdout, [("ok", "ready")])
    while (request := requests.next()) is not None:
        if request[0] == "insert":
            batches = [request[1]]
            batches += requests.inserts_waiting(MERGE_BYTES - payload_bytes(request[1]))
            write_frames(stdout, writer.insert(batches))
        elif request[0] == "ping":
            write_frames(stdout, [writer.ping()])
        else:
            write_frames(stdout, [("error", "ProgrammingError", 0, f"unknown {request[0]!r}")])
    if writer.conn is not None:
        writer.conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
