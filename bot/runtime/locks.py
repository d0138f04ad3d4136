"""Per-key locks for work that must not overlap (one incident at a time).

Each key has an ``asyncio.Lock`` in this process; with ``shared`` (a store's ``hold``)
the holder also takes the store's lock of that name, so that on a store shared by
several replicas (PostgreSQL) no two replicas hold the same key either. On SQLite, one
process, ``hold`` holds nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

Shared = Callable[[str], AbstractAsyncContextManager[None]]


class KeyedLocks:
    """One ``asyncio.Lock`` per key, dropped when nobody holds or waits for it; and the
    store's lock named ``<name>:<key>`` while it is held, given ``shared``."""

    def __init__(self, shared: Shared | None = None, name: str = "lock") -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self._shared = shared
        self._name = name

    @asynccontextmanager
    async def __call__(self, key: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock, self._across(key):  # in this process first: one connection a key
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def _across(self, key: int) -> AbstractAsyncContextManager[None]:
        if self._shared is None:
            return contextlib.nullcontext()
        return self._shared(f"{self._name}:{key}")


@asynccontextmanager
async def both(
    local: asyncio.Lock, shared: AbstractAsyncContextManager[None]
) -> AsyncIterator[None]:
    """``local``, then ``shared``: a lock of this process and the store's of the same work."""
    async with local, shared:
        yield
