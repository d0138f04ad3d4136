"""The pipeline through the app: webhook -> incident -> playbook match -> diagnostics on the
timeline -> hand-over to remediation; never for a resolved incident."""

from __future__ import annotations

import asyncio
import copy
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.incidents import Event, EventKind, Incident
from bot.errors import ConfigError, StoreUnavailable
from bot.pipeline import Pipeline, RunStatus
from bot.settings import Settings
from bot.store.base import IncidentChange, Store
from conftest import API, make_settings, payload
from stack import MetricsExporter, Prometheus

PLAYBOOKS = """\
playbooks:
  - name: checkout-errors
    match: ['alertname="HighErrorRate"', 'service="checkout"']
    order: 10
    severity: P0
    diagnostics:
      - name: error_rate
        kind: promql
        label: 5xx share
        unit: ratio
        expect: "< 0.05"
        query: app_error_ratio{service={{ labels.service | promql }}}
      - name: pod
        kind: promql
        label: pod error share
        unit: ratio
        query: app_error_ratio{pod={{ labels.instance | promql }}}
  - name: any-errors
    match: ['alertname="HighErrorRate"']
    order: 20
"""


def playbook_dir(tmp_path: Path, text: str = PLAYBOOKS) -> Path:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "errors.yaml").write_text(textwrap.dedent(text))
    return folder


class Planner:
    def __init__(self) -> None:
        self.planned: list[int] = []

    async def plan(self, incident_id: int) -> None:
        self.planned.append(incident_id)


async def start(aiohttp_client: Any, settings: Settings) -> tuple[TestClient, Planner]:
    client: TestClient = await aiohttp_client(create_app(settings))
    planner = Planner()
    client.app[keys.PIPELINE].remediation = lambda: planner
    return client, planner


async def settle(client: TestClient, timeout: float = 20.0) -> None:
    """Wait until the inbox is empty and no job is due or running (the background workers
    run too, so a job may be running elsewhere when ``run_due`` returns)."""
    app, store = client.app, client.app[keys.STORE]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await app[keys.INBOX].drain()
        await app[keys.RUNNER].run_due()
        stats = await store.stats()
        due = await store.next_job_due(app[keys.HANDLERS].kinds)
        waiting = due is not None and due > app[keys.CLOCK].now() + 1
        if stats.inbox_depth == 0 and (stats.jobs_pending == 0 or waiting):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the workers did not settle")


async def deliver(client: TestClient, body: dict[str, Any]) -> Incident:
    resp = await client.post("/alertmanager", json=body)
    assert resp.status == 200, await resp.text()
    await settle(client)
    incidents = await client.app[keys.STORE].list_incidents()
    return await client.app[keys.STORE].get_incident(incidents[0].id)


def events(incident: Incident, kind: str) -> list[Any]:
    return [e for e in incident.timeline if e.kind == kind]


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[Prometheus]:
    async with MetricsExporter() as exporter:
        exporter.set("app_error_ratio", 0.123, {"service": "checkout", "pod": "pod-a"})
        exporter.set("app_error_ratio", 0.02, {"service": "search", "pod": "pod-z"})
        async with Prometheus(tmp_path, scrape_targets=[exporter.target]) as prom:
            await prom.wait_for("count(app_error_ratio)", lambda d: bool(d["result"]))
            yield prom


