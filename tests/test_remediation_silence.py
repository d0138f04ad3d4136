"""The silence action against a real Alertmanager: created, visible, expired on resolve."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.core.incidents import EventKind
from bot.remediation.records import StepState
from bot.remediation.results import Guard
from remediation_kit import group, playbook, start
from stack import Alertmanager

pytestmark = pytest.mark.integration


async def test_silence_is_created_and_expired_when_the_incident_resolves(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    async with Alertmanager(tmp_path, "http://127.0.0.1:9/unused") as am:
        steps = [
            {
                "name": "silence-noise",
                "mode": "auto",
                "action": {
                    "kind": "silence",
                    "matchers": [
                        'alertname="CacheDown"',
                        "instance={{ labels.instance | quote }}",
                    ],
                    "duration": "2h",
                    "comment": "cache restarts on {{ labels.instance }}",
                },
            },
            {
                "name": "silence-keep",
                "mode": "auto",
                "action": {
                    "kind": "silence",
                    "matchers": ['alertname="CacheDegraded"'],
                    "expire_on_resolve": False,
                },
            },
            {  # a label value cannot widen a silence: the template forgot ``quote``
                "name": "silence-unquoted",
                "mode": "auto",
                "action": {"kind": "silence", "matchers": ["instance={{ labels.instance }}"]},
            },
        ]
        h = await start(
            aiohttp_client,
            tmp_path,
            [playbook(*steps)],
            alertmanager={"url": am.url},
            remediation={"mode": "auto"},
        )
        instance = 'pod-1", alertname=~".*'
        labels = {"alertname": "CacheDown", "service": "cart"}
        incident_id = await h.fire(labels, labels={"instance": instance})
        noise = await h.wait_step(incident_id, "silence-noise", {StepState.SUCCEEDED})
        keep = await h.wait_step(incident_id, "silence-keep", {StepState.SUCCEEDED})
        unquoted = await h.step(incident_id, "silence-unquoted")
        assert (unquoted.state, unquoted.guard) == (StepState.SKIPPED, Guard.INVALID)
        assert noise.result is not None and noise.result.silence_id
        assert keep.result is not None and keep.result.silence_id

        silences = {s["id"]: s for s in await am.silences()}
        assert len(silences) == 2
        made = silences[noise.result.silence_id]
        assert made["status"]["state"] == "active"
        assert made["createdBy"] == "alertpilot"
        assert made["comment"].startswith(f"cache restarts on {instance} (incident #{incident_id}")
        matchers = {(m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in made["matchers"]}
        assert matchers == {
            ("alertname", "CacheDown", False, True),
            ("instance", instance, False, True),
        }
        incident = await h.incident(incident_id)
        recorded = {s["id"]: s for s in incident.data["silences"]}
        assert recorded[noise.result.silence_id]["expire_on_resolve"] is True
        assert recorded[keep.result.silence_id]["expire_on_resolve"] is False

        await h.post(group(labels, labels={"instance": instance}, status="resolved"))
        for _ in range(200):
            silences = {s["id"]: s for s in await am.silences()}
            if silences[noise.result.silence_id]["status"]["state"] == "expired":
                break
            await asyncio.sleep(0.05)
        assert silences[noise.result.silence_id]["status"]["state"] == "expired"
        assert silences[keep.result.silence_id]["status"]["state"] == "active"
        incident = await h.incident(incident_id)
        expired = [
            e
            for e in await h.events(incident_id, EventKind.REMEDIATION)
            if e.data["state"] == "silence_expired"
        ]
        assert [e.data["silence_id"] for e in expired] == [noise.result.silence_id]
        recorded = {s["id"]: s for s in incident.data["silences"]}
        assert recorded[noise.result.silence_id]["expired_at"] is not None
        assert recorded[keep.result.silence_id]["expired_at"] is None
