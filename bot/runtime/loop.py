"""The serving event loop, on which requests go first and background work takes turns.

Everything alertpilot does runs on one event loop: answering Alertmanager, Slack and
PagerDuty, and the work behind the ack (applying the inbox, the playbooks, the
notifications, the narratives). asyncio runs every callback that is ready at each turn
of the loop, so a webhook whose commit has come back waits for every job step that
became ready in the same turn: under a steady stream of new alerts, dozens of them, and
an ack that needs three turns waited tens of milliseconds for work that was not its own.

``AckFirstLoop`` runs the steps of background work (tasks started in ``background()``,
and everything they start) one per turn, after the turn's other callbacks;
what is left waits for the next turn, which comes at once (the loop does not sleep while
background work is ready). A request then waits for a few background steps per turn, not
for all of them, and background work still runs whenever the loop has nothing else to do.

While a request is being served (``AckFirstLoop.requests``, the server's set of
connections serving one), a background turn that finds other callbacks ready (the
request's next step, scheduled after it) gives way to them once (``YIELDS``) before it
runs its step: an ack takes three or four turns (its body read, its commit sent, its
commit back, its answer written), and without this it waited for a background step at
nearly every one of them; now at every other one at most. Background work still gets a
step in every second turn of a flood. With no request in flight it never gives way:
draining a backlog, the callbacks ready beside it are its own (store results), and
giving way to them cost 2,000 new groups 12% more time to drain.

Measured on PostgreSQL at 200 new alerts a second (``bench/ingest_pg.py``'s ack
latency), the ack's p50 and p99 went from 6.2 and 15.6 ms (asyncio's loop) to 4.8 and
12.3 ms with two steps per turn, and 3.7 and 9.6 ms with one; draining 2,000 new groups
(``bench/backlog.py``) took the same 55 s either way. Giving way once then took the p50
and p99 from 3.8-4.3 and 10.9-13.8 ms to 3.0-3.4 and 9.2-10.7 ms (five runs of each,
interleaved).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable, Collection, Coroutine
from typing import Any, TypeVar, Unpack

T = TypeVar("T")

BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "alertpilot_background", default=False
)
STEPS = 1  # background callbacks per turn of the loop
YIELDS = 1  # turns in a row a background step gives way to other ready callbacks


def background(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """A task of background work: its steps, and those of every task it starts, take
    turns on an ``AckFirstLoop`` (on any other loop, a plain task)."""
    context = contextvars.copy_context()
    context.run(BACKGROUND.set, True)
    return asyncio.get_running_loop().create_task(coro, name=name, context=context)


class AckFirstLoop(asyncio.SelectorEventLoop):
    def __init__(self, steps: int = STEPS, yields: int = YIELDS) -> None:
        super().__init__()
        self.steps = steps
        self.yields = yields
        self._yielded = 0  # turns the waiting background step has given way in a row
        # What requests are being served now (the server sets it): while any is, a
        # background step gives way to the callbacks ready behind it.
        self.requests: Collection[Any] = ()
        # asyncio's queue of callbacks ready to run (private: not in its stubs)
        self._ready_now: deque[asyncio.Handle] = getattr(self, "_ready")  # noqa: B009
        self._waiting: deque[asyncio.Handle] = deque()  # background callbacks, in order
        self._turn_scheduled = False
        # asyncio's own enqueueing, behind call_soon's checks (closed, debug: then
        # call_soon is asyncio's, whole)
        self._enqueue: Callable[
            [Callable[..., object], tuple[Any, ...], contextvars.Context | None], asyncio.Handle
        ] = getattr(self, "_call_soon")  # noqa: B009 - private to asyncio: not in its stubs
        self._checked = self.get_debug()

    def set_debug(self, enabled: bool) -> None:
        super().set_debug(enabled)
        self._checked = enabled or self.is_closed()

    def close(self) -> None:
        self._checked = True
        super().close()

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[[Unpack[tuple[Any, ...]]], object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if context is None or not context.get(BACKGROUND, False):
            # The base class's call_soon without its checks, unless they can matter: this
            # runs for every callback of every request, and a second call per callback
            # cost the ack path more than the rest of this class.
            if self._checked:
                return super().call_soon(callback, *args, context=context)
            return self._enqueue(callback, args, context)
        handle = asyncio.Handle(callback, args, self, context)
        self._waiting.append(handle)
        if not self._turn_scheduled:
            self._turn_scheduled = True
            super().call_soon(self._background_turn)
        return handle

    def _background_turn(self) -> None:
        """Run up to ``steps`` waiting background callbacks, and come back next turn
        if any are left; or, if other callbacks are ready behind this one, let them run
        first (up to ``yields`` turns in a row)."""
        self._turn_scheduled = False
        if self._yielded < self.yields and self._ready_now and self.requests:
            self._yielded += 1
            self._turn_scheduled = True
            super().call_soon(self._background_turn)
            return
        self._yielded = 0
        waiting = self._waiting
        ran = 0
        while waiting and ran < self.steps:
            handle = waiting.popleft()
            if handle.cancelled():
                continue
            handle._run()  # reports an exception to the loop's handler, as asyncio does
            ran += 1
        if waiting and not self._turn_scheduled:
            self._turn_scheduled = True
            super().call_soon(self._background_turn)
