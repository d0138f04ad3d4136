"""The budget, batch, procedure and common-issue runbooks, through ``alertpilot simulate``.

For each alert of ``rules/operations.yml`` (and the budget, streaming and fact-check
alerts whose playbooks those runbooks change), with the labels the rule really produces,
``simulate`` runs the shipped playbooks under the shipped config's allowlists and says
which playbook matched, which diagnostics it runs in which order and which steps it
plans, in which mode, with which call. Without Prometheus every precondition is "not
checked"; with a real Prometheus the preconditions decide which steps are offered:
batch work stops at 100% of the budget before a run starts, and the fact-check runbook
offers stricter grounding only once the detector is ruled out.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main

# tests/ is on sys.path (pyproject: pythonpath)
from stack import MetricsExporter, Prometheus

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = yaml.safe_load((ROOT / "configs" / "alertpilot.yaml").read_text())
NOWHERE = "http://127.0.0.1:9"
API = "http://127.0.0.1:8081"


def payload(labels: dict[str, str]) -> dict[str, Any]:
    """An Alertmanager webhook body (version 4) with one firing alert."""
    return {
        "receiver": "alertpilot",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": labels["alertname"]},
                "startsAt": "2026-01-05T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph",
                "fingerprint": "5d1c4a2b9e8f7a61",
            }
        ],
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{labels["alertname"]}"}}',
        "truncatedAlerts": 0,
    }


def write_config(tmp_path: Path, prometheus: str = NOWHERE, mode: str = "approval") -> Path:
    """The shipped playbooks and allowlists; a store and upstreams of its own."""
    config = {
        "store": {"url": f"sqlite:///{tmp_path}/alertpilot.db"},
        "playbooks": {"paths": [str(ROOT / "playbooks")]},
        "prometheus": {"url": prometheus},
        "alertmanager": {"url": NOWHERE},
        "diagnostics": {"allowed_urls": SHIPPED_CONFIG["diagnostics"]["allowed_urls"]},
        "remediation": {**SHIPPED_CONFIG["remediation"], "mode": mode},
    }
    path = tmp_path / "alertpilot.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def simulate(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    labels: dict[str, str],
    mode: str = "approval",
) -> dict[str, Any]:
    config = write_config(tmp_path, mode=mode)
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(payload(labels)))
    assert main(["simulate", "--config", str(config), "--json", str(alert)]) == 0
    plan: dict[str, Any] = json.loads(capsys.readouterr().out)
    return plan


def steps(plan: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["step"], r["mode"]) for r in plan["remediations"]]


def step(plan: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in plan["remediations"] if r["step"] == name)
    return found


def diagnostics(plan: dict[str, Any]) -> list[str]:
    return [d["name"] for d in plan["diagnostics"]]


# Per playbook: its diagnostics and its steps (with their mode), in the runbook's order.
PLANS: dict[str, tuple[list[str], list[tuple[str, str]]]] = {
    "token-budget": (
        ["budget_used_ratio", "projected_ratio_in_24h", "tokens_by_kind",
         "top_tenants_by_tokens", "users_at_token_limit", "per_user_limits", "answer_model"],
        [("tighten_per_user_limits", "approval"), ("switch_to_fast_model", "approval")],
    ),
    "batch-schedule-missed": (
        ["time_since_last_start", "schedule_interval", "time_since_last_finish",
         "run_in_progress", "run_paused", "scheduler_paused", "budget_used_ratio",
         "worker_restarts_6h", "workers"],
        [("start_run", "approval")],
    ),
    "batch-scheduler-paused": (
        ["scheduler_paused", "budget_used_ratio", "budgets", "jobs_overdue"],
        [("resume_batch_scheduler", "approval"), ("silence_planned_pause", "suggest")],
    ),
    "batch-item-cost-high": (
        ["cost_per_item", "cost_per_item_trend", "success_ratio", "llm_retry_ratio",
         "spend_by_model", "batch_model"],
        [("switch_batch_to_fallback_model", "approval"), ("pause_costly_job", "approval")],
    ),
    "query-cost-high": (
        ["cost_per_query", "cost_per_query_trend", "tokens_per_query", "llm_calls_per_query",
         "cache_hit_ratio", "spend_by_model"],
        [("switch_to_fast_model", "approval")],
    ),
    "release-regression": (
        ["error_ratio", "error_ratio_day_before", "versions_last_2h",
         "instances_on_new_version", "errors_by_route", "release_flags", "llm_failure_ratio",
         "latency_p95", "related_alerts"],
        [("disable_heuristics", "approval"), ("disable_smart_routing", "approval"),
         ("revert_to_fast_model", "approval"), ("tighten_per_user_limits", "approval"),
         ("rollback_release", "approval"), ("disable_copilot", "approval")],
    ),
    "tenant-rate-limits": (
        ["tenant_share_of_requests", "tenant_429_ratio", "tenant_requests_per_second",
         "top_tenants", "tenant_limits", "default_limits", "throttled_by_limit", "latency_p95"],
        [("lower_tenant_limit", "approval"), ("silence_tenant_load_test", "suggest")],
    ),
    "vector-search-failures": (
        ["error_ratio", "failures_by_status", "latency_p95", "search_rate_vs_yesterday",
         "embedding_failure_ratio", "index_documents_change", "retrieval_fallback",
         "related_alerts"],
        [("enable_retrieval_fallback", "approval"), ("reindex", "suggest")],
    ),
    "redis-outage": (
        ["redis_up", "instances_down", "cache_error_ratio", "memory_used_ratio",
         "evictions_per_second", "rejected_connections", "redis_restarts", "latency_p95",
         "cache_bypass"],
        [("enable_cache_bypass", "approval"), ("silence_cache_hit_rate", "suggest")],
    ),
    "cpu-pressure": (
        ["cpu_usage_ratio", "cpu_throttled_ratio", "cpu_by_pod", "request_rate_vs_yesterday",
         "versions_last_hour", "latency_p95"],
        [("scale_out_workers", "approval")],
    ),
    "memory-pressure": (
        ["memory_ratio", "memory_ratio_by_pod", "projected_ratio_in_1h", "restarts_last_hour",
         "in_process_cache_bytes", "versions_last_day"],
        [("restart_deployment", "approval")],
    ),
    "api-key-expiry": (
        ["time_left", "auth_failures_per_second", "key_in_use", "standby_keys_time_left",
         "keys_expiring_this_week", "provider_client_error_ratio"],
        [("switch_to_standby_key", "approval"), ("fail_over_provider", "suggest")],
    ),
}  # fmt: skip

BUDGET = {"service": "copilot", "budget": "daily"}
JOB = {"service": "enricher", "batch_job": "nightly-summaries"}
POD = {"namespace": "prod", "service": "copilot"}
TENANT = {"service": "copilot", "tenant": "acme"}
INDEX = {"service": "copilot", "index": "docs"}
KEY = {"service": "copilot", "provider": "openai", "key": "openai-primary"}
COPILOT = {"service": "copilot"}

# Every alert of rules/operations.yml with the labels its rule produces
# (tests/rules/operations.test.yml): the playbook that must match, the incident severity.
CASES: list[tuple[str, str, dict[str, str], str, str]] = [
    ("TokenBudgetHigh", "warning", BUDGET, "token-budget", "P2"),
    ("TokenBudgetCritical", "critical", BUDGET, "token-budget", "P1"),
    ("TokenBudgetExhausted", "critical", BUDGET, "token-budget", "P1"),
    ("BatchRunMissed", "warning", JOB, "batch-schedule-missed", "P2"),
    ("BatchRunNotFinished", "warning", JOB, "batch-schedule-missed", "P2"),
    ("BatchSchedulerPaused", "warning", {"service": "enricher"}, "batch-scheduler-paused", "P2"),
    ("BatchCostPerItemHigh", "warning", JOB, "batch-item-cost-high", "P2"),
    ("QueryCostHigh", "warning", COPILOT, "query-cost-high", "P2"),
    ("ReleaseRegression", "critical", POD, "release-regression", "P1"),
    ("TenantThrottled", "warning", TENANT, "tenant-rate-limits", "P2"),
    ("TenantTopTalker", "warning", TENANT, "tenant-rate-limits", "P2"),
    ("VectorSearchErrors", "critical", INDEX, "vector-search-failures", "P1"),
    ("VectorSearchSlow", "warning", INDEX, "vector-search-failures", "P2"),
    ("RedisDown", "critical", COPILOT, "redis-outage", "P1"),
    ("CacheBackendErrors", "warning", COPILOT, "redis-outage", "P2"),
    ("RedisMemoryHigh", "warning", COPILOT, "redis-outage", "P2"),
    ("CPUPressure", "warning", POD, "cpu-pressure", "P2"),
    ("MemoryPressure", "warning", POD, "memory-pressure", "P2"),
    ("APIKeyExpiring", "warning", KEY, "api-key-expiry", "P2"),
    ("APIKeyExpiring", "critical", KEY, "api-key-expiry", "P1"),
    ("APIKeyRejected", "critical", KEY, "api-key-expiry", "P1"),
]


def test_the_cases_cover_every_alert_of_the_operations_rules() -> None:
    rules = yaml.safe_load((ROOT / "rules" / "operations.yml").read_text())["groups"]
    raised = {(r["alert"], r["labels"]["severity"]) for g in rules for r in g["rules"]}
    assert {(name, severity) for name, severity, *_ in CASES} == raised


@pytest.mark.parametrize(
    ("alertname", "severity", "labels", "playbook", "incident_severity"),
    CASES,
    ids=[f"{c[0]}-{c[1]}" for c in CASES],
)
def test_each_alert_plans_its_runbook(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    alertname: str,
    severity: str,
    labels: dict[str, str],
    playbook: str,
    incident_severity: str,
) -> None:
    plan = simulate(tmp_path, capsys, {"alertname": alertname, **labels, "severity": severity})
    assert plan["playbooks"] == [playbook]
    assert plan["incident"]["severity"] == incident_severity
    diags, planned = PLANS[playbook]
    assert diagnostics(plan) == diags
    assert steps(plan) == planned
    for item in plan["remediations"]:
        # every step renders for these labels and passes the allowlists
        assert item["stopped_by"] is None, item
        assert item["call"], item
    assert plan["side_effects"] == "none (simulation)"
    assert not (tmp_path / "alertpilot.db").exists()


def test_the_kill_switch_and_the_emergency_rollback_are_guarded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = {"alertname": "ReleaseRegression", "namespace": "prod", "service": "copilot"}
    plan = simulate(tmp_path, capsys, {**labels, "severity": "critical"}, mode="auto")
    # approval steps wait for a person even under remediation.mode auto
    assert {mode for _, mode in steps(plan)} == {"approval"}
    calls = {r["step"]: r["call"] for r in plan["remediations"]}
    assert calls["disable_heuristics"] == f"POST {API}/v1/flags"
    assert calls["tighten_per_user_limits"] == f"POST {API}/v1/ratelimits/override"
    assert calls["rollback_release"] == "kubectl rollout undo deployment/copilot --namespace prod"
    assert calls["disable_copilot"] == f"POST {API}/v1/flags"
    notes = {r["step"]: " | ".join(r["notes"]) for r in plan["remediations"]}
    assert 'flag="heuristics"' in notes["disable_heuristics"]
    assert 'flag="copilot"' in notes["disable_copilot"] and "== 0" in notes["disable_copilot"]
    assert 'setting="burst"' in notes["tighten_per_user_limits"]
    assert "rollback if verify fails: webhook" in notes["tighten_per_user_limits"]
    assert "rollback if verify fails: webhook" in notes["revert_to_fast_model"]
    # turning a suspect feature back on, or the co-pilot, is a person's call
    for name in ("disable_heuristics", "disable_smart_routing", "disable_copilot"):
        assert "rollback" not in notes[name]
    assert "precondition not checked" in notes["rollback_release"]


def test_budget_at_100_percent_stops_batch_before_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = {
        "alertname": "LLMBudgetExhausted",
        "service": "enricher",
        "budget": "monthly_usd",
        "severity": "critical",
    }
    shipped = simulate(tmp_path, capsys, labels)
    # the shipped config's ceiling (approval) holds even the auto step for a person
    assert steps(shipped) == [
        ("pause_batch_scheduler", "approval"),
        ("pause_batch_jobs", "approval"),
        ("silence_paused_batch_alerts", "approval"),
    ]
    auto = simulate(tmp_path, capsys, labels, mode="auto")
    assert steps(auto)[0] == ("pause_batch_scheduler", "auto")
    scheduler = step(auto, "pause_batch_scheduler")
    assert scheduler["call"] == f"POST {API}/v1/batch/scheduler/pause"
    assert scheduler["reason"] == "runs automatically"
    assert any("batch_scheduler_paused" in n and "== 1" in n for n in scheduler["notes"])
    assert step(auto, "pause_batch_jobs")["mode"] == "approval"
    assert auto["diagnostics"][-1]["name"] == "batch_scheduler_paused"


def test_streaming_is_turned_off_with_a_banner_and_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = {"alertname": "StreamingStalls", "service": "copilot", "severity": "warning"}
    plan = simulate(tmp_path, capsys, labels)
    assert plan["playbooks"] == ["streaming-stalls"]
    assert steps(plan)[0] == ("disable_streaming", "approval")
    notes = " | ".join(step(plan, "disable_streaming")["notes"])
    assert 'flag="streaming_fallback"' in notes
    assert "ui_banner_active" in notes and "== 2" in notes
    assert "rollback if verify fails: webhook" in notes
    body = _playbook_step("streaming.yaml", "disable_streaming")["action"]["body"]
    assert body["banner"] and body["flag"] == "streaming_fallback" and body["enabled"] is True


def test_factcheck_checks_the_detector_before_offering_stricter_grounding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = simulate(
        tmp_path,
        capsys,
        {"alertname": "FactCheckRejectionSpike", "service": "support-bot", "severity": "warning"},
    )
    assert plan["playbooks"] == ["factcheck-rejection-spike"]
    names = diagnostics(plan)
    assert names[:4] == [
        "rejection_ratio",
        "detector_threshold_changes",
        "detector_threshold",
        "source_coverage",
    ]
    assert names.index("source_coverage") < names.index("rag_miss_ratio")
    assert names.index("rag_miss_ratio") < names.index("rejection_ratio_by_model")
    assert steps(plan) == [
        ("revert_detector_threshold", "approval"),
        ("revert_model", "suggest"),
        ("enable_strict_grounding", "approval"),
    ]
    strict = " | ".join(step(plan, "enable_strict_grounding")["notes"])
    assert "precondition not checked" in strict
    assert "factcheck_detector_threshold" in strict and "factcheck_claims_total" in strict


def _playbook_step(file: str, name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "playbooks" / file).read_text())
    for playbook in loaded if isinstance(loaded, list) else [loaded]:
        for spec in playbook.get("remediations", []):
            if spec["name"] == name:
                found: dict[str, Any] = spec
                return found
    raise AssertionError(f"no step {name} in {file}")


# a real Prometheus decides the preconditions ----------------------------------------


async def _simulate_live(tmp_path: Path, prometheus: str, labels: dict[str, str]) -> dict[str, Any]:
    folder = tmp_path / labels["alertname"] / labels["service"]
    folder.mkdir(parents=True)
    config = write_config(folder, prometheus=prometheus, mode="auto")
    alert = folder / "alert.json"
    alert.write_text(json.dumps(payload(labels)))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "simulate", "--config", str(config), "--json", str(alert),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    plan: dict[str, Any] = json.loads(out)
    assert plan["prometheus"]["reachable"]
    return plan


@pytest.mark.integration
async def test_preconditions_read_from_prometheus(tmp_path: Path) -> None:
    async with MetricsExporter() as exporter:
        # enricher: its budget is used up and no batch run is going
        exporter.set("llm_budget_limit", 1000, {"service": "enricher", "budget": "monthly_usd"})
        exporter.set("llm_budget_used", 1010, {"service": "enricher", "budget": "monthly_usd"})
        exporter.set("batch_run_in_progress", 0, {"service": "enricher", "batch_job": "nightly"})
        # support-bot: the detector's threshold changes; help-bot: unchanged, sources found
        exporter.set("factcheck_detector_threshold", 0.5, {"service": "support-bot"})
        exporter.set("factcheck_detector_threshold", 0.5, {"service": "help-bot"})
        for service in ("support-bot", "help-bot"):
            exporter.inc("factcheck_claims_total", 0, {"service": service, "source": "found"})
            exporter.inc("factcheck_claims_total", 0, {"service": service, "source": "missing"})
        async with Prometheus(tmp_path, scrape_targets=[exporter.target]) as prom:
            await prom.wait_for("factcheck_detector_threshold", lambda d: len(d["result"]) == 2)
            exporter.set("factcheck_detector_threshold", 0.8, {"service": "support-bot"})
            for service in ("support-bot", "help-bot"):
                exporter.inc("factcheck_claims_total", 97, {"service": service, "source": "found"})
                exporter.inc("factcheck_claims_total", 3, {"service": service, "source": "missing"})
            await prom.wait_for(
                "changes(factcheck_detector_threshold[1d]) > 0", lambda d: bool(d["result"])
            )
            await prom.wait_for(
                "rate(factcheck_claims_total[15m]) > 0", lambda d: len(d["result"]) == 4
            )
            budget, changed, unchanged = await asyncio.gather(
                _simulate_live(tmp_path, prom.url, {
                    "alertname": "LLMBudgetExhausted", "service": "enricher",
                    "budget": "monthly_usd", "severity": "critical"}),
                _simulate_live(tmp_path, prom.url, {
                    "alertname": "FactCheckRejectionSpike", "service": "support-bot",
                    "severity": "warning"}),
                _simulate_live(tmp_path, prom.url, {
                    "alertname": "FactCheckRejectionSpike", "service": "help-bot",
                    "severity": "warning"}),
            )  # fmt: skip

    # nothing is running, yet batch work stops: the scheduler is held before the next run
    scheduler = step(budget, "pause_batch_scheduler")
    assert (scheduler["mode"], scheduler["stopped_by"]) == ("auto", None)
    assert step(budget, "pause_batch_jobs")["stopped_by"] == "when"

    # the threshold changed: put it back; no stricter grounding on a misfiring detector
    assert step(changed, "revert_detector_threshold")["stopped_by"] is None
    assert step(changed, "enable_strict_grounding")["stopped_by"] == "when"
    # detector unchanged and 97% of claims sourced: now stricter grounding is offered
    assert step(unchanged, "revert_detector_threshold")["stopped_by"] == "when"
    assert step(unchanged, "enable_strict_grounding")["stopped_by"] is None
    coverage = next(d for d in unchanged["diagnostics"] if d["name"] == "source_coverage")
    assert coverage["status"] == "ok" and "97%" in coverage["text"], coverage
