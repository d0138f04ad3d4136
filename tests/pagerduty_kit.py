"""Helpers for the PagerDuty tests: the real app on a ManualClock, wired to the HTTPS fake.

The background job runner is stopped right after start: a test runs due jobs itself
(``settle``) and moves time (``advance``), so every timing assertion is exact.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.clock import Clock, ManualClock
from bot.core.incidents import Event, EventKind, Incident
from bot.core.transitions import IncidentActions
from bot.playbook.model import Playbook
from bot.playbook.registry import PlaybookSet
from bot.store.base import Store
from conftest import make_settings
from fakes import FakePagerDuty, sign_v3, webhook_v3_event

ROUTING_KEY = "pd0routing0key0for0tests0000000A"  # the Events API wants 32 characters
SECRET = "whsec-current-4f9a"
OLD_SECRET = "whsec-previous-77c1"
STARTS = "2026-05-01T10:00:00Z"
ZERO = "0001-01-01T00:00:00Z"
SEVERITY_MAP = {"critical": "P0", "error": "P1", "warning": "P2", "info": "P3"}


def pd_section(fake: FakePagerDuty, **overrides: Any) -> dict[str, Any]:
    return {
        "routing_key": ROUTING_KEY,
        "events_url": f"{fake.base_url}/v2/enqueue",
        "api_url": fake.base_url,
        "api_token": fake.api_token,
        "webhook_secret": SECRET,
        "ca_file": fake.ca_file,
        "api_retry_delay": 0.01,
        **overrides,
    }


def alert_group(
    alertname: str = "CheckoutErrors",
    *,
    severity: str = "critical",
    status: str = "firing",
    service: str = "checkout",
    fingerprint: str = "fp000001",
    starts: str = STARTS,
) -> dict[str, Any]:
    """An Alertmanager v4 payload: one alert, grouped by alertname and service."""
    labels = {
        "alertname": alertname,
        "service": service,
        "instance": f"{service}-pod-a",
        "namespace": "shop",
        "severity": severity,
    }
    annotations = {
        "summary": f"{alertname} on {service}",
        "runbook_url": f"https://runbooks.example.com/{alertname}",
    }
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}", service="{service}"}}',
        "status": status,
        "receiver": "bot",
        "groupLabels": {"alertname": alertname, "service": service},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": starts,
                "endsAt": ZERO if status == "firing" else "2026-05-01T10:30:00Z",
                "generatorURL": f"http://prometheus.example:9090/graph?g0.expr={alertname}",
                "fingerprint": fingerprint,
            }
        ],
    }


@dataclass
class Bot:
    client: TestClient[web.Request, web.Application]
    clock: Clock
    fake: FakePagerDuty

    @property
    def app(self) -> web.Application:
        app = self.client.app
        assert app is not None
        return app

    @property
    def store(self) -> Store:
        return self.app[keys.STORE]

    @property
    def actions(self) -> IncidentActions:
        return self.app[keys.ACTIONS]

    async def post_alert(self, payload: Mapping[str, Any]) -> None:
        resp = await self.client.post("/alertmanager", json=payload)
        assert resp.status == 200, await resp.text()

    async def settle(self) -> None:
        """Fold the inbox into incidents and run every job due now, until none is left."""
        for _ in range(50):
            await self.app[keys.INBOX].drain()
            if not await self.app[keys.RUNNER].run_due():
                return
        raise AssertionError("jobs kept coming for 50 rounds")

    async def advance(self, seconds: float) -> None:
        assert isinstance(self.clock, ManualClock), "advance() needs a ManualClock"
        self.clock.advance(seconds)
        await self.settle()

    async def incident(self, key: str | None = None) -> Incident:
        """The incident with ``key``, or the only one there is."""
        if key is not None:
            found = await self.store.find_incident(key)
            assert found is not None, key
            return found
        incidents = await self.store.list_incidents(limit=10)
        assert len(incidents) == 1, [i.key for i in incidents]
        return await self.store.get_incident(incidents[0].id)

    async def events(self, incident_id: int, kind: str | None = None) -> list[Event]:
        return [e for e in await self.store.events(incident_id) if kind in (None, e.kind)]

    async def pages(self, incident_id: int) -> list[Event]:
        return await self.events(incident_id, EventKind.PAGE)

    def event(self, event_type: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``webhook_v3_event`` occurring now by the bot's clock (unless ``occurred_at``)."""
        kwargs.setdefault("occurred_at", datetime.fromtimestamp(self.clock.now(), UTC))
        return webhook_v3_event(event_type, *args, **kwargs)

    async def webhook(
        self,
        event: Mapping[str, Any],
        *,
        secrets: Iterable[str] = (SECRET,),
        body: bytes | None = None,
        signature: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST /pagerduty with a body signed like PagerDuty signs it."""
        raw = body if body is not None else json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "PagerDuty-Webhook/V3.0"}
        sig = signature if signature is not None else sign_v3(raw, list(secrets))
        if sig:
            headers["X-PagerDuty-Signature"] = sig
        resp = await self.client.post("/pagerduty", data=raw, headers=headers)
        return resp.status, await resp.json()

    def actions_sent(self) -> list[tuple[str, str]]:
        """(event_action, dedup_key) of every event the fake accepted, in order."""
        return [(e["event_action"], e["dedup_key"]) for e in self.fake.events]


async def start_bot(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    fake: FakePagerDuty,
    clock: Clock,
    *,
    playbooks: Iterable[Playbook] = (),
    pagerduty: Mapping[str, Any] | None = None,
    background: bool = False,
    **sections: Any,
) -> Bot:
    """The real app with PagerDuty pointed at ``fake``; the background runner stopped
    unless ``background`` (then jobs run by themselves, as in production)."""
    settings = make_settings(
        tmp_path,
        pagerduty=pd_section(fake, **(pagerduty or {})),
        incidents={"severity_map": SEVERITY_MAP},
        **sections,
    )
    app = create_app(settings, clock=clock)
    app[keys.PLAYBOOKS] = PlaybookSet(list(playbooks))
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    if not background:
        await app[keys.RUNNER].stop()
    return Bot(client, clock, fake)
