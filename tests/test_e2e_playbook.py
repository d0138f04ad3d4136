"""The shipped error-rate runbook, end to end, with nothing in between mocked.

A loopback exporter serves an AI assistant's metrics (docs/metrics.md) with values the
test controls; a real Prometheus scrapes it and evaluates ``rules/assistant.yml`` as
shipped (only ``ErrorRateOutage``'s ``for: 5m`` shortened); the alert goes through a real
Alertmanager to the bot, which matches the shipped ``error-rate-outage`` playbook, reads
its diagnostics back from that Prometheus and runs the ``fail_over_llm`` step (switched to
``mode: auto`` in a copy of ``playbooks/``, its URLs pointed at a loopback control API,
its verify shortened). Then either the test heals the service and verify sees recovery,
or the error rate stays high: verify fails, the incident escalates and the step's
rollback runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from aiohttp.test_utils import TestServer

from bot import keys
from bot.app import create_app
from bot.core.incidents import Event, EventKind, Incident, Status
from bot.remediation.records import RollbackState, StepRecord, StepState, VerifyState, steps_of
from bot.settings import DEFAULT_CONFIG, load_settings
from bot.store.base import Store
from conftest import make_settings
from remediation_kit import Receiver
from stack import Alertmanager, MetricsExporter, Prometheus, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SERVICE = {"service": "chat", "namespace": "prod"}
STEP = "fail_over_llm"
T = TypeVar("T")


# the service: an exporter whose traffic the test steers --------------------------------


class Traffic:
    """Counts requests into the exporter's counters every ``tick`` seconds.

    Unhealthy: 60% of HTTP requests fail with 503 and 75% of LLM calls fail with a
    server error; the two counters of each ratio always move in the same proportion,
    so ``rate(...)`` ratios over any window read exactly 0.6 and 0.75. Healthy: no
    more errors and a flood of good requests, so the 5m ratios drop below 1% within one
    scrape.
    """

    def __init__(self, exporter: MetricsExporter, tick: float = 0.2) -> None:
        self.exporter = exporter
        self.tick = tick
        self.healthy = False
        self._task: asyncio.Task[None] | None = None

    def count(self) -> None:
        http = "http_requests_total"
        llm = "llm_requests_total"
        route = {**SERVICE, "route": "/v1/chat"}
        model = {**SERVICE, "provider": "primary", "model": "large"}
        if self.healthy:
            self.exporter.inc(http, 5000, {**route, "code": "200"})
            self.exporter.inc(llm, 1000, {**model, "status": "ok"})
        else:
            self.exporter.inc(http, 6, {**route, "code": "503"})
            self.exporter.inc(http, 4, {**route, "code": "200"})
            self.exporter.inc(llm, 3, {**model, "status": "server_error"})
            self.exporter.inc(llm, 1, {**model, "status": "ok"})

    async def _run(self) -> None:
        while True:
            self.count()
            await asyncio.sleep(self.tick)

    def start(self) -> None:
        self.count()  # every series exists from the first scrape on
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.fixture
async def traffic() -> AsyncIterator[Traffic]:
    async with MetricsExporter() as exporter:
        exporter.set("app_build_info", 1, {"service": "chat", "version": "2.4.1"})
        exporter.set("db_pool_connections", 12, {**SERVICE, "pool": "main", "state": "in_use"})
        exporter.set("db_pool_connections", 28, {**SERVICE, "pool": "main", "state": "idle"})
        exporter.set("db_pool_max_connections", 40, {**SERVICE, "pool": "main"})
        flow = Traffic(exporter)
        flow.start()
        try:
            yield flow
        finally:
            await flow.stop()


@pytest.fixture
async def control_api() -> AsyncIterator[Receiver]:
    """The service's control API the step calls (failover / failback)."""
    async with Receiver() as server:
        yield server


# the shipped files, copied with the few changes a 30-second test needs -----------------


def rules_copy(tmp_path: Path) -> Path:
    """rules/assistant.yml with only ErrorRateOutage's ``for: 5m`` shortened to 1s."""
    shipped = (ROOT / "rules" / "assistant.yml").read_text()
    head, marker, rest = shipped.partition("      - alert: ErrorRateOutage\n")
    assert marker, "ErrorRateOutage is no longer in rules/assistant.yml"
    assert rest.count("        for: 5m\n") >= 1
    text = head + marker + rest.replace("        for: 5m\n", "        for: 1s\n", 1)
    before, after = yaml.safe_load(shipped), yaml.safe_load(text)
    changed = [
        (old["alert"], old["for"], new["for"])
        for old_group, new_group in zip(before["groups"], after["groups"], strict=True)
        for old, new in zip(old_group["rules"], new_group["rules"], strict=True)
        if old != new
    ]
    assert changed == [("ErrorRateOutage", "5m", "1s")]
    path = tmp_path / "rules" / "assistant.yml"
    path.parent.mkdir()
    path.write_text(text)
    return path


