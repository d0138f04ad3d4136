"""The incident console at ``/ui/``: the incident list, each incident's whole story and
its buttons, and what each playbook has done, as server-rendered HTML.

Off without a ``console`` section: every ``/ui`` path answers 404, like the API
without its token. On, every page needs someone signed in (``bot.console.access``), and
what they do goes through the same actions and rules as Slack's buttons
(``bot.console.actions``), recorded with their name. Templates escape everything they
print, and the pages' Content-Security-Policy allows only the console's own stylesheet
and script, so an alert's hostile label stays text.

``setup(app)`` registers the routes (and the three form paths with the guard).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from bot import keys
from bot.console import forms, pages
from bot.console.access import Gate
from bot.console.actions import ConsoleActions
from bot.console.state import CONSOLE, SECURITY_HEADERS, Console, templates
from bot.notify.links import LinkPolicy
from bot.server.routes import guarded
from bot.slack.silence_menu import Silencer

STATIC = Path(__file__).parent / "static"
ASSETS = {"console.css": "text/css", "console.js": "text/javascript"}


def setup(app: web.Application) -> None:
    settings = app[keys.SETTINGS]
    if settings.console is None:
        _off(app)
        return
    store, clock = app[keys.STORE], app[keys.CLOCK]
    silencer = Silencer(
        store,
        lambda: app[keys.ALERTMANAGER],
        clock,
        app[keys.SILENCES],
        max_silence=settings.console.max_silence,
    )
    app[CONSOLE] = Console(
        settings=settings.console,
        store=store,
        clock=clock,
        gate=Gate(settings, store, clock),
        actions=ConsoleActions(
            settings.console,
            store,
            clock,
            app[keys.ACTIONS],
            silencer,
            remediation=lambda: app.get(keys.REMEDIATION),
        ),
        links=LinkPolicy.from_settings(settings),
        playbooks=lambda: app.get(keys.PLAYBOOKS),
        prometheus=lambda: app[keys.PROMETHEUS],
        prometheus_urls=settings.prometheus.bases,
        env=templates(),
    )
    router = app.router
    router.add_get("/ui/", guarded(pages.incidents))
    router.add_get("/ui/incidents/{id}", guarded(pages.incident))
    router.add_get("/ui/incidents/{id}/graph.png", guarded(pages.graph))
    router.add_get("/ui/playbooks", guarded(pages.playbooks))
    router.add_get("/ui/signin", guarded(pages.signin_form))
    for name in ASSETS:
        router.add_get(f"/ui/static/{name}", guarded(_asset))
    router.add_post("/ui/signin", guarded(forms.signin))
    router.add_post("/ui/signout", guarded(forms.signout))
    router.add_post("/ui/action", guarded(forms.action))
    app[keys.GUARD].not_json.update(forms.PATHS)  # forms, checked for CSRF instead


async def _asset(request: web.Request) -> web.Response:
    """The stylesheet or the script: open like the sign-in form, they hold nothing."""
    name = request.path.rpartition("/")[2]
    kind = ASSETS[name]
    headers = {**SECURITY_HEADERS, "Cache-Control": "max-age=300"}
    return web.Response(body=(STATIC / name).read_bytes(), content_type=kind, headers=headers)


def _off(app: web.Application) -> None:
    """Every ``/ui`` path: a 404 that says the console is off and how to turn it on."""

    async def off(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "error": "not_configured",
                "message": "the console is off: add a 'console' section to the config "
                "(users with tokens, or trusted_proxies; see the README)",
            },
            status=404,
        )

    app.router.add_route("*", "/ui", guarded(off))
    app.router.add_route("*", "/ui/{tail:.*}", guarded(off))
    app[keys.GUARD].not_json.update(forms.PATHS)  # whatever it is sent, the answer is the same
