"""The OpenAI-compatible chat client, with a per-call timeout and our own bounded retry.

``AsyncOpenAI`` is built with ``max_retries=0`` (its own retry would hide attempts from
the breaker and the budget) and ``timeout=llm.timeout`` (not the SDK's 600 s); each
attempt is also bounded by ``asyncio.timeout``. At most ``llm.max_attempts`` (≤ 3).

    retried      timeouts, connection errors, 5xx, 429 ``rate_limit_exceeded`` (after
                 ``Retry-After``, when it is at most ``llm.retry_after_max``)
    not retried  401/403 (``auth``), 400/404/422 (``bad_request``), 429
                 ``insufficient_quota`` (``quota``), an empty answer (``empty``)

Every failed attempt is reported to ``on_attempt_error`` (the circuit breaker counts them).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import openai
from openai import AsyncOpenAI

from bot.errors import UpstreamError
from bot.settings import LlmSettings

log = logging.getLogger(__name__)

ErrorKind = Literal[
    "timeout", "connection", "server", "rate_limit", "quota", "auth", "bad_request", "empty"
]
RETRYABLE: frozenset[str] = frozenset({"timeout", "connection", "server", "rate_limit"})


class LlmError(UpstreamError):
    def __init__(
        self, kind: ErrorKind, message: str, *, retry_after: float | None = None, attempts: int = 1
    ) -> None:
        self.kind = kind
        self.retry_after = retry_after
        self.attempts = attempts
        super().__init__(f"{kind}: {message}")

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


@dataclass(frozen=True)
class LlmReply:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    finish_reason: str

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    raw_ms = headers.get("retry-after-ms")
    try:
        if raw_ms is not None:
            return max(0.0, float(raw_ms) / 1000)
        raw = headers.get("retry-after")
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def classify(exc: Exception) -> LlmError:
    """Map the SDK's exceptions onto the kinds alertpilot acts on."""
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return LlmError("timeout", "no answer within the timeout")
    if isinstance(exc, openai.APIConnectionError):
        return LlmError("connection", str(exc))
    if isinstance(exc, openai.RateLimitError):
        code = exc.code or (exc.type if isinstance(exc.type, str) else None)
        if code == "insufficient_quota":
            return LlmError("quota", "the account's quota is exhausted")
        return LlmError("rate_limit", "rate limited", retry_after=_retry_after(exc))
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return LlmError("auth", f"HTTP {exc.status_code}: the API key was refused")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return LlmError("server", f"HTTP {exc.status_code}")
        return LlmError("bad_request", f"HTTP {exc.status_code}: {exc.message[:200]}")
    if isinstance(exc, openai.APIError):
        return LlmError("bad_request", str(exc)[:200])
    raise exc


class LlmClient:
    """One ``AsyncOpenAI`` for the app's lifetime: ``open()`` in cleanup_ctx, ``close()``."""

    def __init__(
        self,
        settings: LlmSettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.sleep = sleep
        self._client: AsyncOpenAI | None = None

    @property
    def model(self) -> str:
        return self.settings.model

    def open(self) -> None:
        if self._client is None:
            key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
            self._client = AsyncOpenAI(
                api_key=key or "not-needed",  # local servers (Ollama, vLLM) take any key
                base_url=self.settings.base_url,
                timeout=self.settings.timeout,
                max_retries=0,
            )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _once(self, messages: list[dict[str, str]], max_tokens: int) -> LlmReply:
        assert self._client is not None, "LlmClient.open() was not called"
        async with asyncio.timeout(self.settings.timeout):
            response: Any = await self._client.chat.completions.create(
                model=self.settings.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=self.settings.temperature,
            )
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "").strip() if choice is not None else ""
        if not text:
            raise LlmError("empty", "the model returned no text")
        usage = response.usage
        return LlmReply(
            text=text,
            model=str(response.model or self.settings.model),
            prompt_tokens=int(usage.prompt_tokens) if usage else 0,
            completion_tokens=int(usage.completion_tokens) if usage else 0,
            attempts=1,
            finish_reason=str(choice.finish_reason or "") if choice is not None else "",
        )

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        on_attempt_error: Callable[[LlmError], None] = lambda error: None,
    ) -> LlmReply:
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                reply = await self._once(messages, max_tokens)
            except LlmError as exc:
                error = exc
            except (openai.OpenAIError, TimeoutError) as exc:
                error = classify(exc)
            else:
                return LlmReply(
                    reply.text,
                    reply.model,
                    reply.prompt_tokens,
                    reply.completion_tokens,
                    attempt,
                    reply.finish_reason,
                )
            error.attempts = attempt
            on_attempt_error(error)
            delay = self._delay(error, attempt)
            if delay is None or attempt == attempts:
                log.warning("LLM call failed after %d attempt(s): %s", attempt, error)
                raise error
            log.info("LLM call attempt %d failed (%s); retrying in %.2fs", attempt, error, delay)
            await self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, error: LlmError, attempt: int) -> float | None:
        if not error.retryable:
            return None
        if error.kind == "rate_limit" and error.retry_after is not None:
            if error.retry_after > self.settings.retry_after_max:
                return None  # waiting that long belongs to a later job, not this call
            return error.retry_after
        base = self.settings.retry_backoff * 2 ** (attempt - 1)
        return float(min(self.settings.retry_after_max, base * random.uniform(0.8, 1.2)))