@pytest.mark.integration
async def test_webhook_to_diagnostics_on_the_timeline(
    aiohttp_client: Any, tmp_path: Path, prometheus: Prometheus
) -> None:
    settings = make_settings(
        tmp_path,
        playbooks={"paths": [str(playbook_dir(tmp_path))]},
        prometheus={"url": prometheus.url},
    )
    client, planner = await start(aiohttp_client, settings)
    incident = await deliver(client, payload("captured-firing"))

    assert incident.playbook == "checkout-errors"
    assert incident.severity.value == "P0"  # the playbook's override of "critical" (P1)
    [matched] = events(incident, EventKind.PLAYBOOK)
    assert matched.data == {"playbooks": ["checkout-errors"], "severity": "P0"}
    assert matched.message == "playbook checkout-errors matched; severity P1 -> P0"
    kinds = [e.kind for e in incident.timeline]
    assert kinds.index(EventKind.PLAYBOOK) < kinds.index(EventKind.DIAGNOSTIC)

    results = events(incident, EventKind.DIAGNOSTIC)
    assert [e.message for e in results] == [
        "5xx share: 12.3% (expected < 5%) FAIL",
        "pod error share: 12.3%",
    ]
    assert results[0].data["query"] == 'app_error_ratio{service="checkout"}'
    assert results[1].data["query"] == 'app_error_ratio{pod="pod-a"}'
    [done] = events(incident, EventKind.DIAGNOSTICS_DONE)
    assert done.message == "diagnostics: 1 failed (error_rate), 1 answered (nothing to judge)"
    assert done.data["run"] == "initial" and done.data["failed"] == ["error_rate"]
    stored = incident.data["diagnostics"]
    assert [(d["name"], d["status"], d["passed"]) for d in stored] == [
        ("error_rate", "ok", False),
        ("pod", "ok", None),
    ]
    assert incident.data["pipeline"]["state"] == "done"
    assert planner.planned == [incident.id]

    # what a user sees through the API
    api = await (await client.get(f"/api/v1/incidents/{incident.id}", headers=API)).json()
    assert api["playbook"] == "checkout-errors" and api["severity"] == "P0"
    assert "5xx share: 12.3% (expected < 5%) FAIL" in [e["message"] for e in api["timeline"]]

    # the Re-run button
    run = await client.app[keys.PIPELINE].rerun_diagnostics(incident.id, "alice")
    assert run.status is RunStatus.DONE
    assert run.results[0].text == "5xx share: 12.3% (expected < 5%) FAIL"
    again = await client.app[keys.STORE].get_incident(incident.id)
    reruns = events(again, EventKind.DIAGNOSTICS_DONE)
    assert len(reruns) == 2
    assert (reruns[1].actor, reruns[1].data["run"]) == ("alice", "rerun")
    assert (
        reruns[1].message
        == "diagnostics re-run by alice: 1 failed (error_rate), 1 answered (nothing to judge)"
    )
    assert len(events(again, EventKind.PLAYBOOK)) == 1


async def test_no_playbook_matched_still_records_the_match_event(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, playbooks={"paths": [str(playbook_dir(tmp_path))]})
    client, planner = await start(aiohttp_client, settings)
    body = payload("captured-firing")
    for alert in body["alerts"]:
        alert["labels"]["alertname"] = "DiskFull"
    body["commonLabels"]["alertname"] = body["groupLabels"]["alertname"] = "DiskFull"
    incident = await deliver(client, body)
    assert incident.playbook is None and incident.severity.value == "P1"
    [matched] = events(incident, EventKind.PLAYBOOK)
    assert matched.message == "no playbook matched"
    assert matched.data == {"playbooks": [], "severity": "P1"}
    assert events(incident, EventKind.DIAGNOSTIC) == []
    assert events(incident, EventKind.DIAGNOSTICS_DONE) == []
    assert planner.planned == []


async def test_prometheus_unavailable_is_an_error_result_not_a_crash(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, playbooks={"paths": [str(playbook_dir(tmp_path))]})
    client, planner = await start(aiohttp_client, settings)
    incident = await deliver(client, payload("captured-firing"))
    results = events(incident, EventKind.DIAGNOSTIC)
    assert len(results) == 2
    for event in results:
        assert event.data["status"] == "error"
        assert event.message.startswith(
            f"{event.data['label']}: error: Prometheus unavailable: POST http://127.0.0.1:9/"
        )
    [done] = events(incident, EventKind.DIAGNOSTICS_DONE)
    assert done.message == "diagnostics: Prometheus unreachable: checks not run (2 of 2)"
    assert events(incident, EventKind.JOB_FAILED) == []
    assert planner.planned == [incident.id]
    stats = await client.app[keys.STORE].stats()
    assert stats.jobs_failed == 0 and stats.jobs_pending == 0


