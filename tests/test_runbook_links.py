"""Runbook links a phone can open: a rule's ``runbook_url`` and a playbook's links written as
repository paths are resolved against ``links.runbook_base_url`` in Slack's message and
PagerDuty's ``links``; ``alertpilot check`` warns about those that cannot be opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main
from bot.playbook.model import Playbook
from fakes import FakePagerDuty, FakeSlack
from pagerduty_kit import alert_group
from responsekit import start_bot

BASE = "https://git.example.com/acme/ops/blob/main"
PLAYBOOK = Playbook.model_validate(
    {
        "name": "checkout",
        "match": ['alertname="CheckoutErrors"'],
        "links": [
            {"title": "Checkout runbook", "url": "runbooks/checkout.md#rollback"},
            {"title": "Dashboard", "url": "https://grafana.example.com/d/checkout"},
        ],
    }
)


def with_runbook(url: str) -> dict[str, Any]:
    payload = alert_group(severity="critical")
    for held in [
        payload["commonAnnotations"],
        *(a["annotations"] for a in payload["alerts"]),
    ]:
        held["runbook_url"] = url
    return payload


async def test_repository_paths_become_links_under_the_runbook_base(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client,
        tmp_path,
        fake_slack,
        fake_pagerduty,
        playbooks=[PLAYBOOK],
        links={"runbook_base_url": BASE},
    )
    await bot.post_alert(with_runbook("docs/runbooks/checkout.md#errors"))
    message = bot.message(await bot.incident())
    assert f"<{BASE}/docs/runbooks/checkout.md#errors|Runbook>" in message
    assert f"<{BASE}/runbooks/checkout.md#rollback|Checkout runbook>" in message
    assert "<https://grafana.example.com/d/checkout|Dashboard>" in message
    [trigger] = fake_pagerduty.events
    links = {link["text"]: link["href"] for link in trigger["links"]}
    assert links["Runbook"] == f"{BASE}/docs/runbooks/checkout.md#errors"
    assert links["Checkout runbook"] == f"{BASE}/runbooks/checkout.md#rollback"
    hidden = trigger["payload"]["custom_details"]["hidden_links"]  # the alert's other hosts
    assert not any(title.startswith("Runbook") for title in hidden)


async def test_without_a_base_a_path_is_no_link_at_all(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_slack, fake_pagerduty, playbooks=[PLAYBOOK]
    )
    await bot.post_alert(with_runbook("docs/runbooks/checkout.md#errors"))
    message = bot.message(await bot.incident())
    assert "docs/runbooks" not in message and "Runbook" not in message
    assert "runbooks/checkout.md" not in message
    [trigger] = fake_pagerduty.events
    assert {link["text"] for link in trigger["links"]} == {"Slack thread", "Dashboard"}
    hidden = trigger["payload"]["custom_details"]["hidden_links"]
    assert not any(title.startswith("Runbook") for title in hidden)  # no link, not hidden


async def test_a_path_that_climbs_out_of_the_base_is_hidden(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, fake_pagerduty: FakePagerDuty
) -> None:
    """The alert's text is the sender's: its path may not lead anywhere on the base's host."""
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_slack, fake_pagerduty, links={"runbook_base_url": BASE}
    )
    await bot.post_alert(with_runbook("../../../../mallory/phish.md"))
    message = bot.message(await bot.incident())
    assert "Runbook _(link to untrusted host hidden)_" in message
    assert "mallory" not in message
    [trigger] = fake_pagerduty.events
    assert "Runbook" not in {link["text"] for link in trigger["links"]}
    hidden = trigger["payload"]["custom_details"]["hidden_links"]
    assert "Runbook (link to untrusted host hidden)" in hidden


# -- alertpilot check ---------------------------------------------------------------------

PLAYBOOK_YAML = """\
- name: checkout
  match: ['alertname="CheckoutErrors"']
  links:
    - title: Runbook
      url: docs/runbooks/checkout.md#errors
    - title: Script
      url: "javascript:alert(1)"
    - title: Dashboard
      url: https://grafana.example.com/d/checkout
"""
RULES_YAML = """\
groups:
  - name: checkout
    rules:
      - alert: CheckoutErrors
        expr: vector(1) > 0
        annotations:
          summary: errors
          runbook_url: runbooks/checkout.md
      - alert: CheckoutSlow
        expr: vector(1) > 0
        annotations:
          runbook_url: https://wiki.example.com/checkout-slow
"""


def write(tmp_path: Path, **links: Any) -> Path:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "checkout.yaml").write_text(PLAYBOOK_YAML)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "checkout.yml").write_text(RULES_YAML)
    config = {
        "server": {"webhook_token": "t" * 24, "api_token": "a" * 24},
        "store": {"url": f"sqlite:///{tmp_path}/db.sqlite"},
        "playbooks": {"paths": [str(tmp_path / "playbooks")]},
        "rules": {"paths": [str(tmp_path / "rules")]},
        "links": links,
    }
    path = tmp_path / "alertpilot.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def warnings(capsys: pytest.CaptureFixture[str], config: Path) -> list[str]:
    assert main(["check", "--config", str(config)]) == 0  # a warning, not a problem
    out = capsys.readouterr().out
    return [line.removeprefix("warning: ") for line in out.splitlines() if "warning: " in line]


def test_check_warns_about_links_that_cannot_be_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = warnings(capsys, write(tmp_path))
    playbook, rules = tmp_path / "playbooks" / "checkout.yaml", tmp_path / "rules" / "checkout.yml"
    assert found == [
        f"{playbook}:5: [0].links[0].url: 'docs/runbooks/checkout.md#errors' is a path, not a"
        " link a phone can open: set links.runbook_base_url to where it is published, or"
        " write the full https:// URL (left out of Slack and PagerDuty)",
        f"{playbook}:7: [0].links[1].url: 'javascript:alert(1)' is a javascript: link, not"
        " http(s): Slack and PagerDuty show no link (left out of Slack and PagerDuty)",
        f"{rules}:8: groups[0].rules[0].annotations.runbook_url: CheckoutErrors:"
        " 'runbooks/checkout.md' is a path, not a link a phone can open: set"
        " links.runbook_base_url to where it is published, or write the full https:// URL",
    ]


def test_with_a_runbook_base_only_other_schemes_warn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = warnings(capsys, write(tmp_path, runbook_base_url=BASE))
    assert len(found) == 1 and "'javascript:alert(1)' is a javascript: link" in found[0]


def test_the_base_is_an_absolute_http_url(tmp_path: Path) -> None:
    config = write(tmp_path, runbook_base_url="docs/runbooks")
    assert main(["check", "--config", str(config)]) == 2


def test_the_shipped_rules_are_checked_with_the_shipped_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALERTPILOT_RUNBOOK_BASE_URL", raising=False)
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "rules/assistant.yml:" in out and "annotations.runbook_url" in out
    monkeypatch.setenv("ALERTPILOT_RUNBOOK_BASE_URL", BASE)
    assert main(["check"]) == 0
    assert "runbook_url" not in capsys.readouterr().out
