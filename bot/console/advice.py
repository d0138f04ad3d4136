"""What ``serve`` and ``check`` warn about in a console's settings: set-ups that work,
but not as safely or as usefully as people would expect."""

from __future__ import annotations

from bot.server.exposure import is_loopback
from bot.settings import Settings


def console_warnings(settings: Settings) -> list[str]:
    console, server = settings.console, settings.server
    if console is None:
        return []
    out = []
    https = (server.public_url or "").lower().startswith("https://")
    if console.users and not https and not is_loopback(server.host):
        out.append(
            f"console: people sign in over {server.listen} without TLS: tokens and session "
            "cookies cross the network in clear (serve it behind a TLS proxy and set "
            "server.public_url to its https URL)"
        )
    if not server.public_url:
        out.append(
            "console: server.public_url is not set: Slack messages and PagerDuty events do "
            "not link to the incidents' pages"
        )
    names = {user.name for user in console.users}
    strangers = [name for name in console.approvers if name not in names]
    if strangers and not console.trusted_proxies:
        out.append(
            f"console.approvers names {', '.join(strangers)}, who cannot sign in (not in "
            "console.users, and no trusted_proxies)"
        )
    return out
