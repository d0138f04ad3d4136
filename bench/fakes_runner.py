"""The loopback fakes of Slack, PagerDuty (HTTPS) and an OpenAI-compatible API, served from
their own event loop in a background thread, so a benchmark can block (start, kill and
restart alertpilot, sleep, poll the store) while they keep answering.

    with running_fakes() as fakes:
        server = Alertpilot(tmp, **fakes.sections(channel_rate=50))
        ...
        posts = fakes.own_posts()       # incident id -> its messages in Slack

Everything read from the fakes is copied on their own loop (``Fakes.call``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import common  # noqa: F401  (puts tests/ on sys.path)
from aiohttp import web

from fakes import FakeOpenAI, FakePagerDuty, FakeSlack
from fakes._base import record_of

T = TypeVar("T")
JsonDict = dict[str, Any]

SLACK_TOKEN = "xoxb-bench-token"
OPENAI_KEY = "sk-bench-key"
ROUTING_KEY = "R0BENCH" + "0" * 25  # PagerDuty routing keys are 32 characters
CHANNEL = "C0BENCH"
SLACK_WRITES = ("/api/chat.postMessage", "/api/chat.update", "/api/files.completeUploadExternal")
# the incident's own message: "<mentions> P1 TRIGGERED: #12 HighErrorRate (service=x)"
_HEADLINE = re.compile(r"\bP[0-3] [A-Z]+: #(\d+) ")
_STORM_TASK = "Task: many incidents opened"
_ROLLUP_TEXT = "Alert storm:"
_LISTED = re.compile(r"P[0-3] ~?#(\d+) ")


class Tripwire:
    """Runs an action (say, SIGKILL alertpilot) the moment a fake has taken a send and before
    it answers: the sender never learns that its send went through."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[str, Callable[[], None]] = {}
        self.sprung = threading.Event()

    def arm(self, target: str, action: Callable[[], None]) -> None:
        with self._lock:
            self.sprung.clear()
            self._armed[target] = action

    def disarm(self) -> None:
        with self._lock:
            self._armed.clear()

    def spring(self, target: str) -> None:
        with self._lock:
            action = self._armed.pop(target, None)
        if action is not None:
            action()
            self.sprung.set()


class TimedSlack(FakeSlack):
    """FakeSlack that notes when each message was posted (``time.monotonic()``) and springs
    the tripwire ``"slack"`` on an incident's own message."""

    def __init__(self, token: str, tripwire: Tripwire) -> None:
        super().__init__(token, clock=time.time)  # ts as Slack makes them: the Unix time
        self.tripwire = tripwire
        self.posted_at: dict[tuple[str, str], float] = {}

    def _post_message(self, args: JsonDict) -> JsonDict:
        answer = super()._post_message(args)
        self.posted_at[(str(answer["channel"]), str(answer["ts"]))] = time.monotonic()
        if args.get("blocks") and _HEADLINE.search(str(args.get("text", ""))):
            self.tripwire.spring("slack")
        return answer


class TrippingPagerDuty(FakePagerDuty):
    """FakePagerDuty that springs the tripwire ``"pagerduty"`` on an accepted trigger."""

    def __init__(self, tripwire: Tripwire) -> None:
        super().__init__()
        self.tripwire = tripwire
        self.open = asyncio.Event()  # cleared: every event waits, unanswered (``hold``)
        self.open.set()
        self.holding: dict[str, int] = {}  # dedup_key -> events waiting now

    async def _enqueue(self, request: web.Request) -> web.Response:
        if not self.open.is_set():
            body = record_of(request).body
            key = str(body.get("dedup_key")) if isinstance(body, dict) else ""
            self.holding[key] = self.holding.get(key, 0) + 1
            try:
                await self.open.wait()
            finally:
                self.holding[key] -= 1
                if not self.holding[key]:
                    del self.holding[key]
            if request.transport is None or request.transport.is_closing():
                # The sender is gone (killed while it waited): PagerDuty never took it.
                return web.Response(status=503)
        response = await super()._enqueue(request)
        if response.status == 202 and self.events[-1].get("event_action") == "trigger":
            self.tripwire.spring("pagerduty")
        return response


@dataclass(frozen=True)
class Message:
    channel: str
    ts: str
    text: str
    thread_ts: str | None
    has_blocks: bool
    posted_at: float | None


@dataclass(frozen=True)
class Write:
    """One write request to the Slack Web API, as it arrived."""

    at: float
    method: str
    channel: str
    rollup_ids: frozenset[int]  # incidents a storm roll-up lists (empty for other messages)


