"""The incident list's filters, read from the query string: a value the form never
offers is ignored rather than answered with an error page, so a hand-edited or old
link still shows a list."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from bot.core.incidents import Status
from bot.settings import Severity
from bot.store.base import IncidentQuery

# time range choices: label shown, seconds back from now (None: all time)
RANGES: dict[str, tuple[str, float | None]] = {
    "1h": ("last hour", 3600.0),
    "24h": ("last 24 hours", 86400.0),
    "7d": ("last 7 days", 7 * 86400.0),
    "30d": ("last 30 days", 30 * 86400.0),
    "all": ("all time", None),
}
MAX_TEXT = 200
MAX_PAGE = 10_000


def _page(raw: str) -> int:
    """A page number from 1 to ``MAX_PAGE``; anything else is the first page."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
        return 1
    return min(max(int(raw), 1), MAX_PAGE)


@dataclass(frozen=True)
class Filters:
    status: Status | None = None
    severity: Severity | None = None
    service: str = ""
    range: str = "all"
    text: str = ""
    page: int = 1

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        status = query.get("status", "")
        severity = query.get("severity", "")
        page = query.get("page", "1")
        return cls(
            status=Status(status) if status in Status._value2member_map_ else None,
            severity=Severity(severity) if severity in Severity._value2member_map_ else None,
            service=query.get("service", "").strip()[:MAX_TEXT],
            range=query.get("range", "all") if query.get("range") in RANGES else "all",
            text=query.get("q", "").strip()[:MAX_TEXT],
            page=_page(page),
        )

    def query(self, now: float, page_size: int) -> IncidentQuery:
        """The store's query for this page; one incident more than a page, to know
        whether another page follows."""
        back = RANGES[self.range][1]
        return IncidentQuery(
            status=self.status,
            severity=self.severity,
            service=self.service or None,
            since=None if back is None else now - back,
            text=self.text,
            limit=page_size + 1,
            offset=(max(self.page, 1) - 1) * page_size,
        )

    def link(self, **changes: str | int) -> str:
        """The list's URL with these filters, some changed (``page=2``)."""
        params: dict[str, str | int] = {
            "status": self.status.value if self.status else "",
            "severity": self.severity.value if self.severity else "",
            "service": self.service,
            "range": self.range if self.range != "all" else "",
            "q": self.text,
            "page": self.page if self.page > 1 else "",
        }
        params.update(changes)
        kept = {key: value for key, value in params.items() if value not in ("", 1, None)}
        return "/ui/" + (f"?{urlencode(kept)}" if kept else "")

    @property
    def active(self) -> bool:
        return bool(self.status or self.severity or self.service or self.text) or (
            self.range != "all"
        )
