"""PagerDuty Webhooks v3 in: signature check, parsing, and what each event does here.

``X-PagerDuty-Signature`` holds one or more ``v1=<hex HMAC-SHA256 of the raw body>``
values (several while a secret is being rotated); the body is accepted when any matches
the configured secret, compared in constant time, before the body is parsed at all.

    incident.acknowledged     IncidentActions.acknowledge (source "pagerduty")
    incident.unacknowledged   IncidentActions.unacknowledge
    incident.resolved         IncidentActions.resolve
    incident.reassigned       timeline note: who it is assigned to now
    incident.escalated        timeline note (never our own ``incident.escalated``: no loop);
                              the page's level moved: alertpilot's next level is above it
    incident.annotated        timeline note with the note's text
    incident.triggered        remembered (PagerDuty's incident id for ours), nothing else
    anything else             logged, counted, ignored (HTTP 200)

Our incident is found by the event's ``incident_key`` (the ``dedup_key`` alertpilot sent,
a re-page's too), or, for events that only reference PagerDuty's incident, by its id as
learned from an earlier event.

Each event is applied once. The signature covers the body but no time, so a captured
delivery would stay valid for ever: what stops a replay is memory. Processed event ids
are kept in the store (``seen_events``) for ``pagerduty.seen_event_retention``, whatever
``store.retention`` says, and an event whose ``occurred_at`` is older than what is
remembered is not applied ("stale"). A repeat is either remembered or stale. Both are
answered 200, as PagerDuty's redeliveries must be: a non-2xx answer makes it retry for
two days, or counts towards disabling the subscription.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from bot.core.clock import Clock
from bot.core.durations import format_duration
from bot.core.incidents import Incident, Status, TransitionError
from bot.core.transitions import IncidentActions
from bot.errors import NotFound, PayloadError
from bot.pagerduty.levels import repage_map_key
from bot.pagerduty.payload import clip, dedup_key
from bot.pagerduty.sender import Pager, PagerDutyMetrics
from bot.pagerduty.state import PdIncident
from bot.runtime.locks import both
from bot.store.base import Store

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-PagerDuty-Signature"
SOURCE = "pagerduty"  # the event ids' source in the store's seen_events
# The oldest time from which every event id seen is still remembered: ids seen earlier
# may be forgotten. Before seen_events, ids were kept in the key-value table for 7 days.
SEEN_SINCE_KEY = "pagerduty:seen_since"
LEGACY_SEEN_TTL = 7 * 86400.0
FORGET_EVERY = 3600.0  # s between two deletions of old event ids
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
    occurred_at: AwareDatetime  # always sent; what tells an old event from a new one
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


def _seen_since(raw: str | None) -> float | None:
    """The stored horizon (``SEEN_SINCE_KEY``, a time as text); None when there is none or
    it is unreadable: the horizon is then taken as after an upgrade."""
    if raw is None:
        return None
    try:
        since = float(raw)
    except ValueError:
        since = math.nan
    if not math.isfinite(since):
        log.warning("PagerDuty webhooks: unreadable %s %r, starting over", SEEN_SINCE_KEY, raw[:40])
        return None
    return since


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


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
        *,
        retention: float,
    ) -> None:
        self.store = store
        self.clock = clock
        self.actions = actions
        self.pager = pager
        self.metrics = metrics
        self.retention = retention  # pagerduty.seen_event_retention
        self._lock = asyncio.Lock()  # check-apply-remember of an event id, one at a time
        self._since: float | None = None  # SEEN_SINCE_KEY, once read
        self._forgot_at: float | None = None

    async def handle(self, event: WebhookEvent) -> str:
        """Apply one event once; return what happened (for the response and the metric)."""
        label = event.event_type if _TYPE.match(event.event_type) else "invalid"
        label = label if label in HANDLED else "other"
        occurred = event.occurred_at.timestamp()
        async with both(self._lock, self.store.hold("pagerduty:webhooks")):
            now = self.clock.now()
            horizon = await self._horizon(now)
            if occurred < horizon:
                outcome = "stale"
                log.warning(
                    "PagerDuty webhook %s (%s) occurred at %s, before %s (event ids are"
                    " kept for %s): too old to tell from a replay; not applied",
                    event.id,
                    label,
                    event.occurred_at.isoformat(),
                    _iso(horizon),
                    format_duration(self.retention),
                )
            elif await self.store.seen_event(SOURCE, event.id) is not None:
                outcome = "duplicate"
            else:
                outcome = await self._apply(event)
                # Counted from occurred_at when PagerDuty's clock is ahead of ours: a replay
                # is accepted until occurred_at + retention, so the id must last as long.
                at = min(max(now, occurred), now + self.retention)
                await self.store.remember_event(SOURCE, event.id, outcome, at=at)
        self.metrics.webhooks.labels(label, outcome).inc()
        return outcome

    async def _horizon(self, now: float) -> float:
        """The oldest ``occurred_at`` applied: every id seen since is still remembered.

        Ids older than the retention are forgotten here, at most every ``FORGET_EVERY``;
        the time they were forgotten up to is stored first, so the horizon never trails
        what was deleted: not after a crash, a longer retention or a clock set back, nor
        after an upgrade from the versions that kept ids for 7 days only.
        """
        if self._since is None:
            stored = _seen_since(await self.store.kv_get(SEEN_SINCE_KEY, now))
            if stored is None:  # as after an upgrade: ids were kept for 7 days
                self._since = now - LEGACY_SEEN_TTL
                await self.store.kv_set(SEEN_SINCE_KEY, repr(self._since), now=now)
            else:
                self._since = stored
        if self._forgot_at is None or now - self._forgot_at >= FORGET_EVERY:
            cutoff = now - self.retention
            if cutoff > self._since:
                await self.store.kv_set(SEEN_SINCE_KEY, repr(cutoff), now=now)
                self._since = cutoff
            gone = await self.store.forget_events(SOURCE, before=cutoff)
            self._forgot_at = now
            if gone:
                log.info(
                    "PagerDuty webhooks: forgot %d event id(s) seen before %s", gone, _iso(cutoff)
                )
        return max(now - self.retention, self._since)

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
                if data.get("incident_key") in (None, dedup_key(incident)):
                    await self.pager.observe_escalation(incident.id)  # the page's own level
            elif kind == "annotated":
                content = data.get("content")
                text = f"note in PagerDuty by {actor}" + (
                    f": {clip(str(content), 2000)}" if content else ""
                )
                await self.actions.note(incident.id, actor=actor, source="pagerduty", text=text)
        except TransitionError as exc:
            return f"ignored: {exc}"
        return "applied" if kind != "triggered" else "recorded"

    async def _by_id(self, known: str | None) -> Incident | None:
        if known is None or not known.isdigit():
            return None
        try:
            return await self.store.get_incident(int(known), timeline=False)
        except NotFound:
            return None

    async def _find(self, data: Mapping[str, Any]) -> Incident | None:
        """Our incident, by incident_key or by PagerDuty's incident id seen before."""
        pd_ref = data if data.get("type") == "incident" else data.get("incident")
        pd_ref = pd_ref if isinstance(pd_ref, Mapping) else {}
        pd_id = pd_ref.get("id")
        incident: Incident | None = None
        key = pd_ref.get("incident_key")
        if isinstance(key, str) and key:
            incident = await self.store.find_incident(key)
            if incident is None:  # a re-page for a higher level has a dedup_key of its own
                known = await self.store.kv_get(repage_map_key(key), self.clock.now())
                incident = await self._by_id(known)
        if incident is None and isinstance(pd_id, str) and pd_id:
            known = await self.store.kv_get(f"pagerduty:incident:{pd_id}", self.clock.now())
            incident = await self._by_id(known)
        if incident is not None and isinstance(key, str) and key != dedup_key(incident):
            return incident  # a re-page's: PagerDuty's incident for the page stays linked
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
