"""An async Alertmanager API v2 client: silences (create, expire) and alert queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.core.matchers import Matcher
from bot.errors import UpstreamError
from bot.upstream.breaker import CircuitBreaker
from bot.upstream.http import HttpError, request


class AlertmanagerError(UpstreamError):
    """Alertmanager could not do what was asked (down, refused, unexpected answer);
    ``status`` is its HTTP status when it answered."""

    def __init__(self, message: str, *, status: int | None = None, cause: str = "error") -> None:
        self.status = status
        self.cause = "unreachable" if status is not None and status >= 500 else cause
        super().__init__(message)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _same_silence(found: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether ``found`` (from the API) is the silence ``body`` asked for: same author,
    comment, matchers and end (Alertmanager keeps milliseconds)."""

    def matchers(silence: dict[str, Any]) -> set[tuple[Any, ...]]:
        return {
            (m.get("name"), m.get("value"), m.get("isRegex"), m.get("isEqual", True))
            for m in silence.get("matchers") or []
            if isinstance(m, dict)
        }

    try:
        ends = datetime.fromisoformat(str(found.get("endsAt")))
        gap = abs((ends - datetime.fromisoformat(str(body["endsAt"]))).total_seconds())
    except ValueError:
        return False
    return (
        gap < 1.0
        and found.get("createdBy") == body["createdBy"]
        and found.get("comment") == body["comment"]
        and matchers(found) == matchers(body)
    )


class AlertmanagerClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        breaker: CircuitBreaker | None = None,
        ui_url: str | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        # where people open it (alertmanager.external_url), for the links we show
        self.ui_url = (ui_url or base_url).rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.breaker = breaker

    async def _call(
        self, method: str, path: str, *, retries: int | None = None, **kwargs: Any
    ) -> Any:
        try:
            resp = await request(
                self.session,
                method,
                f"{self.base_url}{path}",
                timeout=self.timeout,
                retries=self.retries if retries is None else retries,
                breaker=self.breaker,
                **kwargs,
            )
        except HttpError as exc:
            raise AlertmanagerError(f"Alertmanager unavailable: {exc}", cause=exc.cause) from None
        if resp.status >= 400:
            raise AlertmanagerError(
                f"Alertmanager answered HTTP {resp.status}: {resp.text[:300]}", status=resp.status
            )
        try:
            return resp.json() if resp.body else None
        except ValueError:
            raise AlertmanagerError(
                f"Alertmanager answered HTTP {resp.status} with something that is not JSON"
            ) from None

    def silence_url(self, silence_id: str) -> str:
        return f"{self.ui_url}/#/silences/{quote(silence_id)}"

    async def create_silence(
        self,
        matchers: Sequence[Matcher],
        *,
        duration: float,
        created_by: str,
        comment: str,
        now: datetime | None = None,
    ) -> str:
        """Create a silence; return its id."""
        if not matchers:
            raise AlertmanagerError("a silence needs at least one matcher")
        start = now or datetime.now(UTC)
        body = {
            "matchers": [m.to_alertmanager() for m in matchers],
            "startsAt": _iso(start),
            "endsAt": _iso(start + timedelta(seconds=duration)),
            "createdBy": created_by,
            "comment": comment,
        }
        # Not retried: a create that timed out may have worked, and a second one would be
        # a silence nobody records or expires. The caller's job retries with the outcome known.
        try:
            answer = await self._call("POST", "/api/v2/silences", retries=0, json=body)
        except AlertmanagerError as exc:
            if exc.status is not None:
                raise  # it answered: nothing was made
            made = await self._made_by(body)  # no answer: it may have been made all the same
            if made is None:
                raise
            return made
        if not isinstance(answer, dict) or not answer.get("silenceID"):
            raise AlertmanagerError(f"unexpected answer to a silence: {answer!r}")
        return str(answer["silenceID"])

    async def _made_by(self, body: dict[str, Any]) -> str | None:
        """The id of the live silence this create ``body`` made, if Alertmanager can say."""
        try:
            silences = await self._call("GET", "/api/v2/silences")
        except AlertmanagerError:
            return None
        for silence in silences if isinstance(silences, list) else []:
            state = silence.get("status", {}).get("state") if isinstance(silence, dict) else None
            if state in ("active", "pending") and _same_silence(silence, body):
                return str(silence["id"])
        return None

    async def expire_silence(self, silence_id: str) -> None:
        """Expire a silence. Expiring an expired one is a 200; one Alertmanager no longer
        knows (garbage-collected after its retention) comes back as a 500 "silence not
        found" from Alertmanager 0.25, or 404 elsewhere: both count as expired."""
        try:
            await self._call("DELETE", f"/api/v2/silence/{quote(silence_id)}")
        except AlertmanagerError as exc:
            gone = exc.status == 404 or (exc.status == 500 and "silence not found" in str(exc))
            if not gone:
                raise

    async def silence(self, silence_id: str) -> dict[str, Any]:
        answer = await self._call("GET", f"/api/v2/silence/{quote(silence_id)}")
        return dict(answer)

    async def alerts(
        self,
        matchers: Sequence[Matcher],
        *,
        active: bool = True,
        silenced: bool = False,
        inhibited: bool = False,
    ) -> list[dict[str, Any]]:
        """Alerts Alertmanager knows, filtered by matchers."""
        params: list[tuple[str, str]] = [("filter", str(m)) for m in matchers]
        params += [
            ("active", str(active).lower()),
            ("silenced", str(silenced).lower()),
            ("inhibited", str(inhibited).lower()),
        ]
        answer = await self._call("GET", "/api/v2/alerts", params=params)
        return list(answer or [])
