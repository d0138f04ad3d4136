"""Alertmanager's webhook payload, version 4, as typed models.

Unknown fields are ignored here, unlike in config and playbooks, on purpose:
Alertmanager never retries a 4xx, so rejecting a field that a newer Alertmanager
adds would silently lose alerts. Every field alertpilot relies on is required
and typed, so a payload that is not version 4 in shape is still refused.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import PayloadError

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime = ZERO_TIME
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1, max_length=128)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "(no alertname)")

    @property
    def state_key(self) -> tuple[str, str, str]:
        """What makes a delivery a repeat: the same fingerprint, status and start."""
        return (self.fingerprint, self.status, self.startsAt.isoformat())


class AlertGroup(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    groupKey: str = Field(min_length=1)
    truncatedAlerts: int = Field(default=0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str]
    commonLabels: dict[str, str]
    commonAnnotations: dict[str, str]
    externalURL: str = ""
    alerts: list[Alert] = Field(min_length=1)

    @property
    def group_hash(self) -> str:
        """A stable short identity of the group: receiver and groupKey."""
        digest = hashlib.sha256(f"{self.receiver}\x00{self.groupKey}".encode()).hexdigest()
        return digest[:20]


def parse_group(body: bytes | str) -> AlertGroup:
    """Parse and validate a webhook body; raise PayloadError naming what is wrong."""
    try:
        return AlertGroup.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        if first["type"] == "json_invalid":
            raise PayloadError(
                f"body is not valid JSON: {first['msg']}", code="invalid_json"
            ) from None
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise PayloadError(
            f"not an Alertmanager version 4 payload: {where}: {first['msg']}{more}",
            code="invalid_payload",
        ) from None
