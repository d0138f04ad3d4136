"""Alertmanager's webhook payload, version 4, as typed models.

Unknown fields are ignored here, unlike in config and playbooks, on purpose:
Alertmanager never retries a 4xx, so rejecting a field that a newer Alertmanager
adds would silently lose alerts. Every field alertpilot relies on is required
and typed, so a payload that is not version 4 in shape is still refused.

Also accepted, as their senders send them:

- Grafana alerting's webhook contact point: the same body with ``version: "1"`` and
  fields of its own; each alert's ``dashboardURL``, ``panelURL``, ``silenceURL`` and
  ``imageURL`` are kept as its ``links``.
- Alertmanager before 0.19, whose alerts carry no ``fingerprint``: it is derived from
  the label set exactly as Alertmanager derives it (FNV-1a over the sorted names and
  values, ``model.LabelSet.Fingerprint``), so the same alert always gets the same one.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bot.errors import PayloadError

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF
GRAFANA_LINKS = {
    "dashboardURL": "Grafana dashboard",
    "panelURL": "Grafana panel",
    "silenceURL": "Silence in Grafana",
    "imageURL": "Grafana image",
}


def label_fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: FNV-1a (64 bit) over each name and value
    in name order, each followed by the byte 0xff; 16 hex digits."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ _SEPARATOR) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime = ZERO_TIME
    generatorURL: str = ""
    fingerprint: str = Field(default="", max_length=128)  # Alertmanager < 0.19: derived
    # Grafana's (``version: "1"``): kept as the alert's links
    dashboardURL: str = ""
    panelURL: str = ""
    silenceURL: str = ""
    imageURL: str = ""

    @model_validator(mode="after")
    def _fingerprint(self) -> Alert:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", label_fingerprint(self.labels))
        return self

    @property
    def links(self) -> dict[str, str]:
        """Grafana's links of the alert, by what they show (empty for Alertmanager's)."""
        return {
            title: url
            for field_name, title in GRAFANA_LINKS.items()
            if (url := getattr(self, field_name))
        }

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "(no alertname)")

    @property
    def state_key(self) -> tuple[str, str, str]:
        """What makes a delivery a repeat: the same fingerprint, status and start."""
        return (self.fingerprint, self.status, self.startsAt.isoformat())


class AlertGroup(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4", "1"]  # "1": Grafana alerting's webhook
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
            f"not an Alertmanager (version 4) or Grafana (version 1) webhook payload: {where}:"
            f" {first['msg']}{more}",
            code="invalid_payload",
        ) from None
