"""PagerDuty Webhooks v3 (PagerDuty -> us): realistic payloads, signing, and sending."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp

JsonDict = dict[str, Any]


def pd_ref(kind: str, obj_id: str, summary: str, subdomain: str = "acme") -> JsonDict:
    """A PagerDuty ``<kind>_reference`` object (``user``, ``service``, ``schedule``...)."""
    plural = {"escalation_policy": "escalation_policies"}.get(kind, f"{kind}s")
    html_plural = "service-directory" if kind == "service" else plural
    return {
        "id": obj_id,
        "type": f"{kind}_reference",
        "summary": summary,
        "self": f"https://api.pagerduty.com/{plural}/{obj_id}",
        "html_url": f"https://{subdomain}.pagerduty.com/{html_plural}/{obj_id}",
    }


def sign_v3(body: bytes, secrets: list[str]) -> str:
    """The ``X-PagerDuty-Signature`` value: ``v1=<hex hmac-sha256>`` per secret, comma-joined."""
    return ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)


def webhook_v3_event(
    event_type: str,
    incident_id: str = "PGR0VU2",
    incident_key: str | None = None,
    agent_name: str = "Tenex Engineer",
    *,
    agent_id: str = "PLH1HKV",
    title: str = "A little bump in the road",
    status: str | None = None,
    number: int = 2,
    service_id: str = "PF9KMXH",
    service_name: str = "API Service",
    assignees: list[tuple[str, str]] | None = None,
    urgency: str = "high",
    resolve_reason: str | None = None,
    occurred_at: datetime | None = None,
) -> JsonDict:
    """A realistic v3 webhook payload for an incident event (``incident.triggered`` ...)."""
    if status is None:
        status = {
            "incident.acknowledged": "acknowledged",
            "incident.resolved": "resolved",
        }.get(event_type, "triggered")
    when = (occurred_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
    when = when.replace("+00:00", "Z")
    return {
        "event": {
            "id": uuid.uuid4().hex,
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": when,
            "agent": pd_ref("user", agent_id, agent_name),
            "client": None,
            "data": {
                "id": incident_id,
                "type": "incident",
                "self": f"https://api.pagerduty.com/incidents/{incident_id}",
                "html_url": f"https://acme.pagerduty.com/incidents/{incident_id}",
                "number": number,
                "status": status,
                "incident_key": incident_key or uuid.uuid4().hex,
                "created_at": when,
                "title": title,
                "service": pd_ref("service", service_id, service_name),
                "assignees": [
                    pd_ref("user", uid, name)
                    for uid, name in (assignees or [("PTUXL6G", "User 123")])
                ],
                "escalation_policy": pd_ref("escalation_policy", "PUS0KTE", "Default"),
                "teams": [],
                "priority": None,
                "urgency": urgency,
                "conference_bridge": None,
                "resolve_reason": resolve_reason,
            },
        }
    }


async def send_webhook_v3(
    url: str,
    event: JsonDict,
    secrets: list[str],
    *,
    ssl_ctx: ssl.SSLContext | bool = True,
    extra_headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """POST ``event`` to ``url`` signed like PagerDuty does; returns (status, body text)."""
    body = json.dumps(event).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "PagerDuty-Webhook/V3.0",
        "X-PagerDuty-Signature": sign_v3(body, secrets),
        "X-Webhook-Id": str(uuid.uuid4()),
        "X-Webhook-Subscription": "PSUBSCR",
        **(extra_headers or {}),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers, ssl=ssl_ctx) as resp,
    ):
        return resp.status, await resp.text()