async def test_nothing_runs_for_a_resolved_incident(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, playbooks={"paths": [str(playbook_dir(tmp_path))]})
    client, planner = await start(aiohttp_client, settings)
    await client.app[keys.RUNNER].stop()  # so no job runs before the group resolves
    for name in ("captured-firing", "captured-resolved"):
        resp = await client.post("/alertmanager", json=payload(name))
        assert resp.status == 200
    await settle(client)
    [found] = await client.app[keys.STORE].list_incidents()
    incident = await client.app[keys.STORE].get_incident(found.id)
    assert incident.status.value == "resolved"
    [matched] = events(incident, EventKind.PLAYBOOK)  # escalation still learns the match
    assert matched.data["playbooks"] == ["checkout-errors"]
    assert events(incident, EventKind.DIAGNOSTIC) == []
    assert planner.planned == []
    assert incident.data["pipeline"]["state"] == "skipped: the incident is resolved"
    run = await client.app[keys.PIPELINE].rerun_diagnostics(incident.id, "alice")
    assert run.status is RunStatus.RESOLVED
    assert len((await client.app[keys.STORE].get_incident(incident.id)).timeline) == len(
        incident.timeline
    )


async def test_a_repeated_run_repeats_no_event(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, playbooks={"paths": [str(playbook_dir(tmp_path))]})
    client, planner = await start(aiohttp_client, settings)
    incident = await deliver(client, payload("captured-firing"))
    before = [e.kind for e in incident.timeline]
    await client.app[keys.PIPELINE].run(incident.id)  # as a retried job would
    after = await client.app[keys.STORE].get_incident(incident.id)
    assert [e.kind for e in after.timeline] == before
    assert planner.planned == [incident.id, incident.id]  # the engine decides what is left


