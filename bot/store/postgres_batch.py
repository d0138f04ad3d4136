"""Group commit on PostgreSQL: writes that arrive together share one statement and one
commit.

Every job that ends writes its outcome (webhook payloads have a writer process of their
own: ``bot.store.inbox_writer``). One statement and one commit each made every caller
pay a round trip and a WAL flush of its own. Here a write goes out at once while fewer than
``in_flight`` batches are out; otherwise it waits for one to come back and goes with
every write that arrived meanwhile, in one statement (autocommitted). Each caller still
returns only once its own write is committed, with its own result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from bot.errors import StoreUnavailable

R = TypeVar("R")  # a write
T = TypeVar("T")  # what its caller gets back

CHUNK = 500  # writes per statement at most


class GroupCommit(Generic[R, T]):
    def __init__(
        self, commit: Callable[[Sequence[R]], Awaitable[Sequence[T]]], *, in_flight: int = 4
    ) -> None:
        self._commit_rows = commit  # commits writes, returns their results in order
        self._in_flight = in_flight  # batches out at once (a pooled connection each)
        self._pending: list[tuple[R, asyncio.Future[T]]] = []
        self._flying: set[asyncio.Task[None]] = set()

    async def add(self, row: R) -> T:
        """Commit ``row`` with whatever else is waiting; its result once committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        self._send()
        return await future

    def _send(self) -> None:
        while self._pending and len(self._flying) < self._in_flight:
            batch, self._pending = self._pending[:CHUNK], self._pending[CHUNK:]
            task = asyncio.create_task(self._commit(batch))
            self._flying.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._flying.discard(task)
        self._send()

    async def _commit(self, batch: list[tuple[R, asyncio.Future[T]]]) -> None:
        """Settle every request of ``batch``: with its result, or with the store's error
        (a webhook waiting for its commit never hangs)."""
        try:
            results = await self._commit_rows([row for row, _ in batch])
            if len(results) != len(batch):
                raise StoreUnavailable(f"store answered {len(results)} for {len(batch)} writes")
        except BaseException as exc:  # handed to every waiting request
            error = exc if isinstance(exc, Exception) else StoreUnavailable("store is closing")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Wait for the batches out (each settles its requests)."""
        while self._flying:
            await asyncio.wait(set(self._flying))
