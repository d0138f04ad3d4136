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

from aiohttp import web

from bot import keys
from bot.core.alerts import parse_group
from bot.errors import PayloadError
from bot.server.auth import check_credentials
from bot.server.connections import read_body

log = logging.getLogger(__name__)


async def alertmanager_webhook(request: web.Request) -> web.Response:
    app = request.app
    settings, metrics = app[keys.SETTINGS], app[keys.METRICS]
    app[keys.LOAD].arrived()
    check_credentials(
        request, token=settings.server.webhook_token, basic=settings.server.webhook_basic_auth
    )
    body = await read_body(request, request.app[keys.SETTINGS].server.body_timeout)
    if not body:
        raise PayloadError("empty body: expected an Alertmanager webhook payload (JSON)")
    group = parse_group(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:  # parse_group accepted it, so this cannot happen; be explicit
        raise PayloadError("body is not UTF-8") from None
    inbox = app[keys.INBOX]
    repeat = inbox.known(group)
    inbox_id = await app[keys.STORE].enqueue_payload(
        "alertmanager", text, result="duplicate" if repeat else None
    )
    if repeat:
        metrics.duplicates.inc()
    else:
        inbox.remember(inbox_id, group)
    firing = sum(alert.status == "firing" for alert in group.alerts)
    metrics.ingested_firing.inc(firing)
    metrics.ingested_resolved.inc(len(group.alerts) - firing)
    metrics.webhook_accepted.inc()
    # Written out rather than json.dumps'd: this answers every webhook, and all of it is
    # integers and fixed words.
    return web.Response(
        text=f'{{"status": "accepted", "inbox_id": {inbox_id}, "alerts": {len(group.alerts)}, '
        f'"duplicate": {"true" if repeat else "false"}}}',
        content_type="application/json",
    )
