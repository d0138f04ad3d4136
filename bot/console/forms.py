"""The console's forms: sign in, sign out, and the actions on an incident.

Each is a urlencoded POST to a fixed path (the Host/Origin guard lets these three take
a form; ``bot.server.exposure``), checked for its CSRF token before anything else is
read from it. An action answers with a redirect to the incident's page, which shows
what was done (Post/Redirect/Get: reloading the page does not do it again).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import parse_qsl

from aiohttp import web

from bot import keys
from bot.console.access import Viewer, same
from bot.console.pages import incident_id, outsider, safe_next, signin_page
from bot.console.state import CONSOLE, Console, see_other
from bot.core.incidents import TransitionError
from bot.errors import NotFound, PayloadError
from bot.server.connections import read_body

log = logging.getLogger(__name__)

MAX_FORM = 16 * 1024
PATHS = ("/ui/signin", "/ui/signout", "/ui/action")


async def form(request: web.Request) -> dict[str, str]:
    """The urlencoded body's fields (the last of a repeated one)."""
    kind = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise web.HTTPUnsupportedMediaType(text="a form is sent urlencoded")
    declared = request.content_length or 0
    if declared > MAX_FORM:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM, actual_size=declared)
    raw = await read_body(request, request.app[keys.SETTINGS].server.body_timeout)
    if len(raw) > MAX_FORM:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM, actual_size=len(raw))
    try:
        return dict(parse_qsl(raw.decode(), keep_blank_values=True, max_num_fields=20))
    except (UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(text="the form could not be read") from None


def forged(console: Console) -> web.Response:
    return console.page(
        "message.html",
        None,
        status=403,
        title="This form has expired",
        text="Go back, reload the page and try again.",
    )


async def signin(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    if not console.settings.users:
        return outsider(request, console)
    fields = await form(request)
    target = fields.get("next")
    if not console.gate.signin_checked(request, fields.get("csrf", "")):
        return forged(console)
    if not await console.gate.allow_attempt(request):
        log.warning("console: sign-in attempts from %s over the limit", request.remote)
        return signin_page(
            request, console, target, error="Too many attempts: wait a minute.", status=429
        )
    name = console.gate.user_of(fields.get("token", ""))
    if name is None:
        log.warning("console: sign-in refused from %s: unknown token", request.remote)
        return signin_page(request, console, target, error="That token is not known.", status=401)
    response = see_other(safe_next(target))
    await console.gate.open_session(name, response)
    log.info("console: %s signed in from %s", name, request.remote)
    return response


async def signed_form(
    request: web.Request,
) -> tuple[Console, Viewer, dict[str, str]] | web.StreamResponse:
    """The form a signed-in person sent, its CSRF token checked; or, when there is no
    such person or the token is not theirs, the answer to give instead."""
    console = request.app[CONSOLE]
    viewer = await console.gate.viewer(request)
    if viewer is None:
        return outsider(request, console)
    fields = await form(request)
    if not same(fields.get("csrf", ""), viewer.csrf):
        return forged(console)
    return console, viewer, fields


async def signout(request: web.Request) -> web.StreamResponse:
    checked = await signed_form(request)
    if isinstance(checked, web.StreamResponse):
        return checked
    console, _, _ = checked
    response = see_other("/ui/signin" if console.settings.users else "/ui/")
    await console.gate.close_session(request, response)
    return response


async def action(request: web.Request) -> web.StreamResponse:
    checked = await signed_form(request)
    if isinstance(checked, web.StreamResponse):
        return checked
    console, viewer, fields = checked
    try:
        number = incident_id(fields.get("incident", ""))
        told = await _act(console, viewer, number, fields)
    except NotFound:
        return console.page(
            "message.html", viewer, status=404, title="No such incident", text="Nothing was done."
        )
    except (TransitionError, PayloadError) as exc:
        told = str(exc)
    said = await console.say(viewer, told)
    return see_other(f"/ui/incidents/{number}?said={said}")


async def _act(console: Console, viewer: Viewer, number: int, fields: Mapping[str, str]) -> str:
    actions, who = console.actions, viewer.name
    match fields.get("do"):
        case "acknowledge":
            return await actions.acknowledge(number, who)
        case "resolve":
            return await actions.resolve(number, who)
        case "silence":
            return await actions.silence(number, fields.get("length", ""), who)
        case "approve" | "reject" as verb:
            step = fields.get("step", "")
            if not step or len(step) > 200:
                raise PayloadError("which step?")
            return await actions.decide(number, step, approve=verb == "approve", actor=who)
    raise PayloadError("the console does not know that action")
