"""Pages and first messages never wait: lanes, the pipeline's deadline, the breakers.

The bad day of an outage: Prometheus accepts connections and never answers (as an
overloaded one does) while 30 P0 incidents arrive within 3 s. Every page must reach
PagerDuty within 5 s of its own ack; the diagnostics come later, recorded as not
checked, never as passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot import keys
from bot.core.alerts import parse_group
from bot.core.clock import ManualClock, SystemClock
from bot.core.incidents import EventKind
from bot.diagnostics import Diagnostics, DiagnosticStatus, Sources
from bot.diagnostics.result import NotChecked
from bot.playbook.loader import load_playbooks
from bot.playbook.templating import environment
from bot.runtime.jobs import JobHandlers, Lane
from bot.runtime.metrics import Metrics
from bot.runtime.worker import JobRunner
from bot.settings import DEFAULT_CONFIG, Severity, load_settings
from bot.store.base import Job
from bot.store.sqlite import SqliteStore
from bot.upstream.alertmanager import AlertmanagerClient
from bot.upstream.breaker import Breakers
from bot.upstream.prometheus import PrometheusClient, PrometheusError
from conftest import make_settings, payload
from fakes import FakePagerDuty
from faultkit import FaultProxy
from pagerduty_kit import alert_group, start_bot

ROOT = Path(__file__).resolve().parent.parent
NOWHERE = "http://127.0.0.1:9"  # nothing listens: refused
PAGE_BUDGET = 5.0  # s from a P0's ack to its trigger at PagerDuty
DEFAULTS = load_settings(DEFAULT_CONFIG, env={})
SHIPPED_SECTIONS: dict[str, Any] = {
    "playbooks": {"paths": [str(ROOT / "playbooks")]},
    "remediation": DEFAULTS.remediation.model_dump(mode="json"),
}
SHIPPED = make_settings(
    Path("/tmp"),
    **SHIPPED_SECTIONS,
    diagnostics={"allowed_urls": DEFAULTS.diagnostics.allowed_urls},
)


@contextlib.asynccontextmanager
async def hanging_prometheus() -> AsyncIterator[FaultProxy]:
    """A Prometheus stand-in that accepts every connection and never answers."""
    async with FaultProxy("127.0.0.1:9") as proxy:
        proxy.stall()
        yield proxy


def outage(n: int) -> dict[str, Any]:
    """A P0 of the shipped error-rate-outage playbook, for service ``svc-<n>``."""
    body = alert_group("ErrorRateOutage", service=f"svc-{n}", fingerprint=f"fp{n:06d}")
    for labels in (body["commonLabels"], body["alerts"][0]["labels"]):
        labels["job"] = "assistant"
    return body


async def test_thirty_p0_pages_go_out_while_prometheus_hangs(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    async with hanging_prometheus() as prometheus:
        bot = await start_bot(
            aiohttp_client, tmp_path, fake_pagerduty, SystemClock(), background=True,
            playbooks=load_playbooks(SHIPPED),
            prometheus={"url": prometheus.url},  # its default timeout and retries
            diagnostics={"deadline": 3, "allowed_urls": DEFAULTS.diagnostics.allowed_urls},
            remediation=SHIPPED_SECTIONS["remediation"],
            workers={"drain_timeout": 1},
        )  # fmt: skip
        acked: dict[str, float] = {}
        paged: dict[str, float] = {}
        all_paged = asyncio.Event()

        async def watch() -> None:  # when each trigger reached PagerDuty
            while len(paged) < 30:
                for event in fake_pagerduty.events:
                    if event["event_action"] == "trigger":
                        service = event["payload"]["custom_details"]["labels"]["service"]
                        paged.setdefault(service, time.monotonic())
                await asyncio.sleep(0.01)
            all_paged.set()

        watcher = asyncio.create_task(watch())
        try:
            for n in range(30):  # 30 incidents within 3 s
                started = time.monotonic()
                await bot.post_alert(outage(n))
                acked[f"svc-{n}"] = time.monotonic()
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_paged.wait(), 2 * PAGE_BUDGET)
        finally:
            watcher.cancel()
        delays = {service: paged[service] - acked[service] for service in paged}
        assert len(delays) == 30, f"paged: {sorted(delays)}"
        assert max(delays.values()) <= PAGE_BUDGET, sorted(delays.values())
        assert prometheus.connections > 0  # the diagnostics did ask, and were left hanging

        # The diagnostics are not lost: each incident records them as not checked.
        async def diagnosed() -> list[str]:
            found = []
            for incident_id in range(1, 31):
                done = await bot.events(incident_id, EventKind.DIAGNOSTICS_DONE)
                found += [e.message for e in done]
            return found

        for _ in range(200):
            messages = await diagnosed()
            if len(messages) == 30:
                break
            await asyncio.sleep(0.1)
        assert len(messages) == 30
        for message in messages:  # what did not answer is said, and never as passed
            assert "not checked (" in message, message
            assert "Prometheus did not answer in time" in message, message
            assert "passed" not in message and "failed" not in message, message
        first = await bot.store.get_incident(1)
        assert all(r["status"] == "error" for r in first.data["diagnostics"])
        assert {r["cause"] for r in first.data["diagnostics"]} <= {"timeout", "unreachable"}


async def test_the_pipeline_deadline_records_what_did_not_answer_as_timed_out() -> None:
    async with hanging_prometheus() as prometheus:
        playbook = load_playbooks(SHIPPED).get("error-rate-outage")
        assert playbook is not None
        async with aiohttp.ClientSession() as session:
            clock = SystemClock()
            sources = Sources(
                prometheus=PrometheusClient(session, prometheus.url, timeout=10, retries=2),
                alertmanager=AlertmanagerClient(session, NOWHERE, timeout=1, retries=0),
                http=session,
                allowed_urls=(),
                clock=clock,
                env=environment(),
            )
            labels = {"alertname": "ErrorRateOutage", "service": "checkout", "job": "api"}
            started = time.monotonic()
            results = await Diagnostics(sources).run([playbook], {"labels": labels}, deadline=0.5)
            took = time.monotonic() - started
    assert took < 2.0  # not the 10 s timeout, nor its retries
    assert len(results) == len(playbook.diagnostics) > 1
    for result in results:
        assert result.status is DiagnosticStatus.ERROR
        assert result.passed is None  # never counted as passed
    promql = [r for r in results if r.kind.startswith("promql")]
    assert promql and all(r.cause is NotChecked.TIMEOUT for r in promql)
    assert all(r.upstream == "Prometheus" for r in promql)
    assert all("0.5s deadline" in (r.error or "") for r in promql)


async def test_the_breaker_fails_queries_at_once_then_tries_again() -> None:
    clock = ManualClock()
    breakers = Breakers(errors=3, window=30, cooldown=20, monotonic=clock.monotonic)
    async with hanging_prometheus() as proxy, aiohttp.ClientSession() as session:
        breaker = breakers.get(proxy.url, "Prometheus")
        client = PrometheusClient(session, proxy.url, timeout=0.2, retries=0, breaker=breaker)
        for _ in range(3):  # three queries wait out their timeout ...
            with pytest.raises(PrometheusError) as failed:
                await client.query("up")
            assert failed.value.cause == "timeout"
        assert breaker.state == "open"  # ... and open the breaker
        asked = proxy.connections
        started = time.monotonic()
        for _ in range(20):  # then queries fail at once, without a connection
            with pytest.raises(PrometheusError) as refused:
                await client.query("up")
            assert refused.value.cause == "unreachable"
            assert "circuit open" in str(refused.value)
        assert time.monotonic() - started < 0.5
        assert proxy.connections == asked

        clock.advance(20)  # the cool-down is over: one trial goes out ...
        assert breaker.state == "half_open"
        proxy.mode = "up"  # Prometheus is back (the proxy passes to a real answer below)
        async with answering_prometheus() as url:
            healthy = PrometheusClient(session, url, timeout=1, retries=0, breaker=breaker)
            assert await healthy.query("up") == []
        assert breaker.state == "closed"  # ... and its answer closes the breaker


@contextlib.asynccontextmanager
async def answering_prometheus() -> AsyncIterator[str]:
    """A Prometheus stand-in that answers every instant query at once, with no data."""

    async def query(_request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": []}}
        )

    app = web.Application()
    app.router.add_post("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_a_pipeline_lane_full_of_hung_jobs_does_not_hold_up_notifications(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    handlers = JobHandlers()
    release = asyncio.Event()
    notified: list[int] = []

    async def hang(job: Job) -> None:
        await release.wait()

    async def notify(job: Job) -> None:
        notified.append(job.id)

    handlers.register("pipeline.test", hang, subscribe=True, lane=Lane.PIPELINE)
    handlers.register("notify.test", notify, subscribe=True, lane=Lane.NOTIFY)
    store = SqliteStore(str(tmp_path / "s.db"), subscribers=handlers.subscribers, clock=clock.now)
    await store.open()
    settings = make_settings(tmp_path, workers={"lanes": {"pipeline": 2, "notify": 2}})
    runner = JobRunner(store, store.job_signal, handlers, settings.workers, Metrics(), clock)
    try:
        for n in range(6):  # six incidents: six hung pipeline jobs, six notifications
            body = json.loads(json.dumps(payload("captured-firing")))
            body["groupKey"] = f"group-{n}"
            group = parse_group(json.dumps(body))
            inbox = await store.enqueue_payload("alertmanager", json.dumps(body))
            await store.apply_group(inbox, group, Severity.P1, clock.now())
        runner.start()
        for _ in range(200):
            if len(notified) >= 6:
                break
            await asyncio.sleep(0.01)
        assert len(notified) >= 6  # every incident notified ...
        assert runner.lane_busy(Lane.PIPELINE) == 2  # ... while the pipeline lane is full
    finally:
        release.set()
        await runner.stop()
        await store.close()


async def test_notifications_of_the_most_severe_incidents_are_claimed_first(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    handlers = JobHandlers()

    async def nothing(job: Job) -> None:
        return None

    handlers.register("notify.test", nothing, subscribe=True, lane=Lane.NOTIFY)
    handlers.register("pipeline.test", nothing, subscribe=True)
    store = SqliteStore(str(tmp_path / "s.db"), subscribers=handlers.subscribers, clock=clock.now)
    await store.open()
    try:
        severities = [Severity.P3, Severity.P2, Severity.P0, Severity.P1, Severity.P3]
        ids = []
        for n, severity in enumerate(severities):
            body = json.loads(json.dumps(payload("captured-firing")))
            body["groupKey"] = f"group-{n}"
            inbox = await store.enqueue_payload("alertmanager", json.dumps(body))
            result = await store.apply_group(
                inbox, parse_group(json.dumps(body)), severity, clock.now()
            )
            assert result.incident_id is not None
            ids.append(result.incident_id)
            clock.advance(1)  # older first, within a severity

        async def claimed(lane: str | None, kinds: list[str]) -> list[int | None]:
            jobs = await store.claim_jobs(clock.now(), 10, kinds, lane=lane)
            await store.release_running_jobs()
            return [job.incident_id for job in jobs]

        order = [severities[ids.index(i)] for i in await claimed("notify", ["notify.test"])]
        assert order == sorted(severities)
        assert (await claimed("notify", ["notify.test"]))[-2:] == [ids[0], ids[4]]  # by age
        assert await claimed("pipeline", ["notify.test"]) == []  # each lane its own jobs
        assert await claimed("notify", ["pipeline.test"]) == []
        assert await claimed(None, ["notify.test"]) == ids  # no lane: by age alone

        # a severity raised later moves the incident's waiting jobs up
        await store.update_incident(ids[0], now=clock.now(), severity=Severity.P0)
        assert (await claimed("notify", ["notify.test"]))[:2] == [ids[0], ids[2]]
    finally:
        await store.close()


async def test_jobs_written_before_a_kind_changed_lane_are_filed_again_at_start(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    before = JobHandlers()

    async def nothing(job: Job) -> None:
        return None

    before.register("notify.test", nothing)  # in the default lane, as before lanes
    store = SqliteStore(str(tmp_path / "s.db"), subscribers=before.subscribers, clock=clock.now)
    await store.open()
    await store.enqueue_job("notify.test", "one", due_at=clock.now())
    await store.close()

    after = JobHandlers()
    after.register("notify.test", nothing, lane=Lane.NOTIFY)
    store = SqliteStore(str(tmp_path / "s.db"), subscribers=after.subscribers, clock=clock.now)
    await store.open()
    try:
        assert await store.claim_jobs(clock.now(), 10, ["notify.test"], lane="notify") == []
        assert await store.route_jobs() == 1
        [job] = await store.claim_jobs(clock.now(), 10, ["notify.test"], lane="notify")
        assert job.key == "one"
    finally:
        await store.close()


def test_every_job_kind_of_the_app_has_its_lane(tmp_path: Path) -> None:
    from bot.app import create_app

    handlers = create_app(SHIPPED)[keys.HANDLERS]
    assert handlers.lane_of("pipeline") is Lane.NOTIFY  # the match decides the page
    assert handlers.lane_of("pipeline.diagnose") is Lane.PIPELINE
    assert handlers.lane_of("notify.log") is Lane.NOTIFY
    assert handlers.lane_of("narrative") is Lane.NARRATIVE
    assert handlers.lane_of("narrative.llm") is Lane.NARRATIVE
    assert handlers.lane_of("remediation.run") is Lane.PIPELINE
