"""Slack messages and PagerDuty events link to the incident's console page when the
console is on and ``server.public_url`` says where people reach it; otherwise no link
(one that cannot open would only mislead)."""

from __future__ import annotations

from pathlib import Path

from bot.notify.links import CONSOLE_TITLE, LinkPolicy
from bot.pagerduty.payload import trigger_event
from bot.slack.render import Extras, incident_message
from conftest import make_settings
from consolekit import console_section
from slackkit import message_text
from test_pagerduty_payload import incident

PUBLIC = "https://alertpilot.example.com/"


def policy(tmp_path: Path, *, console: bool = True, public: str | None = PUBLIC) -> LinkPolicy:
    sections = {"console": console_section()} if console else {}
    return LinkPolicy.from_settings(
        make_settings(tmp_path, server={"public_url": public}, **sections)
    )


def test_a_link_only_when_the_console_is_on_and_public(tmp_path: Path) -> None:
    assert policy(tmp_path).console_url(12) == "https://alertpilot.example.com/ui/incidents/12"
    assert policy(tmp_path, console=False).console_url(12) is None
    assert policy(tmp_path, public=None).console_url(12) is None


def test_the_slack_message_links_the_incident_page(tmp_path: Path) -> None:
    text = message_text(
        {"blocks": incident_message(incident(), Extras(links=policy(tmp_path))).blocks}
    )
    assert f"<https://alertpilot.example.com/ui/incidents/12|{CONSOLE_TITLE}>" in text
    off = Extras(links=policy(tmp_path, console=False))
    assert "/ui/incidents" not in message_text({"blocks": incident_message(incident(), off).blocks})


def test_the_pagerduty_event_links_the_incident_page(tmp_path: Path) -> None:
    event = trigger_event(incident(), playbooks=[], reason="r", links=policy(tmp_path))
    assert event["links"][0] == {
        "href": "https://alertpilot.example.com/ui/incidents/12",
        "text": CONSOLE_TITLE,
    }
    off = trigger_event(incident(), playbooks=[], reason="r", links=policy(tmp_path, public=None))
    assert "/ui/incidents" not in str(off)