def playbooks_copy(tmp_path: Path, control: Receiver, within: str) -> Path:
    """playbooks/ as shipped, except error-rate-outage's fail_over_llm: mode auto, its
    failover and failback URLs on the loopback control API, verify within ``within``."""
    target = tmp_path / "playbooks"
    shutil.copytree(ROOT / "playbooks", target)
    path = target / "error-rate.yaml"
    books = yaml.safe_load(path.read_text())
    [outage] = [b for b in books if b["name"] == "error-rate-outage"]
    [step] = [r for r in outage["remediations"] if r["name"] == STEP]
    assert step["mode"] == "approval" and step["action"]["kind"] == "webhook"
    step["mode"] = "auto"
    step["action"]["url"] = f"{control.url}/v1/llm/failover"
    step["rollback"]["url"] = f"{control.url}/v1/llm/failback"
    step["verify"] |= {"within": within, "interval": "0.5s"}
    path.write_text(yaml.safe_dump(books, sort_keys=False, allow_unicode=True))
    return target


@dataclass
class Stack:
    server: TestServer
    prometheus: Prometheus
    alertmanager: Alertmanager

    @property
    def store(self) -> Store:
        return self.server.app[keys.STORE]


@contextlib.asynccontextmanager
async def running_stack(
    tmp_path: Path, aiohttp_server: Any, traffic: Traffic, control: Receiver, *, within: str
) -> AsyncIterator[Stack]:
    """Alertmanager -> bot, Prometheus -> Alertmanager, bot -> Prometheus and Alertmanager."""
    port = free_port()  # the bot's, so Alertmanager can be told where to deliver
    shipped = load_settings(DEFAULT_CONFIG, env={})  # the default config's allowlists
    async with Alertmanager(tmp_path, f"http://127.0.0.1:{port}/alertmanager") as am:
        prom = Prometheus(
            tmp_path,
            scrape_targets=[traffic.exporter.target],
            rule_files=[rules_copy(tmp_path)],
            alertmanager_url=am.url,
        )
        # docs/metrics.md: ``service`` may come from the scrape config; `up` gets it there
        scrape = prom.config["scrape_configs"][0]
        scrape["honor_labels"] = True
        scrape["static_configs"][0]["labels"] = {"service": "chat"}
        async with prom:
            settings = make_settings(
                tmp_path,
                prometheus={"url": prom.url, "timeout": 5, "retries": 1},
                alertmanager={"url": am.url, "timeout": 5},
                playbooks={"paths": [str(playbooks_copy(tmp_path, control, within))]},
                diagnostics={"allowed_urls": list(shipped.diagnostics.allowed_urls)},
                remediation={
                    "mode": "auto",
                    "allowed_urls": [*shipped.remediation.allowed_urls, f"{control.url}/v1/llm"],
                    "allowed_commands": list(shipped.remediation.allowed_commands),
                },
            )
            server: TestServer = await aiohttp_server(create_app(settings), port=port)
            yield Stack(server, prom, am)


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 20.0
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def _some(items: list[T]) -> list[T] | None:
    return list(items) if items else None


async def outage_incident(store: Store) -> Incident:
    """The incident Alertmanager's alert opened, once its playbooks are matched (that
    runs after the incident is stored, in a job of its own)."""

    async def probe() -> Incident | None:
        for summary in await store.list_incidents():
            if summary.group_labels.get("alertname") == "ErrorRateOutage":
                incident = await store.get_incident(summary.id)
                matched = "matched_at" in incident.data.get("pipeline", {})
                return incident if matched else None
        return None

    return await eventually(probe, "ErrorRateOutage incident, its playbooks matched", 25)


async def step_in(store: Store, incident_id: int, states: set[StepState]) -> StepRecord:
    async def probe() -> StepRecord | None:
        incident = await store.get_incident(incident_id, timeline=False)
        record = steps_of(incident).get(STEP)
        return record if record is not None and record.state in states else None

    return await eventually(probe, f"{STEP} in {sorted(states)}")


def step_events(incident: Incident) -> list[Event]:
    return [
        e
        for e in incident.timeline
        if e.kind == EventKind.REMEDIATION and e.data.get("step") == STEP
    ]


# the tests ----------------------------------------------------------------------------


