"""The console's pages: the incident list, an incident, the playbooks, sign-in.

Each page first asks who is looking (``bot.console.access``); nobody signed in gets 401
with the sign-in form, which comes back to the page asked for (or, with only an auth
proxy configured, a page saying to come through it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.console import present
from bot.console.access import Viewer
from bot.console.actions import silence_choices
from bot.console.filters import RANGES, Filters
from bot.console.graph import incident_graph, may_have_graph
from bot.console.playbooks import playbook_rows
from bot.console.state import CONSOLE, SECURITY_HEADERS, Console
from bot.core.incidents import Status
from bot.errors import NotFound
from bot.settings import Severity

Page = Callable[[web.Request, Console, Viewer], Awaitable[web.StreamResponse]]


def signed_in(page: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The page for whoever is signed in; the way in for anyone else."""

    async def handler(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE]
        viewer = await console.gate.viewer(request)
        if viewer is None:
            return outsider(request, console)
        return await page(request, console, viewer)

    return handler


def outsider(request: web.Request, console: Console) -> web.Response:
    """401 for nobody signed in: the sign-in form, or where to come from instead."""
    if console.settings.users:
        target = request.rel_url.path_qs if request.method == "GET" else "/ui/"
        return signin_page(request, console, target, error="", status=401)
    return console.page(
        "message.html",
        None,
        status=401,
        title="Sign in through your proxy",
        text="This console takes people signed in by the auth proxy in front of it.",
    )


def incident_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise NotFound("no such incident")
    return int(raw)


@signed_in
async def incidents(request: web.Request, console: Console, viewer: Viewer) -> web.Response:
    filters = Filters.parse(request.query)
    now = console.clock.now()
    size = console.settings.page_size
    found = await console.store.search_incidents(filters.query(now, size))
    return console.page(
        "list.html",
        viewer,
        live=True,
        filters=filters,
        rows=[present.row(incident, now) for incident in found[:size]],
        more=len(found) > size,
        statuses=[s.value for s in Status],
        severities=[s.value for s in Severity],
        ranges=[(key, label) for key, (label, _) in RANGES.items()],
    )


@signed_in
async def incident(request: web.Request, console: Console, viewer: Viewer) -> web.Response:
    try:
        found = await console.store.get_incident(incident_id(request.match_info["id"]))
    except NotFound:
        return console.page(
            "message.html",
            viewer,
            status=404,
            title="No such incident",
            text="It may have been pruned, or the link is wrong.",
        )
    now = console.clock.now()
    summary, diagnostics = present.diagnostics(found)
    return console.page(
        "incident.html",
        viewer,
        live=True,
        incident=found,
        row=present.row(found, now),
        said=await console.said(viewer, request.query.get("said")),
        outside=present.outside_links(found),
        alerts=present.alerts(found, console.links),
        diagnostics=diagnostics,
        diagnostics_summary=summary,
        narrative=present.narrative(found),
        steps=present.steps(found, now),
        silences=present.silences(found),
        timeline=present.timeline(found.timeline),
        can_act=present.can_act(found),
        graph=may_have_graph(found, console.playbooks(), console.prometheus_urls),
        can_approve=viewer.name in console.settings.approvers,
        silence_choices=silence_choices(console.settings),
        utc=present.utc,
    )


@signed_in
async def graph(request: web.Request, console: Console, viewer: Viewer) -> web.Response:
    """The incident's graph of the last hour as a PNG, or a line of text saying why not."""
    headers = {**SECURITY_HEADERS, "Cache-Control": "private, max-age=60"}
    try:
        found = await console.store.get_incident(
            incident_id(request.match_info["id"]), timeline=False
        )
    except NotFound:
        return web.Response(status=404, text="no such incident", headers=headers)
    drawn = await incident_graph(
        found,
        console.playbooks(),
        console.prometheus(),
        console.prometheus_urls,
        now=console.clock.now(),
    )
    if drawn.graph is None:
        return web.Response(status=drawn.status, text=drawn.reason, headers=headers)
    return web.Response(body=drawn.graph.png, content_type="image/png", headers=headers)


@signed_in
async def playbooks(request: web.Request, console: Console, viewer: Viewer) -> web.Response:
    now = console.clock.now()
    rows = await playbook_rows(console.store, console.playbooks(), now)
    return console.page("playbooks.html", viewer, rows=rows)


async def signin_form(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    if not console.settings.users:
        return outsider(request, console)
    return signin_page(request, console, request.query.get("next"), error="")


def signin_page(
    request: web.Request,
    console: Console,
    target: str | None,
    *,
    error: str,
    status: int = 200,
) -> web.Response:
    """The sign-in form, with its double-submit token (and the cookie, when new)."""
    token, fresh = console.gate.signin_token(request)
    response = console.page(
        "signin.html", None, status=status, csrf=token, next=safe_next(target), error=error
    )
    if fresh:
        console.gate.keep_signin_token(response, token)
    return response


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only, never another site."""
    fits = bool(target) and str(target).startswith("/ui/")
    if fits and target and "\\" not in target and all(c.isprintable() for c in target):
        return target
    return "/ui/"
