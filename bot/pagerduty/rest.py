"""PagerDuty's REST API v2 with the ``pagerduty`` SDK: finding an incident by its
dedup_key, and moving an incident to another escalation level.

The SDK's ``RestApiV2Client`` is synchronous: every call here runs in a worker thread
(``asyncio.to_thread``), with one network attempt, the configured timeout and one retry
on 429/5xx (the SDK would retry a 429 forever).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import pagerduty
from pydantic import SecretStr

from bot.errors import UpstreamError

log = logging.getLogger(__name__)


class RestUnavailable(UpstreamError):
    """PagerDuty could not answer (down, throttled, wrong token)."""


@dataclass(frozen=True)
class RestSettings:
    api_url: str
    api_token: SecretStr
    ssl_ctx: ssl.SSLContext
    timeout: float
    retry_delay: float
    from_email: str | None = None  # the From header: who an account-level token acts as

    def client(self) -> pagerduty.RestApiV2Client:
        client = pagerduty.RestApiV2Client(
            self.api_token.get_secret_value(),
            default_from=self.from_email,
            base_url=self.api_url,
            verify=self.ssl_ctx,
        )
        client.timeout = math.ceil(self.timeout)  # the SDK types it as whole seconds
        client.sleep_timer = self.retry_delay
        client.max_network_attempts = 1
        client.retry = {429: 1, 500: 1, 502: 1, 503: 1, 504: 1}
        return client


def failure(exc: pagerduty.Error) -> str:
    """What went wrong, without the request (its headers hold the token)."""
    status = exc.response.status_code if exc.response is not None else None
    return f"HTTP {status}" if status is not None else "unreachable"


@dataclass(frozen=True)
class FoundIncident:
    id: str
    number: int | None
    html_url: str | None
    status: str


class IncidentFinder:
    """PagerDuty's incident for a dedup_key (``GET /incidents?incident_key=``).

    A trigger whose answer was lost (a crash after PagerDuty took it, a dropped
    connection) may have opened an incident; looking before sending again keeps one
    trigger per incident.
    """

    def __init__(self, rest: RestSettings) -> None:
        self.rest = rest

    async def find(self, dedup_key: str) -> FoundIncident | None:
        return await asyncio.to_thread(self._find, dedup_key)

    def _find(self, dedup_key: str) -> FoundIncident | None:
        params = {"incident_key": dedup_key, "date_range": "all"}
        try:
            with self.rest.client() as client:
                found = client.rget("incidents", params=params)
        except pagerduty.Error as exc:
            reason = failure(exc)
            log.warning("PagerDuty incident lookup failed: %s", reason)
            raise RestUnavailable(f"PagerDuty incident lookup unavailable ({reason})") from None
        for item in found if isinstance(found, list) else []:
            if isinstance(item, Mapping) and item.get("incident_key") == dedup_key:
                number = item.get("incident_number")
                return FoundIncident(
                    id=str(item.get("id", "")),
                    number=number if isinstance(number, int) else None,
                    html_url=str(item["html_url"]) if item.get("html_url") else None,
                    status=str(item.get("status", "")),
                )
        return None


class IncidentEscalator:
    """``PUT /incidents/{id}`` with ``escalation_level``: PagerDuty notifies that level of
    the incident's escalation policy now. The Events API cannot choose a level; this is
    the REST API's incident escalate. An account-level token needs ``from_email``."""

    def __init__(self, rest: RestSettings) -> None:
        self.rest = rest

    async def escalate(self, pd_incident_id: str, level: int) -> None:
        """Raise RestUnavailable when PagerDuty did not take it (down, a level the policy
        does not have, a token that may not write)."""
        await asyncio.to_thread(self._escalate, pd_incident_id, level)

    def _escalate(self, pd_incident_id: str, level: int) -> None:
        body = {"type": "incident_reference", "escalation_level": level}
        try:
            with self.rest.client() as client:
                client.rput(f"incidents/{pd_incident_id}", json=body)
        except pagerduty.Error as exc:
            reason = failure(exc)
            log.warning("PagerDuty incident escalation failed: %s", reason)
            raise RestUnavailable(f"PagerDuty did not escalate the incident ({reason})") from None
