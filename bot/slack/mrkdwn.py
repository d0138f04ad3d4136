"""Slack mrkdwn, safely: every string that came from an alert is escaped before it is sent.

Slack reads ``<...>`` as a control sequence: ``<!channel>``, ``<!here>``, ``<@U123>``,
``<!subteam^S1>`` ping people and ``<http://evil|click>`` hides a link behind text.
Escaping ``&``, ``<`` and ``>`` (Slack's own rule) turns all of them into plain text.
Only this module builds control sequences, and only from values it checks itself.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_SPECIAL = re.compile(r"[&<>]")
_SLACK_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_URL_UNSAFE = re.compile(r"[\s<>|\"'`\x00-\x1f\x7f]")


def escape(text: object) -> str:
    """Text for a mrkdwn field: no mention, link or command can survive it."""
    return _SPECIAL.sub(lambda m: _ESCAPES[m.group(0)], str(text))


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def code(text: object, limit: int = 500) -> str:
    """An inline code span; backticks inside would end it, so they become quotes."""
    return "`" + escape(clip(str(text), limit)).replace("`", "'") + "`"


def safe_url(url: str) -> str | None:
    """An http(s) URL fit for ``<url|text>``, or None when it is not one."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    cleaned = _URL_UNSAFE.sub(lambda m: quote(m.group(0), safe=""), url.strip())
    return cleaned.replace("&", "&amp;")


def link(url: str | None, text: str) -> str:
    """``<url|text>`` for a safe URL; the escaped text alone otherwise."""
    target = safe_url(url) if url else None
    label = escape(text).replace("|", "¦")
    return f"<{target}|{label}>" if target else label


def mention(target: str) -> str:
    """A mention we were configured to make (``here``, ``channel``, U…, S…)."""
    if target in ("here", "channel"):
        return f"<!{target}>"
    if not _SLACK_ID.match(target):
        raise ValueError(f"not a Slack user or user group id: {target!r}")
    return f"<!subteam^{target}>" if target.startswith("S") else f"<@{target}>"


def date(epoch: float, fallback: str) -> str:
    """A date Slack shows in each reader's time zone."""
    return f"<!date^{int(epoch)}^{{date_short_pretty}} {{time}}|{escape(fallback)}>"
