"""The store's one thread, with a priority queue.

All store work runs on this thread, one transaction at a time. Webhook commits jump the
queue: an ack waits for at most the transaction in progress, never for a backlog of
background work (notifier jobs, pipeline updates).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

URGENT = 0
NORMAL = 1

_Item = tuple[int, int, Callable[[], Any] | None, "concurrent.futures.Future[Any] | None"]


class StoreThread:
    def __init__(self, name: str = "alertpilot-store") -> None:
        self._queue: queue.PriorityQueue[_Item] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: int, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError("store thread is shut down")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((priority, next(self._seq), fn, future))
        return future

    def shutdown(self) -> None:
        """Finish everything queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put((NORMAL + 1, next(self._seq), None, None))
        self._thread.join()

    def _work(self) -> None:
        while True:
            _, _, fn, future = self._queue.get()
            if fn is None or future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)
