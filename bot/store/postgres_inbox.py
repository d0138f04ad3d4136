"""Group commit of webhook payloads on PostgreSQL.

Every acknowledged webhook waits for a commit that is on the server's disk. One
statement and one commit per payload made each ack pay a round trip and a WAL flush of
its own; here payloads that arrive together share them. A payload goes out at once
while fewer than ``IN_FLIGHT`` batches are out; otherwise it waits for one to come back
and goes with every payload that arrived meanwhile, in one statement (``INSERT`` from
``unnest``, autocommitted). Each caller still returns only once its own row is
committed, with its own id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from bot.errors import StoreUnavailable

InboxRow = tuple[str, str, float, float | None, str | None]  # source, body, at, done, result

IN_FLIGHT = 4  # batches out at once (a pooled connection each)
CHUNK = 500  # payloads per statement at most

# Arrays go in binary (``%b``): in text, every quote and backslash of every JSON body is
# escaped by a regular expression, which cost more than all the rest of the ack.
# The ids are drawn in the CTE, one per row with its position, so each caller gets the id
# of its own row (an INSERT's RETURNING has no column saying which row was which).
INSERT = (
    "WITH t AS (SELECT nextval(pg_get_serial_sequence('inbox', 'id')) AS id, u.*"
    " FROM unnest(%b::text[], %b::text[], %b::float8[], %b::float8[], %b::text[])"
    " WITH ORDINALITY AS u(source, body, received_at, processed_at, result, n)),"
    " ins AS (INSERT INTO inbox (id, source, body, received_at, processed_at, result)"
    " SELECT id, source, body, received_at, processed_at, result FROM t)"
    " SELECT n, id FROM t"
)

Insert = Callable[[Sequence[InboxRow]], Awaitable[list[int]]]


class InboxBatches:
    def __init__(self, insert: Insert) -> None:
        self._insert = insert  # commits rows, returns their ids in the same order
        self._pending: list[tuple[InboxRow, asyncio.Future[int]]] = []
        self._flying: set[asyncio.Task[None]] = set()

    async def add(self, row: InboxRow) -> int:
        """Commit ``row`` with whatever else is waiting; its inbox id once committed."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        self._send()
        return await future

    def _send(self) -> None:
        while self._pending and len(self._flying) < IN_FLIGHT:
            batch, self._pending = self._pending[:CHUNK], self._pending[CHUNK:]
            task = asyncio.create_task(self._commit(batch))
            self._flying.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._flying.discard(task)
        self._send()

    async def _commit(self, batch: list[tuple[InboxRow, asyncio.Future[int]]]) -> None:
        """Settle every request of ``batch``: with its id, or with the store's error (a
        webhook waiting for its commit never hangs)."""
        try:
            ids = await self._insert([row for row, _ in batch])
            if len(ids) != len(batch):
                raise StoreUnavailable(f"store answered {len(ids)} ids for {len(batch)} rows")
        except BaseException as exc:  # handed to every waiting request
            error = exc if isinstance(exc, Exception) else StoreUnavailable("store is closing")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), inbox_id in zip(batch, ids, strict=True):
            if not future.done():
                future.set_result(inbox_id)

    async def close(self) -> None:
        """Wait for the batches out (each settles its requests)."""
        while self._flying:
            await asyncio.wait(set(self._flying))
