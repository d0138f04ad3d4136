"""``POST /slack/events``: slash commands and interactivity, verified before anything runs.

The signature (HMAC-SHA256 of ``v0:{timestamp}:{body}`` with the signing secret) and
the timestamp (at most 5 minutes off the app's clock, so a captured request cannot be
replayed) are checked first; a request that fails gets 401 and nothing else happens.
Then slack-bolt dispatches it to the command and button listeners.
"""

from __future__ import annotations

import logging

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.request.async_request import AsyncBoltRequest

from bot import keys
from bot.errors import AuthError

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # Slack's payloads are small; anything this big is not from Slack


async def slack_events(request: web.Request) -> web.StreamResponse:
    state = request.app[keys.SLACK]
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY, request.content_length)
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY, len(body))
    timestamp = request.headers.get("X-Slack-Request-Timestamp")
    signature = request.headers.get("X-Slack-Signature")
    if not timestamp or not signature:
        raise AuthError("missing X-Slack-Signature or X-Slack-Request-Timestamp")
    if not timestamp.isdigit() or not state.verifier.is_valid(body, timestamp, signature):
        log.warning("slack request rejected: bad signature or stale timestamp")
        raise AuthError("bad Slack signature or stale timestamp")
    assert state.bolt is not None
    bolt_request = AsyncBoltRequest(
        body=body.decode("utf-8", "replace"),
        query=request.query_string,
        headers={k: v for k, v in request.headers.items()},
    )
    response = await state.bolt.async_dispatch(bolt_request)
    return await to_aiohttp_response(response)