class FailingDiagnosticsWrite:
    """The store, but the first write carrying a ``diagnostics.done`` event fails (a disk
    full or a crash part-way through recording the diagnostics)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def _fail_once(self) -> None:
        if not self.failed:
            self.failed = True
            raise StoreUnavailable("disk full")

    async def append_event(self, incident_id: int, **kwargs: Any) -> Event:
        if kwargs["kind"] == EventKind.DIAGNOSTICS_DONE:
            self._fail_once()
        return await self.store.append_event(incident_id, **kwargs)

    async def change_incident(
        self, incident_id: int, change: Callable[[Incident], IncidentChange], *, now: float
    ) -> list[Event]:
        def checked(incident: Incident) -> IncidentChange:
            out = change(incident)
            if any(e.kind == EventKind.DIAGNOSTICS_DONE for e in out.events):
                self._fail_once()
            return out

        return await self.store.change_incident(incident_id, checked, now=now)


class WriterInBetween:
    """The store, but another writer commits right before the next write goes in."""

    def __init__(self, store: Store, other: Callable[[], Awaitable[object]]) -> None:
        self.store = store
        self.other: Callable[[], Awaitable[object]] | None = other

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def _between(self) -> None:
        other, self.other = self.other, None
        if other is not None:
            await other()

    async def update_incident(self, incident_id: int, **kwargs: Any) -> Incident:
        await self._between()
        return await self.store.update_incident(incident_id, **kwargs)

    async def change_incident(
        self, incident_id: int, change: Callable[[Incident], IncidentChange], *, now: float
    ) -> list[Event]:
        await self._between()
        return await self.store.change_incident(incident_id, change, now=now)


async def test_a_failed_diagnostics_write_repeats_no_event_on_retry(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, playbooks={"paths": [str(playbook_dir(tmp_path))]})
    client, _ = await start(aiohttp_client, settings)
    await client.app[keys.RUNNER].stop()  # the test runs the pipeline itself
    resp = await client.post("/alertmanager", json=payload("captured-firing"))
    assert resp.status == 200
    await client.app[keys.INBOX].drain()
    store = client.app[keys.STORE]
    [found] = await store.list_incidents()
    pipeline = client.app[keys.PIPELINE]
    pipeline.store = FailingDiagnosticsWrite(store)
    with pytest.raises(StoreUnavailable):
        await pipeline.run(found.id)
    await pipeline.run(found.id)  # the retried job
    incident = await store.get_incident(found.id)
    assert [e.data["name"] for e in events(incident, EventKind.DIAGNOSTIC)] == ["error_rate", "pod"]
    assert len(events(incident, EventKind.DIAGNOSTICS_DONE)) == 1
    assert [d["name"] for d in incident.data["diagnostics"]] == ["error_rate", "pod"]


async def test_the_pipeline_state_is_changed_on_the_current_data(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, playbooks={"paths": [str(playbook_dir(tmp_path))]})
    client, _ = await start(aiohttp_client, settings)
    body = payload("captured-firing")
    for alert in body["alerts"]:
        alert["labels"]["alertname"] = "DiskFull"
    body["commonLabels"]["alertname"] = body["groupLabels"]["alertname"] = "DiskFull"
    incident = await deliver(client, body)
    store = client.app[keys.STORE]

    async def other_writer() -> None:
        def change(current: Incident) -> IncidentChange:
            return IncidentChange(data={"pipeline": {**current.data["pipeline"], "note": "kept"}})

        await store.change_incident(incident.id, change, now=time.time())

    pipeline = client.app[keys.PIPELINE]
    pipeline.store = WriterInBetween(store, other_writer)
    await pipeline.run(incident.id)  # a retried job writes its state again
    state = (await store.get_incident(incident.id, timeline=False)).data["pipeline"]
    assert (state["state"], state["note"]) == ("done: no playbook", "kept")


async def test_matching_uses_the_first_firing_alerts_labels(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    text = PLAYBOOKS.replace(
        "match: ['alertname=\"HighErrorRate\"', 'service=\"checkout\"']",
        "match: ['alertname=\"HighErrorRate\"', 'instance=\"pod-b\"']",
    )
    settings = make_settings(tmp_path, playbooks={"paths": [str(playbook_dir(tmp_path, text))]})
    client, _ = await start(aiohttp_client, settings)
    body = payload("captured-firing")
    body["alerts"] = [copy.deepcopy(body["alerts"][1])]  # pod-b only
    assert body["alerts"][0]["labels"]["instance"] == "pod-b"
    incident = await deliver(client, body)
    assert incident.playbook == "checkout-errors"


async def test_a_broken_playbook_stops_the_app_from_being_built(tmp_path: Path) -> None:
    folder = playbook_dir(tmp_path, PLAYBOOKS.replace("| promql }}", "}}", 1))
    settings = make_settings(tmp_path, playbooks={"paths": [str(folder)]})
    with pytest.raises(ConfigError) as caught:
        create_app(settings)
    assert caught.value.problems[0].startswith(
        f"{folder}/errors.yaml:12: playbooks[0].diagnostics[0].query: {{{{ labels.service }}}}"
    )


async def test_hand_over_to_the_real_remediation_engine(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    text = PLAYBOOKS.replace(
        "  - name: any-errors\n",
        "    remediations:\n"
        "      - name: flip\n"
        "        mode: suggest\n"
        "        action:\n"
        "          kind: webhook\n"
        "          url: https://flags.internal/api/flags/fallback\n"
        "  - name: any-errors\n",
    )
    settings = make_settings(
        tmp_path,
        playbooks={"paths": [str(playbook_dir(tmp_path, text))]},
        remediation={"allowed_urls": ["https://flags.internal/api/flags"]},
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    incident = await deliver(client, payload("captured-firing"))
    kinds = [e.kind for e in incident.timeline]
    assert EventKind.REMEDIATION in kinds
    assert kinds.index(EventKind.DIAGNOSTICS_DONE) < kinds.index(EventKind.REMEDIATION)
    assert list(incident.data["remediations"]) != []
    [step] = incident.data["remediations"].values()
    assert (step["step"], step["mode"]) == ("flip", "suggest")


class FailingMatchWrite:
    """The store, but every write carrying a ``playbook.matched`` event fails (a crash or a
    full disk while the match is being recorded)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append_event(self, incident_id: int, **kwargs: Any) -> Event:
        if kwargs["kind"] == EventKind.PLAYBOOK:
            raise StoreUnavailable("disk full")
        return await self.store.append_event(incident_id, **kwargs)

    async def change_incident(
        self, incident_id: int, change: Callable[[Incident], IncidentChange], *, now: float
    ) -> list[Event]:
        def checked(incident: Incident) -> IncidentChange:
            out = change(incident)
            if any(e.kind == EventKind.PLAYBOOK for e in out.events):
                raise StoreUnavailable("disk full")
            return out

        return await self.store.change_incident(incident_id, checked, now=now)


