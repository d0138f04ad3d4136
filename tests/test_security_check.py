"""``alertpilot check`` warns about configurations that work but are risky.

Each warning is produced through the command itself (``alertpilot check --config``),
one risky setting at a time on top of a config that draws no warning at all; a warning
never makes the check fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main

SAFE_SERVER = {"webhook_token": "w" * 32, "api_token": "a" * 32}
SLACK = {"bot_token": "xoxb-1", "signing_secret": "s" * 32, "default_channel": "#ops"}


def playbook(pattern: str, mode: str = "auto") -> dict[str, Any]:
    return {
        "name": "cache",
        "match": ['alertname="CacheDown"'],
        "remediations": [
            {
                "name": "restart",
                "mode": mode,
                "action": {
                    "kind": "command",
                    "argv": [
                        "/usr/bin/systemctl",
                        "restart",
                        {"template": "{{ labels.service }}.service", "pattern": pattern},
                    ],
                },
            }
        ],
    }


def write(tmp_path: Path, playbooks: list[dict[str, Any]] | None = None, **sections: Any) -> Path:
    folder = tmp_path / "playbooks"
    folder.mkdir(exist_ok=True)
    (folder / "cache.yaml").write_text(yaml.safe_dump(playbooks or []))
    config: dict[str, Any] = {
        "server": SAFE_SERVER,
        "store": {"url": f"sqlite:///{tmp_path}/db.sqlite"},
        "playbooks": {"paths": [str(folder)]},
        "remediation": {
            "mode": "approval",
            "allowed_urls": ["https://flags.internal/api/flags"],
            "allowed_commands": ["/usr/bin/systemctl"],
        },
        **sections,
    }
    path = tmp_path / "alertpilot.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def warnings(capsys: pytest.CaptureFixture[str], config: Path) -> list[str]:
    code = main(["check", "--config", str(config)])
    out, err = capsys.readouterr()
    assert code == 0, err  # risky is not broken: the check still passes
    assert "ok (" in out
    return [line.removeprefix("warning: ") for line in out.splitlines() if "warning" in line]


def test_a_careful_config_draws_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path,
        [playbook(r"[a-z][a-z0-9]{0,30}\.service")],
        remediation={
            "mode": "auto",
            "allowed_urls": ["https://flags.internal/api/flags"],
            "allowed_commands": ["/usr/bin/systemctl"],
        },
        slack={**SLACK, "approvers": ["U0ALICE", "S0ONCALL"]},
    )
    assert warnings(capsys, config) == []


RISKY: dict[str, tuple[dict[str, Any], list[dict[str, Any]], str]] = {
    "no webhook token": (
        {"server": {"api_token": "a" * 32}},
        [],
        "server.webhook_token is not set: anyone who can reach POST /alertmanager can open "
        "incidents",
    ),
    "a short webhook token": (
        {"server": {**SAFE_SERVER, "webhook_token": "hunter2"}},
        [],
        "server.webhook_token is shorter than 16 characters",
    ),
    "a short basic-auth password": (
        {
            "server": {
                "api_token": "a" * 32,
                "webhook_basic_auth": {"username": "am", "password": "hunter2"},
            }
        },
        [],
        "server.webhook_basic_auth.password is shorter than 16 characters",
    ),
    "a short API token": (
        {"server": {**SAFE_SERVER, "api_token": "changeme"}},
        [],
        "server.api_token is shorter than 16 characters",
    ),
    "auto with a whole host allowed": (
        {
            "remediation": {
                "mode": "auto",
                "allowed_urls": ["https://flags.internal/api/flags", "https://flags.internal/"],
            }
        },
        [],
        "remediation.mode is auto and remediation.allowed_urls allows whole hosts "
        "(https://flags.internal/)",
    ),
    "auto with an allowlist entry that does not parse": (
        {"remediation": {"mode": "auto", "allowed_urls": ["flags.internal/api"]}},
        [],
        "allows whole hosts (flags.internal/api)",
    ),
    "an interpreter on the command allowlist": (
        {"remediation": {"mode": "approval", "allowed_commands": ["/usr/bin/env"]}},
        [],
        "remediation.allowed_commands holds an interpreter (/usr/bin/env)",
    ),
    "auto with an argument pattern that takes anything": (
        {
            "remediation": {
                "mode": "auto",
                "allowed_commands": ["/usr/bin/systemctl"],
            }
        },
        [playbook(r".+\.service")],
        "cache/restart: remediation.mode is auto and argv[2]'s pattern",
    ),
    "auto with an argument pattern that takes options": (
        {"remediation": {"mode": "auto", "allowed_commands": ["/usr/bin/systemctl"]}},
        [playbook(r"[a-z0-9./=-]+")],
        "accepts values like options, paths or spaces",
    ),
    "a listen on every address that answers loopback names only": (
        {"server": {**SAFE_SERVER, "listen": "0.0.0.0:8080"}},
        [],
        "server.listen is 0.0.0.0:8080 but only loopback names are answered",
    ),
    "Slack approvals by nobody": (
        {"slack": SLACK},
        [],
        "slack.approvers is empty: nobody can approve remediations from Slack",
    ),
}


@pytest.mark.parametrize("case", sorted(RISKY))
def test_each_risky_setting_warns(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sections, playbooks, expected = RISKY[case]
    found = warnings(capsys, write(tmp_path, playbooks, **sections))
    assert len(found) == 1, found
    assert expected in found[0], found


@pytest.mark.parametrize(
    "server",
    [
        {"listen": "0.0.0.0:8080", "allowed_hosts": ["alertpilot.monitoring.svc"]},
        {"listen": "[::]:8080", "public_url": "https://alertpilot.example.com"},
        {"listen": "0.0.0.0:8080", "allowed_hosts": ["*"]},
        {"listen": "10.0.0.5:8080"},  # the address it listens on is a name it answers to
    ],
)
def test_a_listen_off_loopback_with_the_names_clients_use_is_not_a_warning(
    server: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert warnings(capsys, write(tmp_path, server={**SAFE_SERVER, **server})) == []


@pytest.mark.parametrize("mode", ["approval", "suggest"])
def test_a_broad_pattern_on_a_step_a_person_approves_is_not_a_warning(
    mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path,
        [playbook(r".+", mode=mode)],
        remediation={"mode": "auto", "allowed_commands": ["/usr/bin/systemctl"]},
    )
    assert warnings(capsys, config) == []


def test_the_shipped_default_config_names_its_risks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded default runs open on loopback; check says so rather than staying quiet."""
    monkeypatch.delenv("ALERTPILOT_WEBHOOK_TOKEN", raising=False)
    code = main(["check"])
    out, _ = capsys.readouterr()
    assert code == 0
    shown = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert any("server.webhook_token is not set" in line for line in shown), out
