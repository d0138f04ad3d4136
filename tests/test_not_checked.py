"""A check that did not run is never shown as passed: Prometheus unreachable, every
diagnostic of an incident errored, as a person reads it in ``explain`` (both
audiences), the Slack message and thread reply, and the PagerDuty trigger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.core.clock import ManualClock
from bot.core.incidents import Event, EventKind
from bot.diagnostics.summary import finding, tally
from bot.pagerduty.payload import trigger_event
from bot.playbook.templating import NotApplicable, environment, render, required_labels
from bot.slack.render import Extras, incident_message
from bot.slack.render_events import event_reply
from bot.store.sqlite import SqliteStore
from conftest import FIXTURES
from narrative_support import group, open_incident, with_diagnostics
from test_narrative_cli import config, explain, seed

ROOT = Path(__file__).resolve().parent.parent
LABELS = [
    "5xx share of requests (5m)",
    "p95 latency",
    "error rate by route",
    "LLM provider errors",
    "DB pool in use",
    "cache hit rate",
    "recent deploys",
    "pod restarts",
    "queue depth",
]
UNREACHABLE = [
    {
        "playbook": "high-error-rate",
        "name": f"check_{n}",
        "label": label,
        "kind": "promql",
        "status": "error",
        "passed": None,
        "cause": "unreachable",
        "upstream": "Prometheus",
        "error": "Prometheus unavailable: POST http://127.0.0.1:9/api/v1/query: refused",
        "text": f"{label}: error: Prometheus unavailable: POST http://127.0.0.1:9/api/v1/query",
    }
    for n, label in enumerate(LABELS)
]
MIXED = [
    {**UNREACHABLE[0], "status": "ok", "passed": False, "value": 0.12, "cause": None,
     "text": f"{LABELS[0]}: 12% (expected < 5%) FAIL"},
    {**UNREACHABLE[1], "status": "ok", "passed": True, "value": 0.8, "cause": None,
     "text": f"{LABELS[1]}: 800ms (expected < 3s) PASS"},
    *UNREACHABLE[2:],
]  # fmt: skip


async def test_explain_says_not_checked_when_no_check_ran(tmp_path: Path) -> None:
    incident_id = await seed(tmp_path, UNREACHABLE)
    cfg = config(tmp_path, {"provider": "template"})

    code, out, err = await explain(str(incident_id), "--config", str(cfg))
    assert code == 0, err
    assert "*Diagnostics*: Prometheus unreachable: checks not run (9 of 9)" in out
    assert "0 of 9 failed" not in out and "no diagnostic failed" not in out
    assert "• ? 5xx share of requests (5m): not checked (Prometheus unreachable)" in out
    assert out.count("5xx share of requests (5m)") == 1  # the label once, not twice
    assert "no check could run (Prometheus unreachable)" in out

    code, out, err = await explain(
        str(incident_id), "--audience", "stakeholder", "--config", str(cfg)
    )
    assert code == 0, err
    assert "Automated checks: 0 of 9 confirm a problem, 9 could not run." in out


async def test_explain_counts_failed_passed_and_not_checked_apart(tmp_path: Path) -> None:
    incident_id = await seed(tmp_path, MIXED)
    cfg = config(tmp_path, {"provider": "template"})
    code, out, err = await explain(str(incident_id), "--config", str(cfg))
    assert code == 0, err
    assert (
        "*Diagnostics*: 1 failed (check_0), 1 passed, 7 not checked (Prometheus unreachable)" in out
    )
    code, out, err = await explain(
        str(incident_id), "--audience", "stakeholder", "--config", str(cfg)
    )
    assert "Automated checks: 1 of 9 confirm a problem, 1 found none, 7 could not run." in out


async def test_slack_and_pagerduty_show_not_checked(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqliteStore(str(tmp_path / "alertpilot.db"), clock=clock.now)
    await store.open()
    try:
        incident = await open_incident(store, clock, group())
        incident = await with_diagnostics(store, clock, incident.id, UNREACHABLE)
    finally:
        await store.close()

    shown = "\n".join(
        block["text"]["text"]
        for block in incident_message(incident, Extras()).blocks
        if isinstance(block.get("text"), dict)
    )
    assert "*Diagnostics*: Prometheus unreachable: checks not run (9 of 9)" in shown
    assert ":warning: *5xx share of requests (5m)*: not checked (Prometheus unreachable)" in shown
    assert shown.count("5xx share of requests (5m)") == 1
    assert ":white_check_mark:" not in shown

    done = Event(1, incident.id, clock.now(), "alertpilot", EventKind.DIAGNOSTICS_DONE, "", {})
    reply = event_reply(done, incident)
    assert reply is not None
    assert "Diagnostics done: Prometheus unreachable: checks not run (9 of 9)" in reply
    assert "passed" not in reply

    details = trigger_event(incident, playbooks=[], reason="r")["payload"]["custom_details"]
    assert details["diagnostics"][0] == "checks: Prometheus unreachable: checks not run (9 of 9)"
    assert all(line.startswith("NOT CHECKED ") for line in details["diagnostics"][1:])
    assert not any(line.startswith("ok ") for line in details["diagnostics"])


# A step that needs a label the alert does not carry ---------------------------------


NO_NAMESPACE = FIXTURES / "alertmanager" / "captured-firing.json"


def _without_namespace(tmp_path: Path) -> Path:
    body = json.loads(NO_NAMESPACE.read_text())
    body["commonLabels"].pop("namespace")
    for alert in body["alerts"]:
        alert["labels"].pop("namespace")
    path = tmp_path / "firing-without-namespace.json"
    path.write_text(json.dumps(body))
    return path


@pytest.mark.parametrize(
    ("source", "needed"),
    [
        ("{{ labels.namespace }}/{{ labels['deployment'] }}", {"namespace", "deployment"}),
        ("{{ labels.namespace | default('prod') }}", set()),
        ("{% if labels.x is defined %}{{ labels.x }}{% endif %}", set()),
        ("{{ labels.get('y') }}", set()),
        ("{{ common_labels.service | promql }}", {"service"}),
    ],
)
def test_the_labels_a_template_needs(source: str, needed: set[str]) -> None:
    assert {label for _, label in required_labels(source)} == needed


def test_a_missing_label_is_not_applicable_not_a_template_error() -> None:
    with pytest.raises(NotApplicable) as raised:
        render(environment(), "kubectl -n {{ labels.namespace }}", {"labels": {"service": "x"}})
    assert str(raised.value) == "not applicable: needs label `namespace`"


def test_simulate_and_check_say_which_label_a_shipped_step_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = _without_namespace(tmp_path)
    env = {"PROMETHEUS_URL": "http://127.0.0.1:9", "ALERTMANAGER_URL": "http://127.0.0.1:9"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.chdir(ROOT)
        assert main(["simulate", "--config", "configs/alertpilot.yaml", str(payload)]) == 0
        out = capsys.readouterr().out
        assert "  - high-error-rate/rollback_deploy [approval] (no call)\n" in out
        assert "      -> not applicable: needs label `namespace`\n" in out
        assert "template error" not in out

        assert main(["check", "--config", "configs/alertpilot.yaml"]) == 0
        out = capsys.readouterr().out
    assert (
        "note: high-error-rate: steps read labels its match does not require (for an alert"
        " without them they are not applicable): " in out
    )
    assert "rollback_deploy needs `namespace`, `service`" in out


def test_a_diagnostic_without_its_label_is_shown_as_not_applicable() -> None:
    result = {
        "name": "pool", "label": "DB pool in use", "status": "error", "passed": None,
        "cause": "not_applicable", "error": "not applicable: needs label `pool`",
        "text": "DB pool in use: error: not applicable: needs label `pool`",
    }  # fmt: skip
    assert finding(result) == "not applicable: needs label `pool`"
    assert tally([result]).line() == "1 not checked (not applicable)"
