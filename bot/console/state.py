"""What the console holds while the app runs (under ``CONSOLE``), and how it answers:
HTML from autoescaping templates, with headers that keep its pages to themselves."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from bot.console.access import Gate, Viewer
from bot.console.actions import ConsoleActions
from bot.core.clock import Clock
from bot.notify.links import LinkPolicy
from bot.playbook.registry import PlaybookSet
from bot.settings import ConsoleSettings
from bot.store.base import Store
from bot.upstream.prometheus import PrometheusClient

# The pages load their own stylesheet and script and nothing else: an injected tag
# could neither run a script nor send a form elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_SAID = "console:said:"
_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")


def mrkdwn(text: str) -> Markup:
    """Slack's ``*bold*`` and ``code`` of a narrative, as HTML: the text is escaped
    first, and only those two fixed tags are put around what was already escaped."""
    html = str(escape(text))
    html = _CODE.sub(r"<code>\1</code>", html)
    return Markup(_BOLD.sub(r"<strong>\1</strong>", html))  # noqa: S704 - escaped above


def templates() -> jinja2.Environment:
    """Every template escapes what it prints; an undefined name is an error, not ""."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bot.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["mrkdwn"] = mrkdwn
    return env


@dataclass
class Console:
    settings: ConsoleSettings
    store: Store
    clock: Clock
    gate: Gate
    actions: ConsoleActions
    links: LinkPolicy
    playbooks: Callable[[], PlaybookSet | None]
    prometheus: Callable[[], PrometheusClient]
    prometheus_urls: list[str]  # where an alert's expression may come from to be graphed
    env: jinja2.Environment

    def page(
        self,
        name: str,
        viewer: Viewer | None,
        *,
        status: int = 200,
        **context: Any,
    ) -> web.Response:
        body = self.env.get_template(name).render(
            viewer=viewer, refresh=int(self.settings.refresh_every), **context
        )
        return web.Response(
            text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS
        )

    async def say(self, viewer: Viewer, text: str) -> str:
        """Keep what an action told ``viewer`` for the page they are sent to next; the
        id that page reads it by."""
        said = secrets.token_urlsafe(12)
        value = json.dumps({"user": viewer.name, "text": text})
        await self.store.kv_set(_SAID + said, value, now=self.clock.now(), ttl=300.0)
        return said

    async def said(self, viewer: Viewer, said: str | None) -> str | None:
        """What an action told ``viewer``, by the id ``say`` gave (nobody else's)."""
        if not said or len(said) > 40:
            return None
        raw = await self.store.kv_get(_SAID + said, self.clock.now())
        if raw is None:
            return None
        held = json.loads(raw)
        return str(held["text"]) if held.get("user") == viewer.name else None


def see_other(location: str) -> web.Response:
    """A 303 to a console path (the next GET after a form)."""
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


CONSOLE = web.AppKey("console", Console)
