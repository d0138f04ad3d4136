"""Diagnostic steps against a real Prometheus (scraping a MetricsExporter), a real
Alertmanager and loopback HTTP servers; hostile label values stay inside literals."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bot.core.clock import SystemClock
from bot.diagnostics import DiagnosticResult, Diagnostics, DiagnosticStatus, Sources, Trend
from bot.diagnostics.units import format_value
from bot.playbook.model import Playbook
from bot.playbook.templating import environment, sample_context
from bot.upstream.alertmanager import AlertmanagerClient
from bot.upstream.prometheus import PrometheusClient
from stack import Alertmanager, LoopbackApp, MetricsExporter, Prometheus

DEAD = "http://127.0.0.1:9"
MODULE = pytest.mark.asyncio(loop_scope="module")

HOSTILE = [
    'quote"inside',
    '"}) or vector(1) #',
    "$(rm -rf /)",
    "a; b",
    "line1\nline2",
    "{{ 7 * 7 }}",
    "back\\slash",
    "single'quote",
    "`backtick`",
    "regex.*(meta)[chars]|x",
    "unicode é 中文",
]
SERVICES = {"checkout": 0.123, "search": 0.01, "cart": 0.07, "auth": 0.0, "pay": 0.2}


def make_sources(
    session: aiohttp.ClientSession,
    prometheus: str = DEAD,
    alertmanager: str = DEAD,
    allowed: tuple[str, ...] = (),
    retries: int = 0,
) -> Sources:
    return Sources(
        prometheus=PrometheusClient(session, prometheus, timeout=5, retries=retries),
        alertmanager=AlertmanagerClient(session, alertmanager, timeout=5, retries=0),
        http=session,
        allowed_urls=allowed,
        clock=SystemClock(),
        env=environment(),
    )


def book(*diagnostics: dict[str, Any]) -> Playbook:
    return Playbook.model_validate(
        {"name": "pb", "match": ['alertname="X"'], "diagnostics": list(diagnostics)}
    )


async def run_one(
    sources: Sources, spec: dict[str, Any], labels: dict[str, str] | None = None, **kw: Any
) -> DiagnosticResult:
    results = await Diagnostics(sources).run([book(spec)], sample_context(labels), **kw)
    assert len(results) == 1
    return results[0]


# a shared real Prometheus ------------------------------------------------------------


class Stack:
    def __init__(self, exporter: MetricsExporter, prom: Prometheus, am: Alertmanager) -> None:
        self.exporter, self.prom, self.am = exporter, prom, am
        self.session = aiohttp.ClientSession()

    def sources(self, **kw: Any) -> Sources:
        return make_sources(self.session, self.prom.url, self.am.url, **kw)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("diagnostics")
    async with MetricsExporter() as exporter:
        for service, ratio in SERVICES.items():
            exporter.set("app_error_ratio", ratio, {"service": service})
        for value in HOSTILE:
            exporter.set("victim", 1, {"name": value})
        exporter.set("victim", 1, {"name": "bystander"})
        async with (
            Prometheus(tmp, scrape_targets=[exporter.target]) as prom,
            Alertmanager(tmp, f"{DEAD}/hook") as am,
        ):
            await prom.wait_for(
                "count(victim)", lambda d: bool(d["result"]) and d["result"][0]["value"][1] == "12"
            )
            found = Stack(exporter, prom, am)
            try:
                yield found
            finally:
                await found.session.close()


@pytest.mark.integration
@MODULE
@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_label_values_stay_inside_promql_literals(stack: Stack, value: str) -> None:
    sources = stack.sources()
    for template in (
        "victim{name={{ labels.name | promql }}}",
        "victim{name=~{{ labels.name | promql_re }}}",
    ):
        spec = {"name": "v", "kind": "promql", "query": template, "expect": "== 1"}
        result = await run_one(sources, spec, {"name": value})
        assert result.status is DiagnosticStatus.OK, result.error
        assert result.series_count == 1
        instance = stack.exporter.target
        expected = {"__name__": "victim", "job": "app", "instance": instance, "name": value}
        assert result.series[0].labels == expected
        assert result.passed is True


@pytest.mark.integration
@MODULE
@pytest.mark.parametrize("value", ['nothing"}) or vector(1) #', "x\"} or up{job=~'.+'} #"])
async def test_an_injection_attempt_finds_only_its_literal(stack: Stack, value: str) -> None:
    spec = {"name": "v", "kind": "promql", "query": "sum(victim{name={{ labels.name | promql }}})"}
    result = await run_one(stack.sources(), spec, {"name": value})
    # sum() of nothing is an empty vector: the value was compared as one string, no more
    assert result.status is DiagnosticStatus.NO_DATA, result.text


@pytest.mark.integration
@MODULE
async def test_promql_expectation_fails_with_the_worst_series_and_top_k(stack: Stack) -> None:
    spec = {
        "name": "error_rate",
        "kind": "promql",
        "label": "5xx share",
        "query": "app_error_ratio",
        "unit": "ratio",
        "expect": "< 0.05",
        "top_k": 3,
    }
    result = await run_one(stack.sources(), spec)
    assert result.status is DiagnosticStatus.OK
    assert result.passed is False
    assert result.value == pytest.approx(0.2)
    assert result.text == "5xx share: 20%, worst of 5 series (expected < 5%) FAIL"
    assert result.lines == [
        '{service="pay"}: 20%',
        '{service="checkout"}: 12.3%',
        '{service="cart"}: 7%',
        "... and 2 more",
    ]
    assert result.query == "app_error_ratio"


@pytest.mark.integration
@MODULE
async def test_promql_expectation_passes_for_one_series(stack: Stack) -> None:
    spec = {
        "name": "error_rate",
        "kind": "promql",
        "label": "5xx share",
        "query": "app_error_ratio{service={{ labels.service | promql }}}",
        "unit": "ratio",
        "expect": "< 0.05",
    }
    result = await run_one(stack.sources(), spec, {"service": "search"})
    assert (result.status, result.passed) == (DiagnosticStatus.OK, True)
    assert result.text == "5xx share: 1% (expected < 5%) PASS"
    assert result.query == 'app_error_ratio{service="search"}'


@pytest.mark.integration
@MODULE
async def test_promql_no_data(stack: Stack) -> None:
    spec = {"name": "e", "kind": "promql", "label": "5xx share", "unit": "ratio",
            "query": 'app_error_ratio{service="nope"}', "expect": "< 0.05"}  # fmt: skip
    result = await run_one(stack.sources(), spec)
    assert (result.status, result.passed) == (DiagnosticStatus.NO_DATA, None)
    assert result.text == "5xx share: no data (expected < 5%)"


class CountingProxy(LoopbackApp):
    """Forwards to Prometheus, counting requests; can fail or stall the first ones."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.requests = 0
        self.fail_first = 0
        self.stall = False
        self.released = asyncio.Event()
        self.app.router.add_route("*", "/{tail:.*}", self._forward)

    async def stop(self) -> None:
        self.released.set()
        await super().stop()

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    async def _forward(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.stall:
            await self.released.wait()
            return web.Response(status=504)
        if self.requests <= self.fail_first:
            return web.Response(status=503, text="unavailable")
        body = await request.read()
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                f"{self.upstream}{request.path_qs}",
                data=body,
                headers={"Content-Type": request.headers.get("Content-Type", "")},
            ) as resp,
        ):
            return web.Response(
                status=resp.status, body=await resp.read(), content_type=resp.content_type
            )


