"""PagerDuty Webhooks v3 in: signature check, parsing, and what each event does here.

``X-PagerDuty-Signature`` holds one or more ``v1=<hex HMAC-SHA256 of the raw body>``
values (several while a secret is being rotated); the body is accepted when any matches
the configured secret, compared in constant time, before the body is parsed at all.

    incident.acknowledged     IncidentActions.acknowledge (source "pagerduty")
    incident.unacknowledged   IncidentActions.unacknowledge
    incident.resolved         IncidentActions.resolve
    incident.reassigned       timeline note: who it is assigned to now
    incident.escalated        timeline note (never our own ``incident.escalated``: no loop)
    incident.annotated        timeline note with the note's text
    incident.triggered        remembered (PagerDuty's incident id for ours), nothing else
    anything else             logged, counted, ignored (HTTP 200)

Our incident is found by the event's ``incident_key`` (the ``dedup_key`` alertpilot sent),
or, for events that only reference PagerDuty's incident, by its id as learned from an
earlier event. Each event id is processed once: processed ids are kept in the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.actions import IncidentActions
from bot.clock import Clock
from bot.errors import NotFound, PayloadError
from bot.incidents import Incident, Status, TransitionError
from bot.notify.pagerduty_payload import clip
from bot.notify.pagerduty_sender import Pager, PagerDutyMetrics, PdIncident
from bot.store.base import Store

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-PagerDuty-Signature"
SEEN_TTL = 7 * 86400.0
MAP_TTL = 30 * 86400.0
HANDLED = frozenset(
    {
        "incident.acknowledged",
        "incident.unacknowledged",
        "incident.resolved",
        "incident.reassigned",
        "incident.escalated",
        "incident.annotated",
        "incident.triggered",
    }
)
_TYPE = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """Whether any ``v1=`` signature in ``header`` is the HMAC-SHA256 of ``body``."""
    if not header or not secret:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    matched = False
    for part in header.split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme == "v1" and value:
            given = value.strip().lower().encode("utf-8", "surrogateescape")
            matched |= hmac.compare_digest(given, expected)
    return matched


class Reference(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    summary: str | None = None
    html_url: str | None = None


class WebhookEvent(BaseModel):
    """One v3 event. Unknown fields are ignored: PagerDuty adds fields over time."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    event_type: str = Field(min_length=1, max_length=200)
    resource_type: str = ""
    occurred_at: str | None = None
    agent: Reference | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event: WebhookEvent


def parse_webhook(body: bytes) -> WebhookEvent:
    try:
        return Envelope.model_validate_json(body).event
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise PayloadError(f"body is not JSON: {first['msg']}", code="invalid_json") from None
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise PayloadError(f"not a PagerDuty v3 webhook: {where}: {first['msg']}") from None


def _names(refs: Any) -> str:
    items = refs if isinstance(refs, list) else []
    names = [str(r.get("summary") or r.get("id")) for r in items if isinstance(r, Mapping)]
    return ", ".join(names) or "nobody"


class PagerDutyWebhooks:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        actions: IncidentActions,
        pager: Pager,
        metrics: PagerDutyMetrics,
    ) -> None:
        self.store = store
        self.clock = clock
        self.actions = actions
        self.pager = pager
        self.metrics = metrics
        self._lock = asyncio.Lock()  # check-apply-remember of an event id, one at a time

    async def handle(self, event: WebhookEvent) -> str:
        """Apply one event once; return what happened (for the response and the metric)."""
        label = event.event_type if _TYPE.match(event.event_type) else "invalid"
        seen_key = f"pagerduty:webhook:{event.id}"
        async with self._lock:
            if await self.store.kv_get(seen_key, self.clock.now()) is not None:
                outcome = "duplicate"
            else:
                outcome = await self._apply(event)
                await self.store.kv_set(seen_key, outcome, now=self.clock.now(), ttl=SEEN_TTL)
        self.metrics.webhooks.labels(label if label in HANDLED else "other", outcome).inc()
        return outcome

    async def _apply(self, event: WebhookEvent) -> str:
        if event.event_type not in HANDLED:
            log.info(
                "PagerDuty webhook %s: event type %r is not handled; ignored",
                event.id,
                clip(event.event_type, 80),
            )
            return "ignored"
        incident = await self._find(event.data)
        if incident is None:
            log.info(
                "PagerDuty webhook %s (%s): not an alertpilot incident", event.id, event.event_type
            )
            return "not_ours"
        actor = (event.agent.summary if event.agent else None) or "PagerDuty"
        data = event.data
        kind = event.event_type.removeprefix("incident.")
        try:
            if kind == "acknowledged":
                if incident.status is not Status.TRIGGERED:
                    return f"already {incident.status.value}"
                await self.actions.acknowledge(incident.id, actor=actor, source="pagerduty")
            elif kind == "unacknowledged":
                await self.actions.unacknowledge(incident.id, actor=actor, source="pagerduty")
            elif kind == "resolved":
                reason = data.get("resolve_reason")
                await self.actions.resolve(
                    incident.id,
                    actor=actor,
                    source="pagerduty",
                    reason=clip(str(reason), 300) if reason else "",
                )
            elif kind == "reassigned":
                text = f"reassigned in PagerDuty to {_names(data.get('assignees'))} by {actor}"
                await self.actions.note(incident.id, actor=actor, source="pagerduty", text=text)
            elif kind == "escalated":
                policy = data.get("escalation_policy")
                via = f" ({policy.get('summary')})" if isinstance(policy, Mapping) else ""
                text = f"escalated in PagerDuty{via} to {_names(data.get('assignees'))}"
                await self.actions.note(incident.id, actor=actor, source="pagerduty", text=text)
            elif kind == "annotated":
                content = data.get("content")
                text = f"note in PagerDuty by {actor}" + (
                    f": {clip(str(content), 2000)}" if content else ""
                )
                await self.actions.note(incident.id, actor=actor, source="pagerduty", text=text)
        except TransitionError as exc:
            return f"ignored: {exc}"
        return "applied" if kind != "triggered" else "recorded"

    async def _find(self, data: Mapping[str, Any]) -> Incident | None:
        """Our incident, by incident_key or by PagerDuty's incident id seen before."""
        pd_ref = data if data.get("type") == "incident" else data.get("incident")
        pd_ref = pd_ref if isinstance(pd_ref, Mapping) else {}
        pd_id = pd_ref.get("id")
        incident: Incident | None = None
        key = pd_ref.get("incident_key")
        if isinstance(key, str) and key:
            incident = await self.store.find_incident(key)
        if incident is None and isinstance(pd_id, str) and pd_id:
            known = await self.store.kv_get(f"pagerduty:incident:{pd_id}", self.clock.now())
            if known is not None and known.isdigit():
                try:
                    incident = await self.store.get_incident(int(known), timeline=False)
                except NotFound:
                    incident = None
        if incident is not None and isinstance(pd_id, str) and pd_id:
            await self.store.kv_set(
                f"pagerduty:incident:{pd_id}", str(incident.id), now=self.clock.now(), ttl=MAP_TTL
            )
            number = pd_ref.get("number")
            html_url = pd_ref.get("html_url")
            await self.pager.remember_incident(
                incident.id,
                PdIncident(
                    id=pd_id,
                    number=number if isinstance(number, int) else None,
                    html_url=html_url if isinstance(html_url, str) else None,
                ),
            )
        return incident
