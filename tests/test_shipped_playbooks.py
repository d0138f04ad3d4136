"""The shipped playbooks (playbooks/*.yaml) against the shipped rules and config.

- they load with the real loader and the default config's allowlists, no problems;
- every alert the rules raise (the label sets the promtool unit tests in tests/rules/
  expect, which promtool checks against the real rules) is handled by a playbook from
  the file its ``runbook_url`` names, and every playbook handles one of them;
- severities and paging follow DESIGN.md; remediations are guarded;
- every template renders for those real label sets, and with hostile label values the
  rendered PromQL, matchers and command arguments keep the value as data; a real
  Prometheus parses every rendered query, and ``format_query`` shows that a hostile
  value changes nothing but the string literal it is in.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
import yaml

from bot.core.matchers import parse_matcher, promql_string
from bot.playbook.checks import Allowlists
from bot.playbook.loader import check_playbooks, load_playbooks
from bot.playbook.model import (
    DEFAULT_PAGING,
    Action,
    CommandAction,
    PageRule,
    Playbook,
    SilenceAction,
    StepMode,
    TemplatedArg,
    WebhookAction,
)
from bot.playbook.registry import PlaybookSet
from bot.playbook.templating import environment, render
from bot.settings import (
    DEFAULT_CONFIG,
    PlaybookSettings,
    RemediationMode,
    Settings,
    Severity,
    load_settings,
)

# tests/ is on sys.path (pyproject: pythonpath)
from stack import Prometheus, require_binary

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK_DIR = ROOT / "playbooks"
RULE_FILES = sorted((ROOT / "rules").glob("*.yml"))
UNIT_TEST_FILES = sorted((ROOT / "tests" / "rules").glob("*.test.yml"))
PROMTOOL = Path("/usr/bin/promtool")

SHIPPED = {
    "alertpilot.yaml": ["alertpilot-ingest", "alertpilot-notifiers", "alertpilot-narrative"],
    "api-keys.yaml": ["api-key-expiry"],
    "batch-schedule.yaml": ["batch-schedule-missed", "batch-scheduler-paused"],
    "batch.yaml": ["batch-degraded"],
    "cache.yaml": ["cache-hit-rate"],
    "classification-confidence.yaml": ["low-confidence-classifications"],
    "db-pool.yaml": ["db-pool-exhausted"],
    "error-rate.yaml": ["error-rate-outage", "high-error-rate"],
    "evaluation.yaml": ["evaluation-success-low"],
    "factcheck.yaml": ["factcheck-rejection-spike"],
    "latency.yaml": [
        "high-latency",
        "high-latency-strict",
        "llm-time-to-first-token",
        "llm-total-latency",
    ],
    "llm-budget.yaml": ["llm-budget-exhausted", "llm-budget-critical", "llm-budget-burn"],
    "llm-provider.yaml": [
        "llm-provider-failures",
        "llm-provider-auth",
        "llm-provider-quota",
        "llm-model-unavailable",
        "llm-provider-rate-limit-spike",
    ],
    "memory.yaml": ["process-memory-high"],
    "outage.yaml": ["service-outage", "scrape-target-down"],
    "rag.yaml": ["rag-miss-rate", "rag-retrieval-latency"],
    "rate-limits.yaml": ["rate-limit-surge"],
    "redis.yaml": ["redis-outage"],
    "release.yaml": ["release-regression"],
    "resources.yaml": ["cpu-pressure", "memory-pressure"],
    "slo.yaml": ["error-budget-burn", "availability-budget-burn"],
    "streaming.yaml": ["streaming-stalls"],
    "tenant-limits.yaml": ["tenant-rate-limits"],
    "token-budget.yaml": ["token-budget"],
    "unit-cost.yaml": ["batch-item-cost-high", "query-cost-high"],
    "vector-search.yaml": ["vector-search-failures"],
}
# The budget runbook says "page at 90%" (and at 100%): P1 pages at once there.
PAGES_AT_ONCE = {"llm-budget-critical", "llm-budget-exhausted"}
# DESIGN: "stop batch work at 100%" of the budget, without waiting for a person. Every
# other step waits for one (approval) or is only shown (suggest).
AUTO_STEPS = {("llm-budget-exhausted", "pause_batch_scheduler")}
EXPECTED_SEVERITY = {
    ("ServiceDown", "critical"): Severity.P0,
    ("ServiceTargetsAbsent", "critical"): Severity.P0,
    ("TrafficStopped", "critical"): Severity.P0,
    ("ScrapeTargetDown", "warning"): Severity.P2,
    ("ErrorRateOutage", "critical"): Severity.P0,
    ("HighErrorRate", "critical"): Severity.P1,
    ("HighErrorRate", "warning"): Severity.P2,
    ("LLMBudgetExhausted", "critical"): Severity.P1,
    ("LLMBudgetCritical", "critical"): Severity.P1,
    ("LLMBudgetBurn", "warning"): Severity.P2,
    ("LLMBudgetBurn", "info"): Severity.P3,
    ("TokenBudgetExhausted", "critical"): Severity.P1,
    ("TokenBudgetCritical", "critical"): Severity.P1,
    ("TokenBudgetHigh", "warning"): Severity.P2,
    ("LLMProviderAuthFailing", "critical"): Severity.P1,
    ("LLMProviderQuotaExhausted", "critical"): Severity.P1,
    ("LLMModelUnavailable", "critical"): Severity.P1,
    ("LLMProviderRateLimitSpike", "warning"): Severity.P2,
    ("ErrorBudgetBurn", "critical"): Severity.P1,
    ("ErrorBudgetBurn", "warning"): Severity.P2,
    ("AvailabilityBudgetBurn", "critical"): Severity.P1,
    ("AvailabilityBudgetBurn", "warning"): Severity.P2,
}

BENIGN = "benignvalue"
HOSTILE = [
    '"}) or vector(1) #',
    '\\"} or on() vector(1) or up{a=\\"',
    "'] or vector(1) or ['",
    "`) or vector(1)",
    "$(rm -rf /)",
    "; kubectl delete namespace prod",
    "prod\n",
    "prod\nkube-system",
    "{{ 7 * 7 }}",
    "{% raw %}",
    ".*",
    "é\u2028\t\\",
    "",
]

Kind = Literal["promql", "matcher", "text", "arg"]
WHOLE_LABEL = re.compile(r"(\w+(=|!=|=~|!~))?\{\{ labels\.\w+( \| quote)? \}\}")


@dataclass(frozen=True)
class Template:
    where: str
    kind: Kind
    source: str
    pattern: str | None = None


# loading ----------------------------------------------------------------------------


def shipped_settings() -> Settings:
    settings = load_settings(DEFAULT_CONFIG, env={})
    return settings.model_copy(update={"playbooks": PlaybookSettings(paths=[str(PLAYBOOK_DIR)])})


@pytest.fixture(scope="module")
def settings() -> Settings:
    return shipped_settings()


@pytest.fixture(scope="module")
def playbooks(settings: Settings) -> PlaybookSet:
    return load_playbooks(settings)


@pytest.fixture(scope="module")
def file_of(settings: Settings) -> dict[str, str]:
    """Playbook name -> the file it is loaded from."""
    allow = Allowlists.from_settings(settings)
    out = {}
    for path in sorted(PLAYBOOK_DIR.glob("*.yaml")):
        for playbook in check_playbooks([path], allow).playbooks:
            out[playbook.name] = path.name
    return out


def alert_label_sets() -> list[dict[str, str]]:
    """The label sets of every alert the promtool unit tests see firing."""
    found: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for path in UNIT_TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                for alert in case["exp_alerts"]:
                    labels = {"alertname": case["alertname"], **alert["exp_labels"]}
                    labels = {k: str(v) for k, v in labels.items()}
                    found.setdefault(tuple(sorted(labels.items())), labels)
    return list(found.values())


def runbook_urls() -> dict[str, str]:
    out = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    out[rule["alert"]] = rule["annotations"]["runbook_url"]
    return out


def label_id(labels: Mapping[str, str]) -> str:
    return f"{labels['alertname']}-{labels.get('severity', '')}-{labels.get('service', '')}"


# walking the templates ----------------------------------------------------------------


def templates(playbook: Playbook) -> Iterator[Template]:
    name = playbook.name
    for diag in playbook.diagnostics:
        where = f"{name}.diagnostics.{diag.name}"
        if diag.kind in ("promql", "promql_range"):
            yield Template(f"{where}.query", "promql", diag.query)
        elif diag.kind == "alerts":
            for i, matcher in enumerate(diag.matchers):
                yield Template(f"{where}.matchers[{i}]", "matcher", matcher)
        elif diag.kind == "http":
            yield Template(f"{where}.url", "text", diag.url)
    for step in playbook.remediations:
        where = f"{name}.remediations.{step.name}"
        if step.when is not None:
            yield Template(f"{where}.when", "promql", step.when)
        if step.verify is not None:
            yield Template(f"{where}.verify.query", "promql", step.verify.query)
        yield from action_templates(f"{where}.action", step.action)
        if step.rollback is not None:
            yield from action_templates(f"{where}.rollback", step.rollback)


def action_templates(where: str, action: Action) -> Iterator[Template]:
    if isinstance(action, SilenceAction):
        for i, matcher in enumerate(action.matchers):
            yield Template(f"{where}.matchers[{i}]", "matcher", matcher)
        yield Template(f"{where}.comment", "text", action.comment)
    elif isinstance(action, WebhookAction):
        yield Template(f"{where}.url", "text", action.url)
        for key, value in (action.body or {}).items():
            if isinstance(value, str):
                yield Template(f"{where}.body.{key}", "text", value)
    elif isinstance(action, CommandAction):
        for i, arg in enumerate(action.argv):
            if isinstance(arg, TemplatedArg):
                yield Template(f"{where}.argv[{i}]", "arg", arg.template, arg.pattern)


def context(labels: Mapping[str, str], title: str) -> dict[str, Any]:
    """What bot.playbook.templating.context() gives templates for one firing alert."""
    return {
        "labels": labels,
        "annotations": {},
        "common_labels": labels,
        "common_annotations": {},
        "alerts": [{"labels": labels, "annotations": {}, "status": "firing"}],
        "incident": {
            "id": 7,
            "key": "test",
            "severity": "P1",
            "status": "triggered",
            "title": title,
        },
    }


def hostile_context(value: str) -> dict[str, Any]:
    labels: defaultdict[str, str] = defaultdict(lambda: value)
    return context(labels, value)


def render_all(playbook: Playbook, ctx: Mapping[str, Any]) -> list[tuple[Template, str]]:
    env = environment()
    return [(t, render(env, t.source, ctx)) for t in templates(playbook)]


def is_whole_label(template: str) -> bool:
    """``{{ labels.x }}`` or ``{{ labels.x | quote }}`` after an operator: the rendered
    value is exactly one label value."""
    return WHOLE_LABEL.fullmatch(template) is not None


# shape --------------------------------------------------------------------------------


def test_shipped_playbooks_load_cleanly_with_the_default_config(settings: Settings) -> None:
    report = check_playbooks(settings.playbooks.paths, Allowlists.from_settings(settings))
    assert report.problems == []
    assert [f.name for f in report.files] == sorted(SHIPPED)
    assert sorted(p.name for p in report.playbooks) == sorted(
        name for names in SHIPPED.values() for name in names
    )


def test_playbooks_sit_in_the_file_named_for_their_runbook(file_of: dict[str, str]) -> None:
    assert file_of == {name: file for file, names in SHIPPED.items() for name in names}


@pytest.mark.integration
def test_every_rendered_query_parses_with_promtool(settings: Settings) -> None:
    require_binary(PROMTOOL)  # the loader skips this check quietly without promtool
    report = check_playbooks(
        settings.playbooks.paths, Allowlists.from_settings(settings), promtool=str(PROMTOOL)
    )
    assert report.problems == []


def test_each_playbook_is_complete(playbooks: PlaybookSet) -> None:
    for playbook in playbooks:
        assert playbook.description and playbook.runbook.strip(), playbook.name
        assert [d.primary for d in playbook.diagnostics].count(True) == 1, playbook.name
        assert len(playbook.diagnostics) >= 3, playbook.name
        assert playbook.links and all(link.url.startswith("https://") for link in playbook.links)
        assert any(d.expect is not None for d in playbook.diagnostics), playbook.name
        for diag in playbook.diagnostics:
            assert diag.label, f"{playbook.name}.{diag.name} needs a human label"


def test_remediations_are_guarded(playbooks: PlaybookSet, settings: Settings) -> None:
    allowed_urls = set(settings.remediation.allowed_urls)
    commands = set()
    auto = set()
    for playbook in playbooks:
        for step in playbook.remediations:
            where = f"{playbook.name}.{step.name}"
            if step.mode is StepMode.AUTO:
                auto.add((playbook.name, step.name))
                assert step.when is not None and step.verify is not None, where
            else:
                assert step.mode in (StepMode.SUGGEST, StepMode.APPROVAL), where
            assert step.description, where
            assert step.max_runs <= 2, where
            for action in (step.action, step.rollback):
                if isinstance(action, WebhookAction):
                    assert action.url in allowed_urls, where
                elif isinstance(action, CommandAction):
                    commands.add(tuple(a for a in action.argv if isinstance(a, str)))
                    assert action.argv[0] in settings.remediation.allowed_commands, where
                    for arg in action.argv[1:]:
                        if isinstance(arg, TemplatedArg):
                            assert arg.pattern.startswith("^") and arg.pattern.endswith("$")
            if isinstance(step.action, CommandAction):
                assert step.when is not None and step.verify is not None, where
    assert 1 <= len(commands) <= 2, f"keep commands few, prefer the control API: {commands}"
    assert auto == AUTO_STEPS
    # the shipped config's ceiling keeps even those waiting for a person
    assert settings.remediation.mode is RemediationMode.APPROVAL


# rules <-> playbooks ------------------------------------------------------------------


@pytest.mark.parametrize("labels", alert_label_sets(), ids=label_id)
def test_every_alert_the_rules_raise_has_its_playbook(
    labels: dict[str, str], playbooks: PlaybookSet, file_of: dict[str, str]
) -> None:
    matched = playbooks.matching(labels)
    assert matched, f"no playbook matches {labels}"
    runbook_url = runbook_urls()[labels["alertname"]]
    assert f"playbooks/{file_of[matched[0].name]}" == runbook_url


def test_every_playbook_handles_a_rule_alert(playbooks: PlaybookSet) -> None:
    handled = {playbooks.matching(labels)[0].name for labels in alert_label_sets()}
    assert {p.name for p in playbooks} - handled == set()


def test_every_rule_alertname_is_in_the_label_sets() -> None:
    assert {labels["alertname"] for labels in alert_label_sets()} == set(runbook_urls())


@pytest.mark.parametrize("labels", alert_label_sets(), ids=label_id)
def test_severity_and_paging_follow_design(
    labels: dict[str, str], playbooks: PlaybookSet, settings: Settings
) -> None:
    playbook = playbooks.matching(labels)[0]
    severity = playbook.severity or settings.incidents.severity_map[labels["severity"]]
    expected = EXPECTED_SEVERITY.get((labels["alertname"], labels["severity"]))
    if expected is not None:
        assert severity is expected
    paging = playbook.escalation.rule_for(severity)
    if playbook.name in PAGES_AT_ONCE:
        assert paging == PageRule(when="immediately")
    else:
        assert paging == DEFAULT_PAGING[severity]


# templates ----------------------------------------------------------------------------


@pytest.mark.parametrize("labels", alert_label_sets(), ids=label_id)
def test_templates_render_for_the_labels_the_rules_produce(
    labels: dict[str, str], playbooks: PlaybookSet
) -> None:
    playbook = playbooks.matching(labels)[0]
    rendered = render_all(playbook, context(labels, labels["alertname"]))
    assert rendered
    for template, value in rendered:
        if template.kind == "arg":
            assert template.pattern is not None
            assert re.fullmatch(template.pattern, value), (template.where, value)
        elif template.kind == "matcher":
            parse_matcher(value)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_label_values_stay_data(value: str, playbooks: PlaybookSet) -> None:
    for playbook in playbooks:
        for template, rendered in render_all(playbook, hostile_context(value)):
            if template.kind == "arg":
                assert template.pattern is not None
                assert re.fullmatch(template.pattern, rendered) is None, template.where
            elif template.kind == "matcher":
                matcher = parse_matcher(rendered)
                if "{{" in template.source:
                    assert is_whole_label(template.source), template.where
                    assert matcher.value == value, template.where
            elif template.kind == "text" and is_whole_label(template.source):
                assert rendered == value, template.where
            elif template.kind == "promql" and "{{" in template.source:
                assert promql_string(value) in rendered, template.where


# a real Prometheus --------------------------------------------------------------------


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


async def _api(
    session: aiohttp.ClientSession, base: str, endpoint: str, query: str
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{base}/api/v1/{endpoint}", data={"query": query}) as resp:
        return resp.status, await resp.json()


@pytest.mark.integration
async def test_rendered_queries_parse_in_prometheus_and_hostile_values_stay_literals(
    tmp_path: Path, playbooks: PlaybookSet
) -> None:
    # each distinct rendered query once, with the first place it comes from
    real: dict[str, str] = {}
    for labels in alert_label_sets():
        playbook = playbooks.matching(labels)[0]
        for template, query in render_all(playbook, context(labels, labels["alertname"])):
            if template.kind == "promql":
                real.setdefault(query, f"{template.where} for {label_id(labels)}")
    pairs: dict[str, tuple[str, str, str]] = {}  # hostile query -> where, value, benign query
    for playbook in playbooks:
        benign = dict(render_all(playbook, hostile_context(BENIGN)))
        for value in HOSTILE:
            for template, query in render_all(playbook, hostile_context(value)):
                if template.kind == "promql" and "{{" in template.source:
                    pairs.setdefault(query, (template.where, value, benign[template]))
    assert len(real) > 100 and len(pairs) > 1000

    limit = asyncio.Semaphore(32)
    async with Prometheus(tmp_path) as prom, aiohttp.ClientSession() as session:

        async def query(where: str, promql: str) -> str | None:
            async with limit:
                status, body = await _api(session, prom.url, "query", promql)
            if status == 200 and body.get("status") == "success":
                return None
            return f"{where}: HTTP {status} {body.get('errorType')}: {body.get('error')}"

        async def formatted(promql: str) -> tuple[int, dict[str, Any]]:
            async with limit:
                return await _api(session, prom.url, "format_query", promql)

        benign = {b for _, _, b in pairs.values()}
        want = dict(zip(benign, await asyncio.gather(*map(formatted, benign)), strict=True))

        async def same_shape(where: str, value: str, benign: str, hostile: str) -> str | None:
            status, got = await formatted(hostile)
            if status != 200 or want[benign][0] != 200:
                return f"{where} with {value!r}: HTTP {status}: {got.get('error')}"
            # the formatter breaks long queries into lines: compare without whitespace
            expected = want[benign][1]["data"].replace(promql_string(BENIGN), promql_string(value))
            if _squeeze(got["data"]) != _squeeze(expected):
                return f"{where} with {value!r}: {got['data']!r} != {expected!r}"
            return None

        problems = await asyncio.gather(
            *(query(where, q) for q, where in real.items()),
            *(query(f"{where} with {value!r}", h) for h, (where, value, _) in pairs.items()),
            *(same_shape(where, value, b, h) for h, (where, value, b) in pairs.items()),
        )
    assert [p for p in problems if p is not None] == []