@pytest_asyncio.fixture(loop_scope="module")
async def proxy(stack: Stack) -> AsyncIterator[CountingProxy]:
    async with CountingProxy(stack.prom.url) as found:
        yield found


@pytest.mark.integration
@MODULE
async def test_bad_data_is_an_error_naming_the_query_and_is_not_retried(
    stack: Stack, proxy: CountingProxy
) -> None:
    sources = make_sources(stack.session, proxy.url, retries=3)
    spec = {"name": "broken", "kind": "promql", "query": "rate(app_error_ratio[5m]"}
    result = await run_one(sources, spec)
    assert result.status is DiagnosticStatus.ERROR
    assert result.error is not None
    assert result.error.startswith("query rejected by Prometheus: ")
    assert result.error.endswith("(query: rate(app_error_ratio[5m])")
    assert result.text.startswith("broken: error: query rejected by Prometheus")
    assert proxy.requests == 1


@pytest.mark.integration
@MODULE
async def test_a_5xx_is_retried_and_then_answers(stack: Stack, proxy: CountingProxy) -> None:
    proxy.fail_first = 1
    sources = make_sources(stack.session, proxy.url, retries=2)
    result = await run_one(sources, {"name": "q", "kind": "promql", "query": "count(victim)"})
    assert (result.status, result.value) == (DiagnosticStatus.OK, 12.0)
    assert proxy.requests == 2


@pytest.mark.integration
@MODULE
async def test_a_stalled_prometheus_times_out_as_an_error(
    stack: Stack, proxy: CountingProxy
) -> None:
    proxy.stall = True
    sources = make_sources(stack.session, proxy.url)
    started = time.monotonic()
    result = await run_one(sources, {"name": "q", "kind": "promql", "query": "up", "timeout": 0.5})
    assert time.monotonic() - started < 3
    assert result.status is DiagnosticStatus.ERROR
    assert result.error is not None and "timed out" in result.error


