"""Job handlers: the registry the job runner dispatches on, built in ``create_app``.

A job is a durable unit of follow-up work (a notifier call, a pipeline run, a timer).
A handler gets the job and returns when it is done; it raises ``RetryLater`` for a
transient failure and ``PermanentFailure`` when retrying cannot help.

Every kind runs in a *lane*, and each lane has slots of its own (``workers.lanes``), so
no lane can starve another: a page or a Slack post never queues behind diagnostics
waiting on a hung Prometheus, nor behind an LLM call.

    notify     what people see and what decides it: Slack posts and updates, PagerDuty
               events and their timers, the log notifier, the playbook match (local and
               quick; the page's policy waits for it). P0/P1 incidents' jobs first.
    pipeline   diagnostics, remediation, silences, graphs: anything that waits on
               Prometheus, Alertmanager or a service. The default lane.
    narrative  narratives, and the LLM calls behind them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from enum import StrEnum

from bot.store.base import Job, Subscriptions

Handler = Callable[[Job], Awaitable[None]]


class Lane(StrEnum):
    NOTIFY = "notify"
    PIPELINE = "pipeline"
    NARRATIVE = "narrative"


class JobHandlers:
    """Handlers by job kind. Subscribers are kinds that get a job per timeline event,
    for every event or only for the event kinds they name."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._lanes: dict[str, Lane] = {}
        self._subscribers = Subscriptions()

    def register(
        self,
        kind: str,
        handler: Handler,
        *,
        subscribe: bool = False,
        events: Iterable[str] | None = None,
        lane: Lane = Lane.PIPELINE,
        timer: bool = False,
    ) -> None:
        """Add a handler, run in ``lane``; with ``subscribe`` it gets a job for each timeline
        event (of the kinds in ``events``, when given: the others would cost a job that
        does nothing). ``timer``: its jobs wait for a time minutes or hours ahead (an
        escalation, a reminder), and are not backlog while they wait."""
        if kind in self._handlers:
            raise ValueError(f"job kind {kind!r} is registered twice")
        self._handlers[kind] = handler
        self._lanes[kind] = lane
        self._subscribers.route(kind, lane.value)
        if timer:
            self._subscribers.timer(kind)
        if subscribe:
            self._subscribers.add(kind, events)

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    @property
    def kinds(self) -> list[str]:
        return list(self._handlers)

    def lane_of(self, kind: str) -> Lane:
        return self._lanes.get(kind, Lane.PIPELINE)

    def kinds_in(self, lane: Lane) -> list[str]:
        return [kind for kind, its in self._lanes.items() if its is lane]

    @property
    def subscribers(self) -> Subscriptions:
        return self._subscribers

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)