async def undelivered(aiohttp_client: Any, tmp_path: Path) -> tuple[TestClient, Incident]:
    """An app and an opened incident whose pipeline has not run (the test runs it)."""
    settings = make_settings(tmp_path, playbooks={"paths": [str(playbook_dir(tmp_path))]})
    client, _ = await start(aiohttp_client, settings)
    await client.app[keys.RUNNER].stop()
    resp = await client.post("/alertmanager", json=payload("captured-firing"))
    assert resp.status == 200
    await client.app[keys.INBOX].drain()
    [found] = await client.app[keys.STORE].list_incidents()
    return client, found


async def test_the_match_is_recorded_all_or_nothing(aiohttp_client: Any, tmp_path: Path) -> None:
    client, found = await undelivered(aiohttp_client, tmp_path)
    store, pipeline = client.app[keys.STORE], client.app[keys.PIPELINE]
    pipeline.store = FailingMatchWrite(store)
    with pytest.raises(StoreUnavailable):
        await pipeline.run(found.id)
    failed = await store.get_incident(found.id)
    # neither the playbook, the severity override nor the state without the event
    assert (failed.playbook, failed.severity.value) == (None, "P1")
    assert "pipeline" not in failed.data
    assert events(failed, EventKind.PLAYBOOK) == []

    pipeline.store = store
    await pipeline.run(found.id)  # the retried job
    incident = await store.get_incident(found.id)
    assert (incident.playbook, incident.severity.value) == ("checkout-errors", "P0")
    [matched] = events(incident, EventKind.PLAYBOOK)
    assert matched.data == {"playbooks": ["checkout-errors"], "severity": "P0"}
    assert matched.message == "playbook checkout-errors matched; severity P1 -> P0"


async def test_a_match_recorded_meanwhile_is_not_recorded_twice(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client, found = await undelivered(aiohttp_client, tmp_path)
    store, pipeline = client.app[keys.STORE], client.app[keys.PIPELINE]
    other = Pipeline(store, pipeline.playbooks, pipeline.diagnostics, pipeline.clock)

    async def other_run() -> None:  # another worker records the match first
        await other._match(await store.get_incident(found.id))

    pipeline.store = WriterInBetween(store, other_run)
    await pipeline.run(found.id)
    incident = await store.get_incident(found.id)
    [matched] = events(incident, EventKind.PLAYBOOK)
    assert matched.data["playbooks"] == ["checkout-errors"]
    assert incident.playbook == "checkout-errors"
    assert len(events(incident, EventKind.DIAGNOSTICS_DONE)) == 1  # the run went on
