"""``POST /slack/events``: slash commands and interactivity, verified before anything runs.

The signature (HMAC-SHA256 of ``v0:{timestamp}:{body}`` with the signing secret) and
the timestamp (at most 5 minutes off the app's clock, so a captured request cannot be
replayed) are checked first; a request that fails gets 401 and nothing else happens.
Then the form is parsed here (400 for a malformed button payload, 404 for a kind of
request nothing listens for) and slack-bolt dispatches it to the command and button
listeners.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bot import keys
from bot.errors import AuthError, NotFound, PayloadError, RequestRefused
from bot.server import jsonbody

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # Slack's payloads are small; anything this big is not from Slack
# payload fields slack-bolt reads as "an object, a string or null" before any listener runs
_REFERENCES = ("user", "channel", "team", "enterprise", "container", "message", "view")


async def slack_events(request: web.Request) -> web.StreamResponse:
    state = request.app[keys.SLACK]
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY, request.content_length)
    try:
        async with asyncio.timeout(request.app[keys.SETTINGS].server.body_timeout):
            body = await _read_body(request)
    except TimeoutError:
        raise RequestRefused(408, "request_timeout", "the body did not arrive in time") from None
    timestamp = request.headers.get("X-Slack-Request-Timestamp")
    signature = request.headers.get("X-Slack-Signature")
    if not timestamp or not signature:
        raise AuthError("missing X-Slack-Signature or X-Slack-Request-Timestamp")
    if not _verified(state.verifier, body, timestamp, signature):
        log.warning("slack request rejected: bad signature or stale timestamp")
        raise AuthError("bad Slack signature or stale timestamp")
    assert state.bolt is not None
    bolt_request = AsyncBoltRequest(
        body=_parse(body.decode("utf-8")),
        query=request.query_string,
        headers={k: v for k, v in request.headers.items()},
        # bolt takes an already parsed body only in this mode; the one other thing the
        # mode changes is bolt's own signature check, which is off (ours ran above)
        mode="socket_mode",
    )
    response = await state.bolt.async_dispatch(bolt_request)
    return await to_aiohttp_response(response)


async def _read_body(request: web.Request) -> bytes:
    """The whole body (``read(n)`` returns only what has arrived so far), at most MAX_BODY."""
    body = bytearray()
    while chunk := await request.content.read(MAX_BODY + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY, len(body))
    return bytes(body)


def _verified(verifier: SignatureVerifier, body: bytes, timestamp: str, signature: str) -> bool:
    """The verifier raises on a non-UTF-8 body, a non-ASCII signature (``compare_digest``
    of ``str``s) and digits ``int()`` refuses ("²".isdigit() is true, and past 4,300
    digits ``int()`` raises): refuse those first. A Unix time has at most 11 digits."""
    if (
        not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 11)
        or not signature.isascii()
    ):
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return verifier.is_valid(body, timestamp, signature)


def _parse(text: str) -> dict[str, Any]:
    """The form Slack posts: a slash command's fields, or a button press as ``payload``.

    Parsed here, not by bolt: its parser takes any body containing the word "payload"
    (in a command's text, a user's or a channel's name) for a button press and drops the
    command, and it trusts the payload's shape, so a signed ``"actions": null`` made it
    answer 500. Button presses (``block_actions``) are the only payloads listened for.
    """
    form = dict(parse_qsl(text, keep_blank_values=True))
    if "payload" not in form:
        return form
    try:
        payload = jsonbody.loads(form["payload"])
    except (ValueError, RecursionError):
        raise PayloadError("the payload field is not JSON") from None
    if not isinstance(payload, dict):
        raise PayloadError("the payload field is not a JSON object")
    if payload.get("type") != "block_actions":
        raise NotFound("no listener for this kind of Slack request")
    actions = payload.get("actions")
    if not (
        isinstance(actions, list)
        and actions
        and all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions)
    ):
        raise PayloadError("a block_actions payload needs actions with an action_id")
    for key in _REFERENCES:
        if not isinstance(payload.get(key), dict | str | None):
            raise PayloadError(f"payload field {key!r} must be an object or a string")
    authorizations = payload.get("authorizations")
    if authorizations is not None and not (
        isinstance(authorizations, list) and all(isinstance(a, dict) for a in authorizations)
    ):
        raise PayloadError("payload field 'authorizations' must be a list of objects")
    return payload
