"""A loopback fake of the OpenAI Chat Completions API (non-streaming)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ._base import FakeServer, Fault, record_of

JsonDict = dict[str, Any]
Reply = str | Callable[[JsonDict], str]

QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. "
    "For more information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)


def _error(message: str, type_: str, code: str | None, param: str | None = None) -> JsonDict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeOpenAI(FakeServer):
    """Fake ``POST /v1/chat/completions``.  Use ``AsyncOpenAI(base_url=fake.api_base)``.

    Knobs: ``reply`` (str or ``f(request_body) -> str``), ``finish_reason``,
    ``delay`` (seconds to wait before answering), ``unauthorized`` (401 everything).
    """

    def __init__(self, api_key: str = "sk-fake-key", *, reply: Reply = "OK") -> None:
        self.api_key = api_key
        self.reply: Reply = reply
        self.finish_reason = "stop"
        self.delay: float = 0.0
        self.unauthorized = False
        super().__init__()

    def _setup_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self._chat_completions)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (append ``/v1`` for the SDK, or use ``api_base``)."""
        return self.root_url

    @property
    def api_base(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def completions(self) -> list[JsonDict]:
        """Bodies of all chat-completion requests received (answered or not)."""
        return [r.body for r in self.requests_to("/v1/chat/completions")]

    def quota_next(self, n: int = 1) -> None:
        """The next ``n`` requests get 429 ``insufficient_quota`` (not retryable upstream)."""
        self._faults.extend(Fault("quota", 429) for _ in range(n))

    # -- plumbing --------------------------------------------------------------------

    def _fault_response(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        if fault.kind == "quota":
            body = _error(QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota")
            return web.json_response(body, status=429)
        if fault.kind == "rate_limit":
            wait = fault.retry_after
            body = _error(
                "Rate limit reached for gpt-4o-mini in organization org-fake on requests per "
                f"min (RPM): Limit 3, Used 3, Requested 1. Please try again in {wait}s.",
                "requests",
                "rate_limit_exceeded",
            )
            headers = {
                "retry-after": str(wait),
                "x-ratelimit-limit-requests": "3",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{wait}s",
            }
            return web.json_response(body, status=429, headers=headers)
        if fault.status == 503:
            body = _error(
                "The engine is currently overloaded, please try again later.", "server_error", None
            )
        else:
            body = _error(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            )
        return web.json_response(body, status=fault.status)

    async def _chat_completions(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if self.unauthorized or auth != f"Bearer {self.api_key}":
            shown = auth.removeprefix("Bearer ")
            masked = f"{shown[:3]}*****{shown[-4:]}" if len(shown) > 8 else shown
            body = _error(
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
            return web.json_response(body, status=401)
        req = record_of(request).body
        problem = _validate(req)
        if problem is not None:
            return web.json_response(problem, status=400)
        assert isinstance(req, dict)
        if self.delay:
            await asyncio.sleep(self.delay)
        text = self.reply(req) if callable(self.reply) else self.reply
        prompt = " ".join(str(m.get("content", "")) for m in req["messages"])
        prompt_tokens, completion_tokens = _count_tokens(prompt), _count_tokens(text)
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": text,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": self.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
                },
                "service_tier": "default",
                "system_fingerprint": "fp_fake0001",
            }
        )


def _validate(req: Any) -> JsonDict | None:
    if not isinstance(req, dict):
        return _error(
            "We could not parse the JSON body of your request.", "invalid_request_error", None
        )
    if not req.get("model"):
        return _error("you must provide a model parameter", "invalid_request_error", None)
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(
            "Missing required parameter: 'messages'.",
            "invalid_request_error",
            "missing_required_parameter",
            "messages",
        )
    if req.get("stream"):
        return _error(
            "FakeOpenAI does not support stream=true", "invalid_request_error", None, "stream"
        )
    return None
