"""Job handlers: the registry the job runner dispatches on, built in ``create_app``.

A job is a durable unit of follow-up work (a notifier call, a pipeline run, a timer).
A handler gets the job and returns when it is done; it raises ``RetryLater`` for a
transient failure and ``PermanentFailure`` when retrying cannot help.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator

from bot.store.base import Job, Subscriptions

Handler = Callable[[Job], Awaitable[None]]


class JobHandlers:
    """Handlers by job kind. Subscribers are kinds that get a job per timeline event,
    for every event or only for the event kinds they name."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._subscribers = Subscriptions()

    def register(
        self,
        kind: str,
        handler: Handler,
        *,
        subscribe: bool = False,
        events: Iterable[str] | None = None,
    ) -> None:
        """Add a handler; with ``subscribe`` it gets a job for each timeline event (of the
        kinds in ``events``, when given: the others would cost a job that does nothing)."""
        if kind in self._handlers:
            raise ValueError(f"job kind {kind!r} is registered twice")
        self._handlers[kind] = handler
        if subscribe:
            self._subscribers.add(kind, events)

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    @property
    def kinds(self) -> list[str]:
        return list(self._handlers)

    @property
    def subscribers(self) -> Subscriptions:
        return self._subscribers

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)
