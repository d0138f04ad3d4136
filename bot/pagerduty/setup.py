"""The PagerDuty feature's wiring: ``setup(app)`` and its two HTTP endpoints.

    POST /pagerduty        Webhooks v3 (signed); 401 before parsing when the signature fails
    GET  /api/v1/oncall    who is on call (``?schedule=ID``), behind ``server.api_token``

``create_app`` calls ``setup`` when the ``pagerduty`` section is present.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from bot import keys
from bot.errors import AuthError, NotFound, PayloadError
from bot.notify.links import LinkPolicy
from bot.pagerduty.feature import build
from bot.pagerduty.oncall import OnCallUnavailable
from bot.pagerduty.webhooks import SIGNATURE_HEADER, parse_webhook, verify_signature
from bot.server.api import require_api_token
from bot.server.connections import read_body
from bot.server.routes import guarded

log = logging.getLogger(__name__)

_SCHEDULE_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")


def _pipeline_registered(app: web.Application) -> bool:
    """Whether a pipeline will record ``playbook.matched`` (then escalation waits for it)."""
    return keys.PIPELINE in app or "pipeline" in app[keys.HANDLERS].kinds


def setup(app: web.Application) -> None:
    settings = app[keys.SETTINGS].pagerduty
    if settings is None:
        raise ValueError("paging.setup needs the pagerduty section")
    feature = build(
        settings,
        store=app[keys.STORE],
        clock=app[keys.CLOCK],
        actions=app[keys.ACTIONS],
        registry=app[keys.METRICS].registry,
        http=lambda: app[keys.HTTP],
        alertmanager=lambda: app[keys.ALERTMANAGER],
        playbooks=lambda: app.get(keys.PLAYBOOKS),
        pipeline_registered=lambda: _pipeline_registered(app),
        silences=app[keys.SILENCES],
        links=LinkPolicy.from_settings(app[keys.SETTINGS]),
    )
    feature.register(app[keys.HANDLERS])
    app[keys.PAGERDUTY] = feature
    if feature.oncall is not None:
        app[keys.ONCALL] = feature.oncall
    if settings.webhook_secret is None:
        log.warning("pagerduty.webhook_secret is not set: POST /pagerduty refuses every request")
    app.router.add_post("/pagerduty", guarded(pagerduty_webhook))
    app.router.add_get("/api/v1/oncall", guarded(oncall_endpoint))


async def pagerduty_webhook(request: web.Request) -> web.Response:
    feature = request.app[keys.PAGERDUTY]
    secret = feature.settings.webhook_secret
    body = await read_body(request, request.app[keys.SETTINGS].server.body_timeout)
    if secret is None:
        raise AuthError("PagerDuty webhooks need pagerduty.webhook_secret")
    if not verify_signature(body, request.headers.get(SIGNATURE_HEADER), secret.get_secret_value()):
        raise AuthError(f"missing or wrong {SIGNATURE_HEADER}")
    event = parse_webhook(body)
    outcome = await feature.webhooks.handle(event)
    request.app[keys.METRICS].webhooks.labels("pagerduty", "accepted").inc()
    return web.json_response({"status": outcome, "event": event.id})


async def oncall_endpoint(request: web.Request) -> web.Response:
    require_api_token(request)
    directory = request.app.get(keys.ONCALL)
    if directory is None:
        raise NotFound("who is on call needs pagerduty.api_token")
    schedule = request.query.get("schedule") or None
    if schedule is not None and not _SCHEDULE_ID.match(schedule):
        raise PayloadError("schedule must be a PagerDuty schedule id", code="bad_query")
    try:
        entries = await directory.oncall(schedule)
    except OnCallUnavailable as exc:
        return web.json_response(
            {"error": "pagerduty_unavailable", "message": str(exc)}, status=502
        )
    return web.json_response(
        {"schedule": schedule, "oncalls": [entry.to_json() for entry in entries]}
    )
