"""Planning and previews: the mode ceiling, idempotent plans, step keys, ``describe``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import ManualClock
from bot.playbook.model import Playbook, StepMode
from bot.remediation.guard import effective_mode
from bot.remediation.records import StepState
from bot.remediation.results import Guard
from bot.settings import RemediationMode
from remediation_kit import Harness, playbook, start

URL = "http://127.0.0.1:9/flags"


@pytest.mark.parametrize(
    ("step", "ceiling", "expected"),
    [
        (StepMode.AUTO, RemediationMode.AUTO, RemediationMode.AUTO),
        (StepMode.AUTO, RemediationMode.APPROVAL, RemediationMode.APPROVAL),
        (StepMode.APPROVAL, RemediationMode.AUTO, RemediationMode.APPROVAL),
        (StepMode.SUGGEST, RemediationMode.AUTO, RemediationMode.SUGGEST),
        (StepMode.AUTO, RemediationMode.DRY_RUN, RemediationMode.DRY_RUN),
        (StepMode.SUGGEST, RemediationMode.DRY_RUN, RemediationMode.DRY_RUN),
        (StepMode.AUTO, RemediationMode.OFF, RemediationMode.OFF),
    ],
)
def test_effective_mode_is_the_lower_one(
    step: StepMode, ceiling: RemediationMode, expected: RemediationMode
) -> None:
    assert effective_mode(step, ceiling) is expected


def step(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "action": {"kind": "webhook", "url": f"{URL}/{{{{ labels.service }}}}"},
        **extra,
    }


async def harness(aiohttp_client: Any, tmp_path: Path, books: list[dict[str, Any]]) -> Harness:
    return await start(
        aiohttp_client,
        tmp_path,
        books,
        clock=ManualClock(),
        background=False,
        remediation={"mode": "auto", "allowed_urls": [URL]},
    )


async def test_plan_is_idempotent_and_keys_steps_of_several_playbooks(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    first = {**playbook(step("restart")), "name": "first", "continue": True, "order": 1}
    second = {**playbook(step("restart"), step("drain")), "name": "second", "order": 2}
    h = await harness(aiohttp_client, tmp_path, [first, second])
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    await h.settle()  # the pipeline matched both and planned
    incident = await h.incident(incident_id)
    assert set(incident.data["remediations"]) == {"restart", "second/restart", "drain"}
    assert incident.data["remediations"]["second/restart"]["playbook"] == "second"
    assert await h.engine.plan(incident_id) == []  # planned before: nothing new
    requested = [e for e in await h.events(incident_id) if e.data.get("state") == "requested"]
    assert len(requested) == 3
    pending = await h.engine.pending(incident_id)
    assert {(p.step, p.playbook) for p in pending} == {
        ("restart", "first"),
        ("second/restart", "second"),
        ("drain", "second"),
    }
    assert {p.call for p in pending} == {f"POST {URL}/cart"}


async def test_describe_says_what_each_step_would_do_and_what_stops_it(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    book = playbook(
        step("restart", mode="auto", cooldown="5m"),
        step("ask", mode="approval"),
        step("hint", mode="suggest"),
        {"name": "elsewhere", "action": {"kind": "webhook", "url": "http://evil.example/x"}},
        {"name": "shell", "action": {"kind": "command", "argv": ["/bin/sh", "-c", "id"]}},
    )
    h = await harness(aiohttp_client, tmp_path, [book])
    incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
    incident = await h.incident(incident_id)
    previews = {p.step: p for p in await h.engine.describe(Playbook.model_validate(book), incident)}
    assert previews["restart"].call == f"POST {URL}/cart"
    assert (previews["restart"].mode, previews["restart"].stopped_by) == ("auto", None)
    assert previews["restart"].reason == "runs automatically"
    assert previews["ask"].reason == "runs when a person approves it"
    assert previews["hint"].reason == "suggested to people; alertpilot does not run it"
    assert previews["elsewhere"].stopped_by is Guard.ALLOWLIST
    assert previews["shell"].stopped_by is Guard.ALLOWLIST
    assert "not on remediation.allowed_commands" in previews["shell"].reason
    assert await h.events(incident_id, "remediation") == []  # describing changes nothing
    # once it ran, the cooldown would stop it
    await h.settle()
    assert (await h.step(incident_id, "restart")).state in (StepState.SUCCEEDED, StepState.FAILED)
    previews = {p.step: p for p in await h.engine.describe(Playbook.model_validate(book), incident)}
    assert previews["restart"].stopped_by is Guard.COOLDOWN
    assert "restart [auto]" in previews["restart"].line()
