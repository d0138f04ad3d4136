"""``POST /alertmanager``: validate, commit to the inbox, ack. Nothing slow runs here.

200 only after the payload is committed; 400 names what is wrong with the body; 401
for missing or wrong credentials; 413 above ``server.max_body_bytes``; 503 when the
store cannot commit, so Alertmanager retries.

A delivery whose every alert state is already applied (the second of an HA pair, a
repeat_interval resend) is stored as a processed repeat at once: it is kept, counted and
answered like any other, but no worker ever reads it back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot import keys
from bot.core.alerts import parse_group
from bot.errors import PayloadError
from bot.server.auth import check_credentials
from bot.server.connections import read_body

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.Response]]


def alertmanager_webhook(app: web.Application) -> Handler:
    """The handler of ``app``'s webhook, with what it uses taken from the app once: this
    answers every webhook, and each lookup in the app is a call."""
    server, metrics = app[keys.SETTINGS].server, app[keys.METRICS]
    arrived, inbox, tally = app[keys.LOAD].arrived, app[keys.INBOX], metrics.tally
    enqueue = app[keys.STORE].enqueue_payload
    token, basic = server.webhook_token, server.webhook_basic_auth
    body_timeout = server.body_timeout

    async def webhook(request: web.Request) -> web.Response:
        arrived()
        check_credentials(request, token=token, basic=basic)
        body = await read_body(request, body_timeout)
        if not body:
            raise PayloadError("empty body: expected an Alertmanager webhook payload (JSON)")
        group = parse_group(body)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:  # parse_group accepted it, so this cannot happen
            raise PayloadError("body is not UTF-8") from None
        repeat = inbox.known(group)
        inbox_id = await enqueue("alertmanager", text, result="duplicate" if repeat else None)
        if repeat:
            tally.duplicates += 1
        else:
            inbox.remember(inbox_id, group)
        alerts = group.alerts
        firing = [alert.status for alert in alerts].count("firing")
        tally.firing += firing
        tally.resolved += len(alerts) - firing
        tally.accepted += 1
        # Written out rather than json.dumps'd: all of it is integers and fixed words.
        answer = (
            f'{{"status": "accepted", "inbox_id": {inbox_id}, "alerts": {len(alerts)}, '
            f'"duplicate": {"true" if repeat else "false"}}}'
        )
        return web.Response(body=answer.encode(), content_type="application/json", charset="utf-8")

    webhook.__name__ = webhook.__qualname__ = "alertmanager_webhook"
    return webhook