@pytest.mark.integration
@MODULE
async def test_range_summary_and_trend(stack: Stack) -> None:
    start = time.time()
    sources = stack.sources()

    async def ranged(query: str, **extra: Any) -> DiagnosticResult:
        spec = {"name": "r", "kind": "promql_range", "query": query, "window": "1m",
                "step": "10s", **extra}  # fmt: skip
        return await run_one(sources, spec)

    rising = await ranged(f"time() - {start - 120:.0f}", unit="seconds", expect="< 100")
    assert rising.status is DiagnosticStatus.OK
    summary = rising.summary
    assert summary is not None and summary.trend is Trend.RISING
    assert summary.points == 7
    assert summary.max is not None and summary.min is not None and summary.last is not None
    assert summary.max - summary.min == pytest.approx(60, abs=0.01)
    assert summary.last == summary.max
    assert summary.avg == pytest.approx((summary.min + summary.max) / 2)
    assert rising.passed is False  # the last value, ~120 s, is not < 100
    assert "over 1m, rising) (expected < 1m40s) FAIL" in rising.text

    falling = await ranged(f"{start + 100:.0f} - time()")
    assert falling.summary is not None and falling.summary.trend is Trend.FALLING
    flat = await ranged('app_error_ratio{service="checkout"}', unit="ratio")
    assert flat.summary is not None and flat.summary.trend is Trend.FLAT
    assert flat.text.startswith("r: 12.3% now (min 12.3%, avg 12.3%, max 12.3% over 1m, flat)")
    empty = await ranged('app_error_ratio{service="nope"}')
    assert empty.status is DiagnosticStatus.NO_DATA


@pytest.mark.integration
async def test_prometheus_down_is_a_quick_clear_error() -> None:
    async with aiohttp.ClientSession() as session:
        sources = make_sources(session, retries=2)
        started = time.monotonic()
        results = await Diagnostics(sources).run(
            [
                book(
                    {"name": "a", "kind": "promql", "query": "up"},
                    {"name": "b", "kind": "promql_range", "query": "up"},
                )
            ],
            sample_context(),
        )
    assert time.monotonic() - started < 5
    for result in results:
        assert result.status is DiagnosticStatus.ERROR
        assert result.error is not None and result.error.startswith("Prometheus unavailable: ")


# related alerts from a real Alertmanager ---------------------------------------------


@pytest.mark.integration
@MODULE
async def test_related_alerts_leave_out_the_incidents_own(stack: Stack) -> None:
    alerts = [
        {"labels": {"alertname": "HighErrorRate", "service": "checkout", "instance": "a"}},
        {"labels": {"alertname": "HighLatency", "service": "checkout", "instance": "b"}},
        {"labels": {"alertname": "HighLatency", "service": "search", "instance": "c"}},
    ]
    await stack.am.post_alerts(alerts)
    own = {a["fingerprint"] for a in await stack.am.alerts('alertname="HighErrorRate"')}
    assert len(own) == 1
    spec = {"name": "related", "kind": "alerts", "label": "other alerts",
            "matchers": ["service={{ labels.service | quote }}"], "expect": "== 0"}  # fmt: skip
    result = await run_one(
        stack.sources(), spec, {"service": "checkout"}, own_fingerprints=frozenset(own)
    )
    assert result.status is DiagnosticStatus.OK, result.error
    assert (result.value, result.passed) == (1.0, False)
    assert result.text == "other alerts: 1 (expected == 0) FAIL"
    assert result.lines[0].startswith('HighLatency {instance="b", service="checkout"} since ')
    assert result.query == 'service="checkout"'

    hostile = {"service": 'checkout", alertname=~".*'}
    result = await run_one(stack.sources(), spec, hostile)
    assert (result.status, result.value, result.passed) == (DiagnosticStatus.OK, 0.0, True)


@pytest.mark.integration
async def test_alertmanager_down_is_an_error() -> None:
    async with aiohttp.ClientSession() as session:
        spec = {"name": "related", "kind": "alerts", "matchers": ['a="b"']}
        result = await run_one(make_sources(session), spec)
    assert result.status is DiagnosticStatus.ERROR
    assert result.error is not None and result.error.startswith("Alertmanager unavailable")


# http checks on a loopback server ------------------------------------------------------


