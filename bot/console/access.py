"""Who is looking at the console, and whether a form they send is one it gave them.

Two ways in, both configured under ``console``:

- **A token of one's own** (``console.users``): the sign-in form takes it and answers
  with a session cookie, an opaque random id (the store keeps only its SHA-256, with
  the user's name, a CSRF token and the expiry, under ``console:session:``; it lasts
  ``session_ttl``). The cookie is HttpOnly, SameSite=Strict, limited to ``/ui`` and
  Secure when ``server.public_url`` is https. A session whose user is no longer
  configured is no session.
- **An auth proxy** (oauth2-proxy and the like): its user header
  (``console.user_header``) is believed only on a connection from an address in
  ``console.trusted_proxies``; from anywhere else it is ignored, so a client cannot name
  itself.

Every POST carries a CSRF token that is checked before anything else: a session's own
token, or for a proxy's user an HMAC of their name under a key the store keeps (the same
on every replica). The sign-in form itself carries a double-submit token (a cookie and a
field that must match). Header values and tokens are never shown on a page.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from bot.core.clock import Clock
from bot.settings import ConsoleSettings, Settings
from bot.store.base import RateLimit, Store

log = logging.getLogger(__name__)

SESSION_COOKIE = "alertpilot_session"
SIGNIN_COOKIE = "alertpilot_signin"
_SESSION_KEY = "console:session:"
_CSRF_KEY = "console:csrf-key"
# Sign-in attempts from one address: a token is long, but guessing is still refused.
SIGNIN_LIMIT = RateLimit("console:signin:", limit=10, window=60.0)


@dataclass(frozen=True)
class Viewer:
    """A signed-in person: their name as the timeline records it, how they got in, and
    the CSRF token their forms carry."""

    name: str
    via: Literal["session", "proxy"]
    csrf: str


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def same(given: str, expected: str) -> bool:
    """Constant-time equality, for tokens (a lone surrogate compares unequal, no raise)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def clean_name(raw: str) -> str | None:
    """A name a proxy sent, fit for the timeline: printable, at most 64 characters."""
    name = raw.strip()
    if not name or len(name) > 64 or not name.isprintable():
        return None
    return name


class Gate:
    """Sessions, the proxy's header and CSRF tokens, over the store's shared state."""

    def __init__(self, settings: Settings, store: Store, clock: Clock) -> None:
        assert settings.console is not None
        self.console: ConsoleSettings = settings.console
        self.store = store
        self.clock = clock
        public = settings.server.public_url or ""
        self.secure = public.lower().startswith("https://")
        self._csrf_key: bytes | None = None

    # who ------------------------------------------------------------------------------
    def from_proxy(self, request: web.Request) -> bool:
        """Whether the connection comes from a configured auth proxy."""
        peer = request.remote
        if not peer or not self.console.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.console.trusted_proxies)

    async def viewer(self, request: web.Request) -> Viewer | None:
        """Who sent the request, or None when nobody is signed in."""
        if self.from_proxy(request):
            raw = request.headers.get(self.console.user_header)
            name = clean_name(raw) if raw is not None else None
            if name is not None:
                return Viewer(name, "proxy", await self._proxy_csrf(name))
        elif self.console.user_header in request.headers:
            log.warning(
                "console: %s header from %s ignored: not a trusted proxy",
                self.console.user_header,
                request.remote,
            )
        return await self._session(request.cookies.get(SESSION_COOKIE))

    async def _session(self, cookie: str | None) -> Viewer | None:
        if not cookie or len(cookie) > 200 or not self.console.users:
            return None
        raw = await self.store.kv_get(_SESSION_KEY + _digest(cookie), self.clock.now())
        if raw is None:
            return None
        try:
            held = json.loads(raw)
            name, csrf = str(held["user"]), str(held["csrf"])
        except (ValueError, KeyError, TypeError):
            return None
        if not any(user.name == name for user in self.console.users):
            return None  # no longer configured: the session ends with the user
        return Viewer(name, "session", csrf)

    # sign in and out -----------------------------------------------------------------
    def user_of(self, token: str) -> str | None:
        """The configured user whose token this is (every token compared, in constant time)."""
        found = None
        for user in self.console.users:
            if same(token, user.token.get_secret_value()):
                found = user.name
        return found

    async def allow_attempt(self, request: web.Request) -> bool:
        """A sign-in attempt from this address within ``SIGNIN_LIMIT``."""
        bucket = RateLimit(
            SIGNIN_LIMIT.bucket + (request.remote or "?"), SIGNIN_LIMIT.limit, SIGNIN_LIMIT.window
        )
        return await self.store.take_rate_slot([bucket], now=self.clock.now()) is None

    async def open_session(self, name: str, response: web.StreamResponse) -> None:
        session = secrets.token_urlsafe(32)
        held = json.dumps({"user": name, "csrf": secrets.token_urlsafe(32)})
        ttl = self.console.session_ttl
        await self.store.kv_set(
            _SESSION_KEY + _digest(session), held, now=self.clock.now(), ttl=ttl
        )
        self._cookie(response, SESSION_COOKIE, session, max_age=int(ttl))

    async def close_session(self, request: web.Request, response: web.StreamResponse) -> None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie and len(cookie) <= 200:  # forgotten at once: kept one second, unreadable
            await self.store.kv_set(
                _SESSION_KEY + _digest(cookie), "{}", now=self.clock.now(), ttl=1.0
            )
        response.del_cookie(SESSION_COOKIE, path="/ui")

    def signin_token(self, request: web.Request) -> tuple[str, bool]:
        """The sign-in form's double-submit token: the browser's, or a new one (True)
        that ``keep_signin_token`` must set as a cookie."""
        token = request.cookies.get(SIGNIN_COOKIE)
        if token and len(token) <= 100:
            return token, False
        return secrets.token_urlsafe(24), True

    def keep_signin_token(self, response: web.StreamResponse, token: str) -> None:
        self._cookie(response, SIGNIN_COOKIE, token, max_age=3600)

    def signin_checked(self, request: web.Request, field: str) -> bool:
        """Whether the sign-in form sent back the token its cookie holds."""
        cookie = request.cookies.get(SIGNIN_COOKIE)
        return bool(cookie) and bool(field) and same(field, cookie or "")

    def _cookie(self, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/ui",
            httponly=True,
            secure=self.secure,
            samesite="Strict",
        )

    # CSRF -----------------------------------------------------------------------------
    async def _proxy_csrf(self, name: str) -> str:
        key = await self._key()
        return hmac.new(key, f"console-csrf:{name}".encode(), hashlib.sha256).hexdigest()

    async def _key(self) -> bytes:
        """The CSRF key shared by every replica: made once, kept in the store."""
        if self._csrf_key is None:
            now = self.clock.now()
            held = await self.store.kv_get(_CSRF_KEY, now)
            if held is None:
                held = secrets.token_hex(32)
                await self.store.kv_set(_CSRF_KEY, held, now=now)
            self._csrf_key = bytes.fromhex(held)
        return self._csrf_key
