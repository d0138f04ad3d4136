"""Every write to Slack goes through here: paced per channel, errors mapped to job retries.

Pacing: each channel has a queue of reserved send slots, ``1 / slack.channel_rate``
seconds apart (Slack allows about one message per second per channel). A job whose slot
is near sleeps until it; one whose slot is further away keeps the reservation and is
re-run by the store-backed job runner at its slot (``RetryLater(delay=...)``), so a
busy channel never ties up the workers that other channels and features need.

Failures, as the runner understands them:

    HTTP 429 / ratelimited          -> RetryLater(delay=Retry-After); all sends wait that long
    HTTP 5xx, network, timeouts     -> RetryLater()  (the runner's exponential backoff)
    fatal_error, internal_error ... -> RetryLater()
    anything else Slack refuses     -> PermanentFailure (channel_not_found, invalid_blocks, ...)

The web client itself never retries (``retry_handlers=[]``): one place decides.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import JobError, PermanentFailure, RetryLater
from bot.runtime.shared_limits import SharedWindow

log = logging.getLogger(__name__)

TAG_EVENT = "alertpilot_incident"

JsonDict = dict[str, Any]
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)


def make_client(
    token: str, base_url: str, timeout: float, session: aiohttp.ClientSession | None = None
) -> AsyncWebClient:
    url = base_url if base_url.endswith("/") else base_url + "/"
    return AsyncWebClient(
        token=token, base_url=url, timeout=int(max(1, timeout)), session=session, retry_handlers=[]
    )


def classify(exc: Exception, what: str) -> JobError:
    """Map a Slack client failure to the runner's retry decision."""
    if isinstance(exc, SlackApiError):
        status = int(exc.response.status_code)
        data = exc.response.data if isinstance(exc.response.data, Mapping) else {}
        error = str(data.get("error") or f"HTTP {status}")
        if status == 429 or error == "ratelimited":
            return RetryLater(f"{what}: rate limited", delay=_retry_after(exc.response.headers))
        if status >= 500 or error in TRANSIENT_ERRORS:
            return RetryLater(f"{what}: Slack answered {error}")
        return PermanentFailure(f"{what}: Slack refused: {error}")
    if isinstance(exc, aiohttp.ClientError | TimeoutError | SlackRequestError):
        return RetryLater(f"{what}: {type(exc).__name__}: {exc}"[:300])
    return PermanentFailure(f"{what}: {type(exc).__name__}: {exc}"[:300])


def _retry_after(headers: Any) -> float:
    raw = None
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            if str(key).lower() == "retry-after":
                raw = value[0] if isinstance(value, list) and value else value
    try:
        return max(0.0, min(float(raw), 900.0)) if raw is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


class ChannelPacer:
    """Send slots per channel, ``interval`` seconds apart, reserved per (job, channel)."""

    def __init__(
        self,
        rate: float,
        *,
        max_sleep: float | None = None,
        monotonic: Callable[[], float],
        shared: SharedWindow | None = None,
    ) -> None:
        self.interval = 1.0 / rate
        self.shared = shared  # the channel's window in a store other replicas use too
        self.max_sleep = max_sleep if max_sleep is not None else max(1.0, 1.5 * self.interval)
        self._now = monotonic
        self._next: dict[str, float] = {}
        self._reserved: dict[tuple[int, str], float] = {}
        self._last: dict[str, float] = {}  # the latest send committed, per channel
        self._sent: dict[str, float] = {}  # when the last send actually started
        self._blocked_until = 0.0

    def block(self, seconds: float) -> None:
        """Slack said 429: nothing is sent for ``seconds``."""
        until = self._now() + seconds
        self._blocked_until = max(self._blocked_until, until)
        for channel, slot in self._next.items():
            self._next[channel] = max(slot, until)

    async def wait(self, channel: str, job_id: int | None) -> None:
        now = self._now()
        if now < self._blocked_until:
            if job_id is not None:
                raise RetryLater(
                    "Slack rate limit in force", delay=self._blocked_until - now, counts=False
                )
            await asyncio.sleep(self._blocked_until - now)
            now = self._now()
        slot = self._reserved.pop((job_id, channel), None) if job_id is not None else None
        if slot is None:
            slot = max(now, self._next.get(channel, 0.0))
            self._next[channel] = slot + self.interval
        # a job back late from the runner must not squeeze in right after the last send
        send_at = max(slot, now, self._last.get(channel, -math.inf) + self.interval)
        delay = send_at - now
        if delay > self.max_sleep and job_id is not None:
            self._reserved[(job_id, channel)] = send_at
            self._next[channel] = max(self._next.get(channel, 0.0), send_at + self.interval)
            raise RetryLater(
                f"channel {channel} is busy: next send slot in {delay:.2f}s",
                delay=delay,
                counts=False,
            )
        self._last[channel] = max(self._last.get(channel, -math.inf), send_at)
        if delay > 0:
            await asyncio.sleep(delay)
        # a sleeper woken late must not crowd the one woken on time: space actual sends
        for _ in range(1000):  # bounded: each round another send went first
            gap = self._sent.get(channel, -math.inf) + self.interval - self._now()
            if gap <= 0:
                break
            await asyncio.sleep(gap)
        await self._wait_shared(channel, job_id)
        self._sent[channel] = self._now()

    async def _wait_shared(self, channel: str, job_id: int | None) -> None:
        """With replicas, a slot of the channel's window in the store as well: the
        replicas' sends to one channel together keep ``interval`` apart."""
        if self.shared is None or not self.shared.active:
            return
        for _ in range(1000):  # bounded: each round another replica's send went first
            delay = await self.shared.take(channel, 1, self.interval)
            if delay <= 0:
                return
            if delay > self.max_sleep and job_id is not None:
                raise RetryLater(
                    f"channel {channel} is busy (another replica sent): next slot in {delay:.2f}s",
                    delay=delay,
                    counts=False,
                )
            await asyncio.sleep(delay)

    def forget(self, job_id: int) -> None:
        for key in [k for k in self._reserved if k[0] == job_id]:
            del self._reserved[key]


