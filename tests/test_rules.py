"""The shipped alerting rules (rules/*.yml) and their promtool unit tests (tests/rules/).

``promtool check rules`` and ``promtool test rules`` run against the real binary; the
other tests check, without it, that every rule is covered by a unit test that sees it
fire and sees it stay silent, and that rules carry what the playbooks and humans need.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

# tests/ is on sys.path (pyproject: pythonpath)
from stack import require_binary

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL = Path("/usr/bin/promtool")
RULE_FILES = sorted((ROOT / "rules").glob("*.yml"))
UNIT_TEST_FILES = sorted((ROOT / "tests" / "rules").glob("*.test.yml"))
SEVERITIES = {"critical", "warning", "info"}


def alerting_rules() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [(path, rule) for rule in group["rules"] if "alert" in rule]
    return out


def unit_test_cases() -> list[dict[str, Any]]:
    """Every ``alert_rule_test`` entry of every promtool unit test file."""
    cases = []
    for path in UNIT_TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            cases += test.get("alert_rule_test", [])
    return cases


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    require_binary(PROMTOOL)
    return subprocess.run(
        [str(PROMTOOL), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_rule_and_unit_test_files_exist() -> None:
    assert [p.name for p in RULE_FILES] == [
        "alertpilot.yml",
        "assistant.yml",
        "llm-provider.yml",
        "operations.yml",
        "outages.yml",
        "slo.yml",
    ]
    assert UNIT_TEST_FILES, "no promtool unit tests under tests/rules/"


@pytest.mark.integration
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *(str(p) for p in RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES), result.stdout


@pytest.mark.integration
def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *(str(p) for p in UNIT_TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TEST_FILES), result.stdout


def test_every_rule_file_is_unit_tested() -> None:
    tested = set()
    for path in UNIT_TEST_FILES:
        for name in yaml.safe_load(path.read_text())["rule_files"]:
            tested.add((path.parent / name).resolve())
    assert tested == {p.resolve() for p in RULE_FILES}


def test_every_alerting_rule_is_seen_firing_and_silent() -> None:
    """Each rule (alertname and severity tier) fires in some unit test, and each alert
    name is expected silent somewhere (below its threshold or before its ``for``)."""
    firing, silent = set(), set()
    for case in unit_test_cases():
        if not case["exp_alerts"]:
            silent.add(case["alertname"])
        for alert in case["exp_alerts"]:
            firing.add((case["alertname"], alert["exp_labels"]["severity"]))
    rules = {(rule["alert"], rule["labels"]["severity"]) for _, rule in alerting_rules()}
    assert rules - firing == set(), "rules never seen firing in tests/rules/"
    assert firing - rules == set(), "unit tests expect alerts no rule raises"
    assert {name for name, _ in rules} - silent == set(), "alerts never expected silent"


def test_every_firing_expectation_checks_annotations() -> None:
    for case in unit_test_cases():
        for alert in case["exp_alerts"]:
            assert set(alert.get("exp_annotations", {})) == {
                "summary",
                "description",
                "runbook_url",
            }, case["alertname"]


@pytest.mark.parametrize(
    ("path", "rule"), alerting_rules(), ids=lambda v: v["alert"] if isinstance(v, dict) else ""
)
def test_rule_shape(path: Path, rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert "for" in rule, "every alert needs a for: duration from its runbook"
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url"} <= set(annotations)
    playbook_file = ROOT / annotations["runbook_url"]
    assert playbook_file.parent == ROOT / "playbooks" and playbook_file.is_file()
    assert rule["alert"] in playbook_file.read_text(), "the playbook must match this alert"
