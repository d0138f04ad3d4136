"""The alertpilot command: check, simulate, incidents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from conftest import FIXTURES
from serving import ServeProcess


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "alertpilot.yaml"
    path.write_text(f"store:\n  url: sqlite:///{tmp_path}/a.db\nplaybooks:\n  paths: []\n{extra}")
    return path


def test_check_ok_with_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(config(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "ok" in out
    assert "webhook_token is not set" in out


def test_check_reports_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, "server:\n  listen: 127.0.0.1:8080\n  webhok_token: x\n")
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:7: server.webhok_token: unknown key" in err


def test_simulate_shows_the_incident_and_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path)
    fixture = FIXTURES / "alertmanager" / "captured-firing.json"
    assert main(["simulate", "--config", str(path), str(fixture)]) == 0
    out = capsys.readouterr().out
    assert "[P1] HighErrorRate (service=checkout) (triggered)" in out
    assert out.count("firing: HighErrorRate") == 3
    assert not (tmp_path / "a.db").exists()


def test_simulate_rejects_bad_payload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "4"}')
    assert main(["simulate", "--config", str(config(tmp_path)), str(bad)]) == 2
    assert (
        "not an Alertmanager (version 4) or Grafana (version 1) webhook payload"
        in capsys.readouterr().err
    )


async def seed(tmp_path: Path) -> None:
    from bot.alerts import parse_group
    from bot.clock import SystemClock
    from bot.settings import Severity
    from bot.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "a.db"), clock=SystemClock().now)
    await store.open()
    body = (FIXTURES / "alertmanager" / "firing-1-alert.json").read_text()
    inbox = await store.enqueue_payload("alertmanager", body)
    await store.apply_group(inbox, parse_group(body), Severity.P1, 1.0)
    await store.close()


def test_incidents_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    asyncio.run(seed(tmp_path))
    path = config(tmp_path)
    assert main(["incidents", "--config", str(path)]) == 0
    assert "#1     P1  triggered    HighErrorRate (service=checkout)  (1 alert(s))" in (
        capsys.readouterr().out
    )
    assert main(["incidents", "--config", str(path), "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert item["key"].startswith("alertpilot-")


async def test_serve_logs_what_check_warns_about(tmp_path: Path) -> None:
    """An operator who never runs ``alertpilot check`` still reads, at startup, that the
    webhook and the APIs are open."""
    server = ServeProcess(tmp_path)
    try:
        await server.start()
        assert await server.terminate() == 0
    finally:
        await server.stop()
    log = server.log.read_text()
    assert "WARNING bot.cli: config: server.webhook_token is not set" in log
    assert "config: server.api_token is not set: the incident API (remediation approvals" in log
