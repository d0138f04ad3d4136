"""``alertpilot simulate`` on the alerts of the outage, error, LLM provider, latency, SLO,
quality and cost budget runbooks.

Each alert carries the labels its rule really produces (the label sets the promtool unit
tests in tests/rules/ expect, which promtool checks against rules/): it reaches the
playbook written for it, at the runbook's severity, every diagnostic and step renders
for those labels, the checks the runbook names are there, and the steps it proposes are
the runbook's next actions (the right one for each cause). Nothing runs: Prometheus and
Alertmanager are unreachable here, except in the last test, where a real Prometheus
scrapes a dead target and evaluates rules/outages.yml.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main
from bot.core.alerts import AlertGroup, parse_group
from bot.settings import DEFAULT_CONFIG, Settings, load_settings
from bot.simulate import simulate
from stack import Prometheus, free_port

ROOT = Path(__file__).resolve().parent.parent
UNIT_TEST_FILES = sorted((ROOT / "tests" / "rules").glob("*.test.yml"))
CLOSED = "http://127.0.0.1:9"  # nothing listens: "unavailable" at once


@dataclass(frozen=True)
class Case:
    alertname: str
    severity: str  # the rule's severity label
    playbook: str
    incident: str  # the incident's severity, P0-P3
    diagnostics: tuple[str, ...]  # checks the runbook names (the playbook may have more)
    steps: tuple[tuple[str, str], ...] = ()  # (step, mode) proposed, in order
    calls: dict[str, str] = field(default_factory=dict)  # step -> what its call holds


CASES = [
    # outages: P0, pages at once
    Case(
        "ServiceDown", "critical", "service-outage", "P0",
        ("targets_up", "targets_down_by_job", "last_scrape_error", "versions_last_hour",
         "deployment_changes_last_hour", "available_replicas", "restarts_last_hour"),
        (("rollback_deploy", "approval"), ("restart_deployment", "approval")),
        {
            "rollback_deploy": "kubectl rollout undo deployment/chat-api --namespace prod",
            "restart_deployment": "kubectl rollout restart deployment/chat-api --namespace prod",
        },
    ),
    Case(
        "ServiceTargetsAbsent", "critical", "service-outage", "P0",
        ("targets_vs_last_day", "available_replicas", "deployment_changes_last_hour"),
        (("rollback_deploy", "approval"), ("restart_deployment", "approval")),
    ),
    Case(
        "TrafficStopped", "critical", "service-outage", "P0",
        ("request_rate", "request_rate_hour_before", "external_probes", "targets_up",
         "versions_last_hour"),
        (("rollback_deploy", "approval"), ("restart_deployment", "approval")),
    ),
    Case(
        "ScrapeTargetDown", "warning", "scrape-target-down", "P2",
        ("target_up", "targets_up", "restarts_last_hour", "memory_last_hour"),
    ),
    # errors: every error counts, not only 5xx
    Case(
        "HighErrorRate", "warning", "high-error-rate", "P2",
        ("error_ratio", "errors_by_reason", "versions_last_hour", "llm_failure_ratio",
         "db_pool_utilization"),
        (("rollback_deploy", "approval"), ("enable_degraded_mode", "suggest")),
    ),
    Case(
        "HighErrorRate", "critical", "high-error-rate", "P1",
        ("error_ratio", "errors_by_reason", "versions_last_hour", "llm_failure_ratio",
         "db_pool_utilization"),
        (("rollback_deploy", "approval"), ("enable_degraded_mode", "suggest")),
    ),
    Case(
        "ErrorRateOutage", "critical", "error-rate-outage", "P0",
        ("error_ratio", "errors_by_reason", "versions_last_hour", "llm_failure_ratio"),
        (("rollback_deploy", "approval"), ("fail_over_llm", "approval"),
         ("enable_degraded_mode", "approval")),
    ),
    # the LLM provider refusing calls: one cause, one next step
    Case(
        "LLMProviderAuthFailing", "critical", "llm-provider-auth", "P1",
        ("auth_errors_per_second", "auth_errors_by_model", "other_providers_failure_ratio"),
        (("fail_over_provider", "approval"),),
        {"fail_over_provider": "POST http://127.0.0.1:8081/v1/llm/failover"},
    ),
    Case(
        "LLMProviderQuotaExhausted", "critical", "llm-provider-quota", "P1",
        ("quota_errors_per_second", "tokens_vs_last_week", "budget_used_ratio",
         "other_providers_failure_ratio"),
        (("fail_over_provider", "approval"), ("pause_batch_jobs", "suggest")),
        {
            "fail_over_provider": "POST http://127.0.0.1:8081/v1/llm/failover",
            "pause_batch_jobs": "POST http://127.0.0.1:8081/v1/batch/pause",
        },
    ),
    Case(
        "LLMModelUnavailable", "critical", "llm-model-unavailable", "P1",
        ("model_not_found_per_second", "other_models_failure_ratio", "versions_last_day"),
        (("switch_to_fallback_model", "approval"),),
        {"switch_to_fallback_model": "POST http://127.0.0.1:8081/v1/llm/model"},
    ),
    Case(
        "LLMProviderErrors", "critical", "llm-provider-failures", "P1",
        ("provider_failures_per_second", "provider_5xx_ratio", "failures_by_model_and_status",
         "other_providers_failure_ratio"),
        (("fail_over_provider", "approval"), ("switch_to_fallback_model", "suggest")),
    ),
    Case(
        "LLMProviderRateLimitSpike", "warning", "llm-provider-rate-limit-spike", "P2",
        ("rate_limited_per_second", "rate_limited_vs_last_week", "rate_limited_vs_last_day",
         "calls_vs_last_week"),
        (("pause_batch_jobs", "approval"), ("fail_over_provider", "suggest")),
    ),
    # latency and objectives
    Case(
        "HighLatencyP95Strict", "warning", "high-latency-strict", "P2",
        ("latency_p95", "llm_latency_p95", "retrieval_p95", "slow_queries_p95"),
        (("scale_out_workers", "approval"), ("switch_to_fast_model", "approval")),
    ),
    Case(
        "LLMTimeToFirstTokenHigh", "warning", "llm-time-to-first-token", "P2",
        ("ttft_vs_objective", "ttft_p95_by_model", "prompt_tokens_vs_yesterday"),
        (("fail_over_provider", "approval"),),
    ),
    Case(
        "LLMTotalLatencyHigh", "warning", "llm-total-latency", "P2",
        ("duration_vs_objective", "ttft_vs_objective", "completion_tokens_vs_yesterday"),
        (("fail_over_provider", "approval"), ("switch_to_fast_model", "suggest")),
    ),
    Case(
        "ErrorBudgetBurn", "critical", "error-budget-burn", "P1",
        ("burn_rate_1h", "burn_rate_by_window", "budget_spent_3d", "errors_by_reason"),
        (("rollback_deploy", "approval"),),
    ),
    Case(
        "ErrorBudgetBurn", "warning", "error-budget-burn", "P2",
        ("burn_rate_1h", "burn_rate_by_window", "budget_spent_3d"),
        (("rollback_deploy", "approval"),),
    ),
    Case(
        "AvailabilityBudgetBurn", "critical", "availability-budget-burn", "P1",
        ("burn_rate_1h", "burn_rate_by_window", "errors_by_route_and_code"),
        (("rollback_deploy", "approval"),),
    ),
    Case(
        "AvailabilityBudgetBurn", "warning", "availability-budget-burn", "P2",
        ("burn_rate_1h", "burn_rate_by_window", "budget_spent_3d"),
        (("rollback_deploy", "approval"),),
    ),
    # quality and resources
    Case(
        "EvaluationSuccessLow", "warning", "evaluation-success-low", "P2",
        ("success_ratio", "success_by_model", "judge_error_ratio", "versions_last_day"),
        (("revert_answer_model", "suggest"),),
    ),
    Case(
        "ProcessMemoryHigh", "warning", "process-memory-high", "P2",
        ("resident_memory", "growth_per_hour", "memory_by_instance", "versions_last_day"),
        (("restart_deployment", "approval"),),
    ),
    Case(
        "RAGRetrievalSlow", "warning", "rag-retrieval-latency", "P2",
        ("retrieval_latency_p95", "other_indexes_p95", "retrievals_vs_yesterday"),
        (("enable_degraded_mode", "suggest"),),
    ),
    # the cost budget at 50/75/90/100% (the token budget's 80/90/100% is in
    # tests/test_operations_playbooks.py): a heads-up, then the page at 90% with batch
    # work paused by a person, then at 100% the scheduler held before the next run
    Case(
        "LLMBudgetBurn", "info", "llm-budget-burn", "P3",
        ("budget_used_ratio", "projected_ratio_in_24h", "spend_by_model"),
    ),
    Case(
        "LLMBudgetBurn", "warning", "llm-budget-burn", "P2",
        ("budget_used_ratio", "projected_ratio_in_24h", "spend_by_model"),
    ),
    Case(
        "LLMBudgetCritical", "critical", "llm-budget-critical", "P1",
        ("budget_used_ratio", "projected_ratio_in_24h", "spend_per_hour", "spend_by_model"),
        (("pause_batch_jobs", "suggest"),),
        {"pause_batch_jobs": "POST http://127.0.0.1:8081/v1/batch/pause"},
    ),
    Case(
        "LLMBudgetExhausted", "critical", "llm-budget-exhausted", "P1",
        ("budget_used_ratio", "batch_runs_in_progress", "batch_scheduler_paused"),
        (("pause_batch_scheduler", "approval"), ("pause_batch_jobs", "approval"),
         ("silence_paused_batch_alerts", "approval")),
        {"pause_batch_scheduler": "POST http://127.0.0.1:8081/v1/batch/scheduler/pause"},
    ),
    # the narrative service's own runbook
    Case(
        "AlertpilotNarrativeErrors", "warning", "alertpilot-narrative", "P2",
        ("error_ratio_by_provider", "errors_by_type"),
    ),
    Case(
        "AlertpilotNarrativeSlow", "warning", "alertpilot-narrative", "P2",
        ("generation_p99", "breaker_open"),
    ),
]  # fmt: skip


def rule_labels(alertname: str, severity: str) -> dict[str, str]:
    """The labels of the first alert of this name and severity the unit tests see firing."""
    for path in UNIT_TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                for alert in case["exp_alerts"]:
                    labels = {k: str(v) for k, v in alert["exp_labels"].items()}
                    if case["alertname"] == alertname and labels["severity"] == severity:
                        return {"alertname": alertname, **labels}
    raise AssertionError(f"no unit test sees {alertname} ({severity}) firing")


def payload(labels: dict[str, str]) -> dict[str, Any]:
    """An Alertmanager webhook body (version 4) with one firing alert, grouped as the
    example receiver groups (alertname, service)."""
    group = {k: labels[k] for k in ("alertname", "service") if k in labels}
    return {
        "version": "4",
        "groupKey": "{}:" + json.dumps(group, sort_keys=True),
        "status": "firing",
        "receiver": "alertpilot",
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {},
                "startsAt": "2026-11-21T05:12:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": "0123456789abcdef",
            }
        ],
    }


def group_of(labels: dict[str, str]) -> AlertGroup:
    return parse_group(json.dumps(payload(labels)))


def write_config(tmp_path: Path, playbooks: Path, prometheus: str = CLOSED, **extra: Any) -> Path:
    """The shipped playbooks and the default config's allowlists; remediation.mode
    approval (the default); upstreams where nothing listens unless told."""
    shipped = load_settings(DEFAULT_CONFIG, env={})
    config: dict[str, Any] = {
        "store": {"url": f"sqlite:///{tmp_path}/a.db"},
        "prometheus": {"url": prometheus},
        "alertmanager": {"url": CLOSED},
        "playbooks": {"paths": [str(playbooks)]},
        "diagnostics": {"allowed_urls": list(shipped.diagnostics.allowed_urls)},
        "remediation": {
            "mode": "approval",
            "allowed_urls": list(shipped.remediation.allowed_urls),
            "allowed_commands": list(shipped.remediation.allowed_commands),
        },
        **extra,
    }
    path = tmp_path / "alertpilot.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def settings_for(tmp_path: Path) -> Settings:
    return load_settings(write_config(tmp_path, ROOT / "playbooks"), env={})


def by_name(items: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {item[key]: item for item in items}


def test_the_cases_cover_every_alert_of_the_outage_provider_and_objective_rules() -> None:
    """Every alert (name and severity) of the rule files these runbooks added; those of
    rules/operations.yml are covered by tests/test_operations_playbooks.py."""
    raised = set()
    for name in ("outages.yml", "llm-provider.yml", "slo.yml"):
        for group in yaml.safe_load((ROOT / "rules" / name).read_text())["groups"]:
            raised |= {
                (r["alert"], r["labels"]["severity"]) for r in group["rules"] if "alert" in r
            }
    assert raised - {(c.alertname, c.severity) for c in CASES} == set()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.alertname}-{c.severity}")
async def test_each_runbook_alert_reaches_its_playbook(case: Case, tmp_path: Path) -> None:
    labels = rule_labels(case.alertname, case.severity)
    plan = await simulate(settings_for(tmp_path), group_of(labels))

    assert plan["playbooks"] == [case.playbook]
    assert plan["incident"]["severity"] == case.incident
    diagnostics = by_name(plan["diagnostics"], "name")
    assert set(case.diagnostics) <= set(diagnostics), sorted(diagnostics)
    for name, item in diagnostics.items():
        assert "does not render" not in (item["query"] or ""), (name, item["query"])
        assert item.get("cause") != "not_applicable", (name, item["text"])
    steps = by_name(plan["remediations"], "step")
    assert [(r["step"], r["mode"]) for r in plan["remediations"]] == list(case.steps)
    for name, step in steps.items():
        assert step["stopped_by"] != "not_applicable", (name, step["reason"])
    for name, call in case.calls.items():
        assert call in steps[name]["call"], steps[name]["call"]
    assert plan["side_effects"] == "none (simulation)"
    assert not (tmp_path / "a.db").exists()


async def test_the_error_ratio_counts_every_error_not_only_5xx(tmp_path: Path) -> None:
    plan = await simulate(
        settings_for(tmp_path), group_of(rule_labels("HighErrorRate", "critical"))
    )
    diagnostics = by_name(plan["diagnostics"], "name")
    ratio = diagnostics["error_ratio"]["query"]
    assert 'sum(rate(request_errors_total{service="checkout"}[5m]))' in ratio
    assert 'or sum(rate(http_requests_total{service="checkout", code=~"5.."}[5m]))' in ratio
    assert "sum by (reason)" in diagnostics["errors_by_reason"]["query"]


async def test_each_llm_provider_cause_gets_its_own_next_step(tmp_path: Path) -> None:
    """An expired key, spent quota, a retired model and throttling are told apart: each
    plan proposes its own action first, with the provider (and model) of the alert."""
    settings = settings_for(tmp_path)
    first_step = {}
    for alertname, severity in [
        ("LLMProviderAuthFailing", "critical"),
        ("LLMProviderQuotaExhausted", "critical"),
        ("LLMModelUnavailable", "critical"),
        ("LLMProviderRateLimitSpike", "warning"),
        ("LLMProviderErrors", "critical"),
    ]:
        plan = await simulate(settings, group_of(rule_labels(alertname, severity)))
        step = plan["remediations"][0]
        first_step[alertname] = (plan["playbooks"][0], step["step"], step["call"])
    assert first_step == {
        "LLMProviderAuthFailing": (
            "llm-provider-auth", "fail_over_provider",
            "POST http://127.0.0.1:8081/v1/llm/failover",
        ),
        "LLMProviderQuotaExhausted": (
            "llm-provider-quota", "fail_over_provider",
            "POST http://127.0.0.1:8081/v1/llm/failover",
        ),
        "LLMModelUnavailable": (
            "llm-model-unavailable", "switch_to_fallback_model",
            "POST http://127.0.0.1:8081/v1/llm/model",
        ),
        "LLMProviderRateLimitSpike": (
            "llm-provider-rate-limit-spike", "pause_batch_jobs",
            "POST http://127.0.0.1:8081/v1/batch/pause",
        ),
        "LLMProviderErrors": (
            "llm-provider-failures", "fail_over_provider",
            "POST http://127.0.0.1:8081/v1/llm/failover",
        ),
    }  # fmt: skip


def test_simulate_cli_prints_the_outage_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(payload(rule_labels("ServiceDown", "critical"))))
    config = write_config(tmp_path, ROOT / "playbooks")
    assert main(["simulate", "--config", str(config), str(alert)]) == 0
    out = capsys.readouterr().out
    assert "incident  [P0] ServiceDown (service=chat-api) (triggered)" in out
    assert "playbooks service-outage (severity P1 -> P0)" in out
    assert '  - service-outage/targets_up [promql] avg(up{service="chat-api"})' in out
    assert (
        "  - service-outage/rollback_deploy [approval] "
        "kubectl rollout undo deployment/chat-api --namespace prod"
    ) in out
    assert (
        "  - service-outage/restart_deployment [approval] "
        "kubectl rollout restart deployment/chat-api --namespace prod"
    ) in out
    assert out.rstrip().endswith("side effects: none (simulation)")


# a real Prometheus --------------------------------------------------------------------


def outage_rules(tmp_path: Path) -> Path:
    """rules/outages.yml as shipped, with ServiceDown's ``for: 2m`` cut to 1s."""
    shipped = yaml.safe_load((ROOT / "rules" / "outages.yml").read_text())
    [rule] = [r for g in shipped["groups"] for r in g["rules"] if r.get("alert") == "ServiceDown"]
    assert rule["for"] == "2m"
    rule["for"] = "1s"
    path = tmp_path / "outages.yml"
    path.write_text(yaml.safe_dump(shipped, sort_keys=False))
    return path