class SlackOutbox:
    def __init__(self, client: AsyncWebClient, pacer: ChannelPacer) -> None:
        self.client = client
        self.pacer = pacer

    async def _send(
        self, what: str, channel: str, job_id: int | None, call: Any, *, paced: bool = True
    ) -> JsonDict:
        if paced:  # reads are not posts: they do not take a channel's send slot
            await self.pacer.wait(channel, job_id)
        try:
            response = await call()
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            error = classify(exc, what)
            if isinstance(error, RetryLater) and error.delay is not None:
                self.pacer.block(error.delay)
            log.warning("slack %s in %s failed: %s", what, channel, error)
            raise error from None
        data = response.data
        return dict(data) if isinstance(data, Mapping) else {}

    async def post(
        self,
        channel: str,
        *,
        text: str,
        blocks: list[JsonDict] | None = None,
        thread_ts: str | None = None,
        job_id: int | None = None,
        tag: str | None = None,
    ) -> JsonDict:
        """chat.postMessage; returns Slack's answer (``channel``, ``ts``). ``tag`` goes in
        the message's metadata, so ``find_tagged`` can tell whether a post went out."""

        async def call() -> Any:
            return await self.client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                unfurl_links=False,
                unfurl_media=False,
                link_names=False,
                metadata={"event_type": TAG_EVENT, "event_payload": {"tag": tag}} if tag else None,
            )

        return await self._send("chat.postMessage", channel, job_id, call)

    async def find_tagged(
        self, channel: str, tag: str, *, since: float, thread_ts: str | None = None
    ) -> str | None:
        """The ts of a message posted with ``tag`` after ``since``, if Slack has one.

        A post whose answer was lost (a crash, a dropped connection) may have gone out;
        looking before posting again keeps one message per incident.
        """

        async def call() -> Any:
            if thread_ts:
                return await self.client.conversations_replies(
                    channel=channel,
                    ts=thread_ts,
                    oldest=f"{since:.6f}",
                    include_all_metadata=True,
                    limit=200,
                )
            return await self.client.conversations_history(
                channel=channel, oldest=f"{since:.6f}", include_all_metadata=True, limit=200
            )

        answer = await self._send("conversations.history", channel, None, call, paced=False)
        for message in answer.get("messages") or []:
            metadata = message.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") == TAG_EVENT and payload.get("tag") == tag:
                return str(message["ts"])
        return None

    async def update(
        self,
        channel: str,
        ts: str,
        *,
        text: str,
        blocks: list[JsonDict],
        job_id: int | None = None,
    ) -> JsonDict:
        async def call() -> Any:
            return await self.client.chat_update(
                channel=channel, ts=ts, text=text, blocks=blocks, link_names=False
            )

        return await self._send("chat.update", channel, job_id, call)

    async def upload(
        self,
        channel: str,
        *,
        data: bytes,
        filename: str,
        title: str,
        comment: str,
        thread_ts: str | None = None,
        job_id: int | None = None,
    ) -> JsonDict:
        """The files upload v2 flow (getUploadURLExternal, upload, completeUploadExternal)."""

        async def call() -> Any:
            return await self.client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                file=data,
                filename=filename,
                title=title,
                initial_comment=comment,
            )

        return await self._send("files upload", channel, job_id, call)

    async def permalink(self, channel: str, ts: str) -> str | None:
        """A link to a message, or None if Slack cannot say right now (it is optional)."""
        try:
            answer = await self.client.chat_getPermalink(channel=channel, message_ts=ts)
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("slack chat.getPermalink failed for %s: %s", channel, exc)
            return None
        link = answer.get("permalink")
        return str(link) if link else None


def monotonic() -> float:
    return time.monotonic()