class Service(LoopbackApp):
    def __init__(self) -> None:
        super().__init__()
        self.hits: list[str] = []
        self.app.middlewares.append(self._record)
        self.app.router.add_get("/health", self._health)
        self.app.router.add_get("/down", self._down)
        self.app.router.add_get("/redirect", self._redirect)
        self.app.router.add_get("/admin", self._health)

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.hits.append(request.path)
        response: web.StreamResponse = await handler(request)
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": {"db": "degraded", "lag": 3.5}})

    async def _down(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": False}, status=503)

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{self.url}/admin")

    @property
    def url(self) -> str:
        return f"http://{self.target}"


@pytest.fixture
async def service() -> AsyncIterator[tuple[Service, Sources]]:
    async with Service() as svc, aiohttp.ClientSession() as session:
        allowed = (f"{svc.url}/health", f"{svc.url}/down", f"{svc.url}/redirect")
        yield svc, make_sources(session, allowed=allowed)


async def test_http_json_field_with_expectation(service: tuple[Service, Sources]) -> None:
    svc, sources = service
    spec = {"name": "lag", "kind": "http", "label": "replica lag", "url": f"{svc.url}/health",
            "json_field": "status.lag", "unit": "seconds", "expect": "< 5"}  # fmt: skip
    result = await run_one(sources, spec)
    assert (result.status, result.value, result.passed) == (DiagnosticStatus.OK, 3.5, True)
    assert result.text == "replica lag: 3.5s (expected < 5s) PASS"
    assert result.details["status"] == 200


async def test_http_string_field_missing_field_and_latency(
    service: tuple[Service, Sources],
) -> None:
    svc, sources = service
    spec = {"name": "db", "kind": "http", "url": f"{svc.url}/health", "json_field": "status.db"}
    result = await run_one(sources, spec)
    assert (result.status, result.passed) == (DiagnosticStatus.OK, None)
    assert result.text == 'db: status.db = "degraded"'
    missing = await run_one(sources, {**spec, "json_field": "status.cache"})
    assert missing.status is DiagnosticStatus.NO_DATA
    assert missing.text == "db: no data: HTTP 200: no field 'status.cache' in the answer"
    latency = await run_one(sources, {"name": "up", "kind": "http", "url": f"{svc.url}/health"})
    assert latency.status is DiagnosticStatus.OK and latency.unit == "seconds"
    assert latency.value is not None and 0 < latency.value < 1


async def test_http_error_status_fails_and_redirects_are_not_followed(
    service: tuple[Service, Sources],
) -> None:
    svc, sources = service
    down = await run_one(sources, {"name": "h", "kind": "http", "url": f"{svc.url}/down"})
    assert (down.status, down.passed) == (DiagnosticStatus.OK, False)
    assert "; HTTP 503 (expected 200) FAIL" in down.text
    moved = await run_one(sources, {"name": "h", "kind": "http", "url": f"{svc.url}/redirect"})
    assert moved.passed is False and "HTTP 302 (expected 200)" in moved.text
    assert svc.hits == ["/down", "/redirect"]  # never /admin


@pytest.mark.parametrize("value", ["../admin", "x/../../admin", "%2e%2e/admin", "x\r\nHost: evil"])
async def test_http_url_cannot_be_moved_by_a_label(
    service: tuple[Service, Sources], value: str
) -> None:
    svc, sources = service
    spec = {"name": "h", "kind": "http", "url": svc.url + "/health/{{ labels.x }}"}
    result = await run_one(sources, spec, {"x": value})
    assert result.status is DiagnosticStatus.ERROR
    assert result.error is not None and "allowed_urls" in result.error
    assert svc.hits == []


async def test_a_template_that_fails_at_run_time_is_an_error_result() -> None:
    async with aiohttp.ClientSession() as session:
        spec = {"name": "q", "kind": "promql", "query": "up{a={{ labels.service | promql }}}"}
        results = await Diagnostics(make_sources(session)).run(
            [book(spec)], {**sample_context(), "labels": {}}
        )
    assert results[0].status is DiagnosticStatus.ERROR
    assert results[0].text == "q: error: not applicable: needs label `service`"
    assert results[0].cause == "not_applicable"


# formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.123, "ratio", "12.3%"),
        (12.3, "percent", "12.3%"),
        (0.85, "seconds", "850ms"),
        (3.21, "seconds", "3.21s"),
        (252, "seconds", "4m12s"),
        (1500, "ms", "1.5s"),
        (3 * 1024**3, "bytes", "3 GiB"),
        (512, "bytes", "512 B"),
        (12.34, "per_second", "12.3/s"),
        (7, "count", "7"),
        (1234.5, "", "1,234"),
        (0.000123, "", "1.23e-04"),
        (math.nan, "ratio", "NaN"),
        (math.inf, "", "+Inf"),
        (None, "", "n/a"),
    ],
)
def test_units(value: float | None, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_results_round_trip_as_json_with_nan_as_null() -> None:
    result = DiagnosticResult(
        playbook="pb", name="n", label="n", kind="promql", status=DiagnosticStatus.OK,
        value=math.nan, text="n: NaN (expected < 1) FAIL", passed=False,
    )  # fmt: skip
    data = result.to_json()
    assert data["value"] is None
    assert DiagnosticResult.from_json(data) == result
    assert result.verdict == "FAIL"