@pytest.mark.integration
async def test_a_dead_service_pages_and_the_playbook_reads_why(tmp_path: Path) -> None:
    """Prometheus scrapes a port where nothing listens: rules/outages.yml raises
    ServiceDown, and the outage playbook, run on that alert, reads the targets down,
    the scrape error and that the restart step's precondition holds."""
    dead = f"127.0.0.1:{free_port()}"
    prom = Prometheus(tmp_path, rule_files=[outage_rules(tmp_path)])
    prom.config["scrape_configs"] = [
        {
            "job_name": "chat",
            "static_configs": [
                {"targets": [dead], "labels": {"service": "chat-api", "namespace": "prod"}}
            ],
        }
    ]
    async with prom:
        await prom.wait_for(
            'ALERTS{alertname="ServiceDown", alertstate="firing"}',
            lambda d: bool(d["result"]),
        )
        [alert] = [a for a in await prom.alerts() if a["labels"]["alertname"] == "ServiceDown"]
        labels = dict(alert["labels"])
        assert labels == {
            "alertname": "ServiceDown",
            "job": "chat",
            "namespace": "prod",
            "service": "chat-api",
            "severity": "critical",
        }
        # the shipped playbooks as they are: the targets are read from prometheus.url
        config = write_config(tmp_path, ROOT / "playbooks", prometheus=prom.url)
        plan = await simulate(load_settings(config, env={}), group_of(labels))

    assert plan["playbooks"] == ["service-outage"]
    assert plan["incident"]["severity"] == "P0"
    diagnostics = by_name(plan["diagnostics"], "name")
    assert (diagnostics["targets_up"]["value"], diagnostics["targets_up"]["passed"]) == (0, False)
    assert diagnostics["targets_down_by_job"]["passed"] is False
    error = diagnostics["last_scrape_error"]
    assert error["status"] == "ok" and error["value"] == 1, error
    [line] = error["lines"]  # the one target down, with why Prometheus cannot scrape it
    assert "connection refused" in line and dead in line, error
    [target] = error["details"]["targets"]
    assert target["health"] == "down" and "connection refused" in target["lastError"]
    assert diagnostics["request_rate"]["status"] == "no_data"  # the service reports nothing
    restart = by_name(plan["remediations"], "step")["restart_deployment"]
    assert restart["stopped_by"] is None, restart
    assert not any("precondition" in note for note in restart["notes"]), restart["notes"]
