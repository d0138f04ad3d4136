"""The metrics the shipped rules and playbooks read.

- docs/metrics.md names every metric a rule expression or a playbook query (a
  diagnostic's ``query``, a step's ``when``, a ``verify`` query) reads, so a service
  owner knows what to expose; a recorded series (``level:metric:operation``) is recorded
  by a rule instead;
- alertpilot's own histograms, as its ``/metrics`` serves them, have a bucket at each
  latency threshold rules/alertpilot.yml sets on them: ``histogram_quantile`` between
  two buckets interpolates, and with buckets at 8 s and 15 s a p99 of 9 s reads as
  almost 15 s, over a 10 s threshold it does not cross.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from bot.app import create_app
from conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "rules").glob("*.yml"))
PLAYBOOK_FILES = sorted((ROOT / "playbooks").glob("*.yaml"))
METRICS_DOC = ROOT / "docs" / "metrics.md"

# Words of PromQL that are not series names: binary operators and modifiers, and the
# label lists of `by (...)` and its kin (removed before names are read).
KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan"}
LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# What Prometheus itself makes: `ALERTS` (alert states) and `up` is documented anyway.
BUILT_IN = {"ALERTS", "ALERTS_FOR_STATE"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def series_names(expr: str) -> set[str]:
    """The series an expression selects. Templating (``{{ ... }}``, ``{% ... %}``),
    strings, label matchers, ranges and label lists go first; what is left that is an
    identifier not called as a function and not a keyword names a series."""
    expr = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", " 0 ", expr, flags=re.S)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^{}]*\}", "{}", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)
    expr = LABEL_LISTS.sub(" ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        name, called = match.groups()
        if not called and name.lower() not in KEYWORDS:
            names.add(name)
    return names


def test_series_names_reads_selectors_only() -> None:
    expr = """
      sum by (service, le) (rate(http_request_duration_seconds_bucket{code=~"5..", x="a b"}[5m]))
        / on (service) group_left () max(up{job="x"} offset 1d) > bool 2
      unless ALERTS{alertname="A"} and service:errors:ratio_rate5m
      or vector(1) * {{ labels.service | promql }} + {% if labels.x %}y_total{% endif %}
    """
    assert series_names(expr) == {
        "http_request_duration_seconds_bucket",
        "y_total",  # what a template's branch holds is read too
        "up",
        "ALERTS",
        "service:errors:ratio_rate5m",
    }


def rule_expressions() -> Iterator[tuple[str, str]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"]


def recorded_series() -> set[str]:
    return {
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def playbook_queries() -> Iterator[tuple[str, str]]:
    """Every PromQL a shipped playbook holds: diagnostics' ``query``, steps' ``when``
    and their ``verify`` query."""
    for path in PLAYBOOK_FILES:
        loaded = yaml.safe_load(path.read_text())
        if isinstance(loaded, dict):
            loaded = loaded.get("playbooks", [loaded])
        books: list[dict[str, Any]] = loaded
        for book in books:
            for diag in book.get("diagnostics", []):
                if diag.get("kind", "promql") == "promql":
                    yield f"{path.name}: {book['name']}.{diag['name']}", diag["query"]
            for step in book.get("remediations", []):
                where = f"{path.name}: {book['name']}.{step['name']}"
                if step.get("when"):
                    yield f"{where} when", step["when"]
                verify: dict[str, Any] | None = step.get("verify")
                if verify and verify.get("query"):
                    yield f"{where} verify", verify["query"]


def documented() -> set[str]:
    return set(re.findall(r"`([a-zA-Z_:][\w:]*)`", METRICS_DOC.read_text()))


def base_name(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_the_sources_are_read() -> None:
    """The readers find what is there (a reader that finds nothing checks nothing)."""
    rules, queries = list(rule_expressions()), list(playbook_queries())
    assert len(rules) > 80 and len(queries) > 300, (len(rules), len(queries))
    read = {n for _, e in [*rules, *queries] for n in series_names(e)}
    assert {"request_errors_total", "llm_requests_total", "feature_flag_enabled"} <= read
    assert "model_tier:llm_time_to_first_token_seconds:p95_objective" in read


@pytest.mark.parametrize(
    ("source", "read"),
    [("rules", rule_expressions), ("playbooks", playbook_queries)],
)
def test_docs_metrics_names_every_metric_read(source: str, read: Any) -> None:
    known, recorded = documented(), recorded_series()
    missing = {}
    for where, expr in read():
        for name in series_names(expr) - BUILT_IN:
            if ":" in name:
                assert name in recorded, f"{where}: {name} is recorded by no rule"
            elif name not in known and base_name(name) not in known:
                missing.setdefault(name, where)
    assert missing == {}, f"not in docs/metrics.md ({source}): {missing}"


# alertpilot's own histograms -----------------------------------------------------------

QUANTILE_ALERT = re.compile(
    r"histogram_quantile\(\s*[\d.]+\s*,.*?\b(alertpilot_\w+)_bucket\b.*\)\s*>\s*([\d.]+)\s*$",
    re.S,
)


def own_latency_thresholds() -> list[tuple[str, str, float]]:
    """(alert, histogram, threshold) of every ``histogram_quantile(...) > N`` alert of
    rules/alertpilot.yml."""
    out = []
    for group in yaml.safe_load((ROOT / "rules" / "alertpilot.yml").read_text())["groups"]:
        for rule in group["rules"]:
            found = QUANTILE_ALERT.search(rule["expr"].strip())
            if "alert" in rule and found:
                out.append((rule["alert"], found.group(1), float(found.group(2))))
    return out


def served_buckets(text: str) -> dict[str, set[float]]:
    buckets: dict[str, set[float]] = {}
    for name, le in re.findall(r'^(\w+)_bucket\{(?:[^}]*,)?le="([^"]+)"', text, re.M):
        if le != "+Inf":
            buckets.setdefault(name, set()).add(float(le))
    return buckets


async def test_own_histograms_have_a_bucket_at_each_threshold(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    thresholds = own_latency_thresholds()
    assert ("AlertpilotNarrativeSlow", "alertpilot_narrative_generation_seconds", 10.0) in (
        thresholds
    )
    client: TestClient = await aiohttp_client(create_app(make_settings(tmp_path)))
    buckets = served_buckets(await (await client.get("/metrics")).text())
    for alert, histogram, threshold in thresholds:
        assert histogram in buckets, f"{alert}: alertpilot serves no histogram {histogram}"
        assert threshold in buckets[histogram], (alert, threshold, sorted(buckets[histogram]))
