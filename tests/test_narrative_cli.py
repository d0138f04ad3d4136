"""``alertpilot explain INCIDENT_ID [--audience stakeholder] --config F``, run as a process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml

from bot.core.clock import ManualClock
from bot.store.sqlite import SqliteStore
from fakes import FakeOpenAI
from narrative_support import DIAGNOSTICS, group, open_incident, with_diagnostics


async def seed(tmp_path: Path, results: list[dict[str, Any]] | None = None) -> int:
    """An incident in ``tmp_path``'s store with these diagnostic results (default:
    ``DIAGNOSTICS``)."""
    clock = ManualClock()
    store = SqliteStore(str(tmp_path / "alertpilot.db"), clock=clock.now)
    await store.open()
    try:
        incident = await open_incident(store, clock, group())
        await with_diagnostics(
            store, clock, incident.id, DIAGNOSTICS if results is None else results
        )
        return incident.id
    finally:
        await store.close()


def config(tmp_path: Path, llm: dict[str, Any]) -> Path:
    path = tmp_path / "alertpilot.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "store": {"url": f"sqlite:///{tmp_path}/alertpilot.db"},
                "playbooks": {"paths": []},
                "llm": llm,
            }
        )
    )
    return path


async def explain(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "explain", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_explain_prints_the_llm_narrative(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = "Checkout is failing for one in eight customers; engineers are on it."
    incident_id = await seed(tmp_path)
    cfg = config(
        tmp_path,
        {"provider": "openai", "base_url": fake_openai.api_base, "api_key": fake_openai.api_key},
    )
    code, out, err = await explain(
        str(incident_id), "--audience", "stakeholder", "--config", str(cfg)
    )
    assert code == 0, err
    assert out.strip() == fake_openai.reply
    assert "(llm, gpt-4o-mini)" in err
    user = fake_openai.completions[0]["messages"][1]["content"]
    assert "stakeholder" in user and "5xx share of requests" in user

    code, out, err = await explain(
        str(incident_id), "--audience", "stakeholder", "--config", str(cfg)
    )
    assert code == 0 and out.strip() == fake_openai.reply
    assert "cached" in err and len(fake_openai.completions) == 1  # from the store's cache


async def test_explain_with_templates_and_an_unknown_incident(tmp_path: Path) -> None:
    incident_id = await seed(tmp_path)
    cfg = config(tmp_path, {"provider": "template"})
    code, out, err = await explain(str(incident_id), "--config", str(cfg))
    assert code == 0, err
    assert "*[P1] HighErrorRate (service=checkout)*" in out
    assert "✗ 5xx share of requests: 12.5%" in out
    assert "(template, provider)" in err

    code, out, err = await explain("999", "--config", str(cfg))
    assert code == 1 and out == ""
    assert "incident 999 not found" in err
