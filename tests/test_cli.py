"""The alertpilot command: check, simulate, incidents."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.cli import main
from conftest import FIXTURES
from serving import ServeProcess
from stack import free_port


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
    from bot.core.alerts import parse_group
    from bot.core.clock import SystemClock
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
    webhook is open and the API off, endpoint by endpoint."""
    server = ServeProcess(tmp_path)
    try:
        await server.start()
        assert await server.terminate() == 0
    finally:
        await server.stop()
    log = server.log.read_text()
    assert "WARNING bot.cli: config: server.webhook_token is not set" in log
    assert "exposure: POST /alertmanager: OPEN: no credentials" in log
    assert "exposure: /api/v1 (incidents, approvals, narratives, rca_analyze, oncall): off" in log


async def test_serve_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    first = ServeProcess(tmp_path)
    try:
        await first.start()
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "serve", "--config", str(first.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(second.communicate(), 60)
    finally:
        await first.stop()
    assert second.returncode == 4
    text = err.decode()
    assert f"cannot listen on 127.0.0.1:{first.port}: " in text
    assert "address already in use" in text
    assert "serve --listen HOST:PORT" in text
    assert "Traceback" not in text


async def test_serve_listen_overrides_the_config_and_version_prints(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path)
    port = free_port()
    try:
        with server.log.open("ab") as log:
            server.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "serve", "--config", str(server.config),
                "--listen", f"127.0.0.1:{port}", stdout=log, stderr=log,
            )  # fmt: skip
        server.url, server.port = f"http://127.0.0.1:{port}", port
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                try:
                    async with session.get(f"{server.url}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(server.log.read_text()[-2000:])
    finally:
        await server.stop()
    version = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "--version", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await version.communicate()
    assert out.decode().startswith("alertpilot ")


def test_serve_listen_must_be_host_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(config(tmp_path)), "--listen", "8080"]) == 2
    assert "--listen '8080': expected HOST:PORT" in capsys.readouterr().err


def test_check_warns_of_an_llm_provider_without_a_key_or_an_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = config(tmp_path, "llm:\n  provider: openai\n")
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: llm.provider is openai but llm.api_key is not set" in out
    assert "warning: llm.provider is openai and llm.base_url is not set" in out
