"""Shared machinery for the loopback fake servers: lifecycle, recording, fault injection."""

from __future__ import annotations

import json
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict, MultiDict


@dataclass
class RecordedRequest:
    """One request as the fake saw it (recorded before any fault is applied)."""

    method: str
    path: str
    query: MultiDict[str]
    headers: CIMultiDict[str]
    body: Any  # parsed JSON, form dict, or raw bytes (None when empty)
    raw: bytes
    at: float  # time.monotonic() on arrival
    params: dict[str, Any] = field(default_factory=dict)  # query + dict body, merged
    status: int | None = None  # HTTP status the fake answered with

    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass
class Fault:
    kind: str  # "fail", "rate_limit", or fake-specific kinds (e.g. "quota")
    status: int
    retry_after: int | float = 1
    match: str | None = None  # only requests whose path contains this consume it


RECORD_KEY: web.RequestKey[RecordedRequest] = web.RequestKey("fake_record", RecordedRequest)


def parse_body(content_type: str, raw: bytes) -> Any:
    if not raw:
        return None
    if "json" in content_type:
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    if content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    return raw


class FakeServer:
    """Base class: an aiohttp app on 127.0.0.1:<random port>, optionally over TLS.

    Subclasses add routes in ``_setup_routes`` and render injected faults in
    ``_fault_response``.  Use ``async with Fake() as fake:`` or ``start()``/``stop()``.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self._faults: deque[Fault] = deque()
        self._outage = False
        self._ssl_context = ssl_context
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.app = web.Application(middlewares=[self._middleware])
        self._setup_routes(self.app.router)

    # -- lifecycle -----------------------------------------------------------------

    def _setup_routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self._ssl_context)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def root_url(self) -> str:
        """``http(s)://127.0.0.1:<port>`` without a trailing slash."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    # -- fault injection -----------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 500, *, match: str | None = None) -> None:
        """The next ``n`` requests (whose path contains ``match``, if given) fail."""
        self._faults.extend(Fault("fail", status, match=match) for _ in range(n))

    def rate_limit_next(
        self, n: int = 1, retry_after: int | float = 1, *, match: str | None = None
    ) -> None:
        """The next ``n`` requests get HTTP 429 with a ``Retry-After`` header."""
        self._faults.extend(
            Fault("rate_limit", 429, retry_after=retry_after, match=match) for _ in range(n)
        )

    def outage(self, on: bool = True) -> None:
        """While on, every request gets HTTP 503."""
        self._outage = on

    def clear_faults(self) -> None:
        self._faults.clear()
        self._outage = False

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.match is None or fault.match in path:
                self._faults.remove(fault)
                return fault
        return None

    def _fault_response(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    # -- recording -----------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Handler,
    ) -> web.StreamResponse:
        raw = await request.read()
        body = parse_body(request.content_type, raw)
        params: dict[str, Any] = dict(request.query)
        if isinstance(body, dict):
            params.update(body)
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=MultiDict(request.query),
            headers=CIMultiDict(request.headers),
            body=body,
            raw=raw,
            at=time.monotonic(),
            params=params,
        )
        self.requests.append(record)
        request[RECORD_KEY] = record
        fault = Fault("fail", 503) if self._outage else self._take_fault(request.path)
        try:
            response = self._fault_response(fault, request) if fault else await handler(request)
        except web.HTTPException as exc:
            record.status = exc.status
            raise
        record.status = response.status
        return response

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path == path and (method is None or r.method == method.upper())
        ]


def record_of(request: web.Request) -> RecordedRequest:
    return request[RECORD_KEY]