class Fakes:
    def __init__(self, *, llm_reply: str = "A short narrative of the incident.") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="bench-fakes", daemon=True)
        self.tripwire = Tripwire()
        self.slack = TimedSlack(SLACK_TOKEN, self.tripwire)
        self.pagerduty = TrippingPagerDuty(self.tripwire)
        self.openai = FakeOpenAI(OPENAI_KEY, reply=llm_reply)

    # -- lifecycle -------------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self.thread.start()
        self._run(self._start())

    async def _start(self) -> None:
        await self.slack.start()
        await self.pagerduty.start()
        await self.openai.start()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()

    async def _stop(self) -> None:
        for fake in (self.openai, self.pagerduty, self.slack):
            await fake.stop()

    def _run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the fakes' loop (where their state changes) and return its result."""

        async def wrapped() -> T:
            return fn()

        result: T = self._run(wrapped())
        return result

    # -- alertpilot's config ---------------------------------------------------------

    def sections(
        self,
        *,
        channel_rate: float = 1.0,
        slack: JsonDict | None = None,
        llm: JsonDict | None = None,
        pagerduty: JsonDict | None = None,
    ) -> JsonDict:
        """Config sections pointing alertpilot's Slack, PagerDuty and LLM at these fakes."""
        return {
            "slack": {
                "bot_token": SLACK_TOKEN,
                "signing_secret": "bench-signing-secret",
                "api_url": self.slack.base_url,
                "default_channel": CHANNEL,
                "channel_rate": channel_rate,
                **(slack or {}),
            },
            "pagerduty": {
                "routing_key": ROUTING_KEY,
                "events_url": f"{self.pagerduty.base_url}/v2/enqueue",
                "api_url": self.pagerduty.base_url,
                "api_token": self.pagerduty.api_token,  # lets a retry find a lost trigger
                "ca_file": self.pagerduty.ca_file,
                **(pagerduty or {}),
            },
            "llm": {
                "provider": "openai",
                "base_url": self.openai.api_base,
                "api_key": OPENAI_KEY,
                **(llm or {}),
            },
        }

    # -- what the fakes saw ----------------------------------------------------------

    def messages(self) -> list[Message]:
        """Every message in the fake Slack (top-level, threaded, roll-ups)."""

        def read() -> list[Message]:
            return [
                Message(
                    channel=channel,
                    ts=ts,
                    text=str(m.get("text", "")),
                    thread_ts=m.get("thread_ts"),
                    has_blocks=bool(m.get("blocks")),
                    posted_at=self.slack.posted_at.get((channel, ts)),
                )
                for (channel, ts), m in self.slack.messages.items()
            ]

        return self.call(read)

    def own_posts(self) -> dict[int, list[Message]]:
        """Incident id -> the messages that are that incident's own (header and blocks)."""
        found: dict[int, list[Message]] = {}
        for message in self.messages():
            match = _HEADLINE.search(message.text)
            if message.has_blocks and match:
                found.setdefault(int(match.group(1)), []).append(message)
        return found

    def slack_writes(self) -> list[Write]:
        def read() -> list[Write]:
            return [
                Write(
                    r.at,
                    r.path.rsplit("/", 1)[1],
                    str(r.params.get("channel", "")),
                    _rollup_ids(r.params),
                )
                for r in list(self.slack.requests)
                if r.path in SLACK_WRITES
            ]

        return self.call(read)

    def pd_events(self) -> list[JsonDict]:
        return self.call(lambda: [dict(e) for e in self.pagerduty.events])

    def pd_triggers(self) -> Counter[str]:
        """dedup_key -> trigger events PagerDuty accepted for it."""
        return Counter(
            str(e.get("dedup_key")) for e in self.pd_events() if e.get("event_action") == "trigger"
        )

    def pagerduty_hold(self, hold: bool) -> None:
        """Hold every Events API request unanswered (True) or let them through (False)."""
        self.call(self.pagerduty.open.clear if hold else self.pagerduty.open.set)

    def pagerduty_held(self) -> set[str]:
        """The dedup keys of the Events API requests waiting on ``pagerduty_hold``."""
        return self.call(lambda: set(self.pagerduty.holding))

    def pd_trigger_arrivals(self) -> list[tuple[float, JsonDict]]:
        """(arrival, event) of every trigger PagerDuty accepted, in order of arrival; the
        arrival is ``time.monotonic()`` when the request reached the fake."""

        def read() -> list[tuple[float, JsonDict]]:
            return [
                (r.at, dict(r.body))
                for r in list(self.pagerduty.requests)
                if r.path == "/v2/enqueue"
                and r.status == 202
                and isinstance(r.body, dict)
                and r.body.get("event_action") == "trigger"
            ]

        return self.call(read)

    def llm_calls(self) -> tuple[int, int]:
        """(incident narratives, storm summaries) the LLM was asked for."""

        def read() -> tuple[int, int]:
            storms = incidents = 0
            for body in self.openai.completions:
                messages = body.get("messages", []) if isinstance(body, dict) else []
                text = " ".join(str(m.get("content", "")) for m in messages)
                if _STORM_TASK in text:
                    storms += 1
                else:
                    incidents += 1
            return incidents, storms

        return self.call(read)


@contextlib.contextmanager
def running_fakes(**kwargs: Any) -> Iterator[Fakes]:
    fakes = Fakes(**kwargs)
    fakes.start()
    try:
        yield fakes
    finally:
        fakes.stop()


def _rollup_ids(params: JsonDict) -> frozenset[int]:
    if not str(params.get("text", "")).startswith(_ROLLUP_TEXT):
        return frozenset()
    return frozenset(int(i) for i in _LISTED.findall(str(params.get("blocks", ""))))


def max_in_window(times: list[float], window: float) -> int:
    """The most events within any half-open ``window`` of seconds (sliding over the times)."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best
