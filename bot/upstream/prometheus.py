"""An async Prometheus HTTP API client (instant and range queries, alerting rules), on aiohttp.

Timeouts on every call; 5xx and network errors are retried with backoff, and counted by
the circuit breaker when given one (while it is open, calls fail at once); Prometheus's
``bad_data`` (a query that does not parse or is invalid) is never retried and comes
back as ``PrometheusQueryError`` naming the query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bot.errors import UpstreamError
from bot.upstream.breaker import CircuitBreaker
from bot.upstream.http import HttpError, request


class PrometheusError(UpstreamError):
    """Prometheus could not answer (down, slow, 5xx after retries). ``cause``: ``timeout``
    (no answer in time), ``unreachable`` (refused, 5xx, its breaker open) or ``error``
    (it answered, but not with a result)."""

    def __init__(self, message: str, *, cause: str = "error") -> None:
        self.cause = cause
        super().__init__(message)


class PrometheusQueryError(PrometheusError):
    """Prometheus refused the query itself (``bad_data``): retrying cannot help."""

    def __init__(self, query: str, message: str) -> None:
        self.query = query
        super().__init__(f"query rejected by Prometheus: {message} (query: {query})")


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class AlertRule:
    """An alerting rule as Prometheus reports it: its alert's name and its expression."""

    name: str
    query: str


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return math.nan


@dataclass(frozen=True)
class Target:
    """A scrape target as Prometheus reports it."""

    labels: dict[str, str]
    health: str  # up, down, unknown
    last_error: str


class PrometheusClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        bearer_token: str | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.breaker = breaker
        self._headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}

    async def _api(
        self, path: str, params: dict[str, str], timeout: float | None, *, method: str = "POST"
    ) -> Any:
        """A query is POSTed (a long expression fits), with the time Prometheus may spend
        on it; a read such as ``/api/v1/rules`` is a GET, as Prometheus serves it."""
        limit = timeout or self.timeout
        sent: dict[str, Any] = {"params": params}
        if method == "POST":
            # whole milliseconds: Prometheus 2.x refuses fractional durations such as "9.5s"
            params = {**params, "timeout": f"{max(1000, round((limit - 0.5) * 1000))}ms"}
            sent = {"data": params}
        try:
            resp = await request(
                self.session,
                method,
                f"{self.base_url}{path}",
                timeout=limit,
                retries=self.retries,
                headers=self._headers,
                breaker=self.breaker,
                **sent,
            )
        except HttpError as exc:
            raise PrometheusError(f"Prometheus unavailable: {exc}", cause=exc.cause) from None
        try:
            answer = resp.json()
        except ValueError:
            raise PrometheusError(f"Prometheus answered HTTP {resp.status}, not JSON") from None
        if not isinstance(answer, dict):
            raise PrometheusError(f"Prometheus answered HTTP {resp.status} with unexpected JSON")
        if answer.get("status") == "success":
            return answer.get("data")
        error_type, error = answer.get("errorType", ""), answer.get("error", "unknown error")
        if error_type == "bad_data" or resp.status == 400:
            raise PrometheusQueryError(params.get("query", ""), str(error))
        raise PrometheusError(
            f"Prometheus error ({error_type or resp.status}): {error}",
            cause="unreachable" if resp.status >= 500 else "error",
        )

    async def query(
        self, promql: str, *, at: float | None = None, timeout: float | None = None
    ) -> list[Sample]:
        """An instant query; scalars come back as one sample with no labels."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = await self._api("/api/v1/query", params, timeout)
        kind, result = data.get("resultType"), data.get("result")
        if kind in ("scalar", "string"):
            return [Sample({}, _float(result[1]))]
        if kind == "vector":
            return [Sample(dict(item["metric"]), _float(item["value"][1])) for item in result]
        if kind == "matrix":  # an instant query of a range selector: take the last point
            return [
                Sample(dict(item["metric"]), _float(item["values"][-1][1]))
                for item in result
                if item["values"]
            ]
        raise PrometheusError(f"unexpected result type {kind!r}")

    async def query_range(
        self, promql: str, *, start: float, end: float, step: float, timeout: float | None = None
    ) -> list[Series]:
        params = {
            "query": promql,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step:g}",
        }
        data = await self._api("/api/v1/query_range", params, timeout)
        if data.get("resultType") != "matrix":
            raise PrometheusError(f"unexpected result type {data.get('resultType')!r}")
        return [
            Series(dict(item["metric"]), [(float(t), _float(v)) for t, v in item["values"]])
            for item in data["result"]
        ]

    async def alert_rules(self, *, timeout: float | None = None) -> list[AlertRule]:
        """The alerting rules Prometheus evaluates (``GET /api/v1/rules?type=alert``), each
        with its expression as Prometheus prints it: the very text it puts in ``g0.expr``
        of the generator URL of the alerts the rule fires."""
        data = await self._api("/api/v1/rules", {"type": "alert"}, timeout, method="GET")
        groups = data.get("groups") if isinstance(data, dict) else None
        if not isinstance(groups, list):
            raise PrometheusError("Prometheus answered /api/v1/rules without rule groups")
        rules: list[AlertRule] = []
        for group in groups:
            found = group.get("rules") if isinstance(group, dict) else None
            for rule in found if isinstance(found, list) else []:
                if not isinstance(rule, dict) or rule.get("type", "alerting") != "alerting":
                    continue
                name, query = rule.get("name"), rule.get("query")
                if isinstance(name, str) and isinstance(query, str):
                    rules.append(AlertRule(name, query))
        return rules

    async def targets(self, scrape_pool: str, *, timeout: float | None = None) -> list[Target]:
        """The active targets of one scrape pool (``GET /api/v1/targets``), with their
        health and last scrape error."""
        params = {"state": "active", "scrapePool": scrape_pool}
        data = await self._api("/api/v1/targets", params, timeout, method="GET")
        found = data.get("activeTargets") if isinstance(data, dict) else None
        if not isinstance(found, list):
            raise PrometheusError("Prometheus answered /api/v1/targets without activeTargets")
        return [
            Target(
                dict(item.get("labels") or {}),
                str(item.get("health", "unknown")),
                str(item.get("lastError", "")),
            )
            for item in found
            if isinstance(item, dict)
        ]

    async def ready(self) -> bool:
        try:
            resp = await request(self.session, "GET", f"{self.base_url}/-/ready", timeout=3.0)
        except HttpError:
            return False
        return resp.status == 200