async def test_alert_to_diagnostics_to_auto_failover_verified_when_the_service_recovers(
    tmp_path: Path, aiohttp_server: Any, traffic: Traffic, control_api: Receiver
) -> None:
    started = time.monotonic()
    async with running_stack(tmp_path, aiohttp_server, traffic, control_api, within="15s") as stack:
        incident = await outage_incident(stack.store)
        assert incident.playbook == "error-rate-outage"
        assert incident.severity.value == "P0"  # the playbook's override of critical
        assert incident.group_labels == {"alertname": "ErrorRateOutage", "service": "chat"}
        [alert] = incident.firing
        assert alert.labels["namespace"] == "prod"
        assert alert.generator_url.startswith(stack.prometheus.url)

        # the failover ran by itself (mode auto; the `when` precondition read the real
        # LLM failure ratio) and called the control API with the templated body
        [call] = await eventually(lambda: _some(control_api.received), "failover call")
        assert (call.method, call.path) == ("POST", "/v1/llm/failover")
        assert call.body == {
            "service": "chat",
            "from": "primary",
            "to": "secondary",
            "reason": incident.title,
            "incident": str(incident.id),
        }

        # the diagnostics read back what the exporter serves, through the real Prometheus
        incident = await stack.store.get_incident(incident.id)
        diagnostics = {d["name"]: d for d in incident.data["diagnostics"]}
        assert diagnostics["error_ratio"]["value"] == pytest.approx(0.6)
        assert diagnostics["error_ratio"]["passed"] is False
        assert diagnostics["llm_failure_ratio"]["value"] == pytest.approx(0.75)
        assert diagnostics["llm_failure_ratio"]["passed"] is False
        assert diagnostics["db_pool_utilization"]["value"] == pytest.approx(12 / 40)
        assert diagnostics["db_pool_utilization"]["passed"] is True
        assert diagnostics["versions_last_hour"]["value"] == 1
        assert diagnostics["targets_up"]["value"] == 1
        routes = diagnostics["errors_by_route"]["series"]
        assert [s["labels"] for s in routes] == [{"route": "/v1/chat", "code": "503"}]
        assert diagnostics["related_alerts"]["status"] in ("ok", "no_data")
        assert 'service="chat"' in diagnostics["error_ratio"]["query"]
        # the playbook's other steps stay as shipped: a person must approve them
        steps = steps_of(incident)
        for name in ("rollback_deploy", "enable_degraded_mode"):
            assert steps[name].state is StepState.PENDING_APPROVAL, name

        # the failover works: errors stop; verify sees the 5xx share drop
        traffic.healthy = True
        record = await step_in(stack.store, incident.id, {StepState.VERIFIED, StepState.FAILED})
        assert record.state is StepState.VERIFIED
        assert record.verify is not None and record.verify.state is VerifyState.HELD
        assert record.verify.last_value is not None and record.verify.last_value < 0.05
        assert 'service="chat"' in record.verify.query

        # the rule stops firing too: Alertmanager's resolved webhook closes the incident
        async def resolved() -> Incident | None:
            found = await stack.store.get_incident(incident.id)
            return found if found.status is Status.RESOLVED else None

        incident = await eventually(resolved, "incident resolved by Alertmanager")
        states = [e.data["state"] for e in step_events(incident)]
        assert states[:4] == ["queued", "running", "verifying", "verified"]
        assert [e.kind for e in incident.timeline].count(EventKind.ESCALATED) == 0
        assert [r.path for r in control_api.received] == ["/v1/llm/failover"]
    assert time.monotonic() - started < 90  # seconds-long timers: never minutes of waiting


async def test_error_rate_stays_high_so_verify_fails_escalates_and_fails_back(
    tmp_path: Path, aiohttp_server: Any, traffic: Traffic, control_api: Receiver
) -> None:
    started = time.monotonic()
    async with running_stack(tmp_path, aiohttp_server, traffic, control_api, within="3s") as stack:
        incident = await outage_incident(stack.store)
        record = await step_in(stack.store, incident.id, {StepState.VERIFIED, StepState.FAILED})
        assert record.state is StepState.FAILED
        assert record.verify is not None and record.verify.state is VerifyState.FAILED
        assert record.verify.last_value == pytest.approx(0.6)
        assert "did not hold within 3s (last value 0.6)" in record.reason

        async def rolled_back() -> StepRecord | None:
            found = await step_in(stack.store, incident.id, {StepState.FAILED})
            done = (RollbackState.SUCCEEDED, RollbackState.FAILED, RollbackState.SKIPPED)
            return found if found.rollback and found.rollback.state in done else None

        record = await eventually(rolled_back, "rollback finished")
        assert record.rollback is not None
        assert record.rollback.state is RollbackState.SUCCEEDED
        assert [(r.path, r.body) for r in control_api.received] == [
            (
                "/v1/llm/failover",
                {
                    "service": "chat",
                    "from": "primary",
                    "to": "secondary",
                    "reason": incident.title,
                    "incident": str(incident.id),
                },
            ),
            ("/v1/llm/failback", {"service": "chat", "incident": str(incident.id)}),
        ]

        incident = await stack.store.get_incident(incident.id)
        assert incident.status is Status.TRIGGERED  # still failing: nobody closed it
        [escalated] = [e for e in incident.timeline if e.kind == EventKind.ESCALATED]
        assert escalated.data["step"] == STEP
        assert escalated.data["remediation"] == "verify_failed"
        assert "did not fix it" in escalated.message
        states = [e.data["state"] for e in step_events(incident)]
        assert states[:4] == ["queued", "running", "verifying", "failed"]
        rollbacks = [e.data["rollback"] for e in step_events(incident) if "rollback" in e.data]
        assert rollbacks == ["running", "succeeded"]
    assert time.monotonic() - started < 90  # seconds-long timers: never minutes of waiting
