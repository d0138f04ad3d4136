"""Every route's handler behind the same door: ``guarded``.

A request a browser may have been made to send is refused (``bot.server.exposure``),
alertpilot's exceptions become HTTP answers, in one place, and the connection is marked
as serving a request while the handler runs (``bot.server.connections``).

Each handler is wrapped once, when its route is registered, and ``check_guarded`` (run at
the end of ``create_app``) refuses to build an app with a route that is not. This was an
aiohttp middleware; aiohttp runs a middleware through a chain it looks up for every
request, with a coroutine of its own around the handler (its part came to about 16,000
of the 450,000 instructions a webhook took, counted with callgrind).
A request that matches no route gets aiohttp's own 404 or 405, having reached nothing.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot import keys
from bot.core.incidents import TransitionError
from bot.errors import (
    AuthError,
    NotConfigured,
    NotFound,
    PayloadError,
    RequestRefused,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_GUARDED: weakref.WeakSet[Handler] = weakref.WeakSet()


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def _endpoint(request: web.Request) -> str:
    """The metrics label of a request's endpoint: the first part of its path."""
    return request.path.strip("/").split("/")[0] or "root"


def guarded(handler: Handler) -> Handler:
    """``handler`` behind the guard, with the exception tree mapped to HTTP status codes."""

    @functools.wraps(handler)
    async def guarded_handler(request: web.Request) -> web.StreamResponse:
        app = request.app
        connections, protocol = app[keys.CONNECTIONS], request.protocol
        serving = connections.serving
        serving.add(protocol)  # not one to close to make room (bot.server.connections)
        connections.used.add(protocol)
        try:
            app[keys.GUARD].check(request)
            return await handler(request)
        except RequestRefused as exc:
            app[keys.METRICS].webhooks.labels(_endpoint(request), "refused").inc()
            response = error(exc.status, exc.code, str(exc))
            if exc.status == 408:  # the rest of the body may still come: not on this connection
                response.force_close()
            return response
        except PayloadError as exc:
            app[keys.METRICS].webhooks.labels(_endpoint(request), "bad_request").inc()
            return error(400, exc.code, str(exc))
        except AuthError as exc:
            app[keys.METRICS].webhooks.labels(_endpoint(request), "unauthorized").inc()
            return error(
                401, "unauthorized", str(exc), **{"WWW-Authenticate": 'Bearer realm="alertpilot"'}
            )
        except NotConfigured as exc:
            return error(404, "not_configured", str(exc))
        except NotFound as exc:
            return error(404, "not_found", str(exc))
        except TransitionError as exc:
            return error(409, "conflict", str(exc))
        except StoreError as exc:
            metrics, endpoint = app[keys.METRICS], _endpoint(request)
            metrics.webhooks.labels(endpoint, "store_unavailable").inc()
            metrics.store_errors.labels(endpoint).inc()
            log.error("%s %s: store unavailable: %s", request.method, request.path, exc)
            status = 503 if isinstance(exc, StoreUnavailable) else 500
            return error(status, "store_unavailable", "the store cannot commit; retry later")
        except web.HTTPRequestEntityTooLarge as exc:
            app[keys.METRICS].webhooks.labels(_endpoint(request), "too_large").inc()
            return error(413, "payload_too_large", exc.text or "request body too large")
        finally:
            serving.discard(protocol)

    _GUARDED.add(guarded_handler)
    return guarded_handler


def check_guarded(app: web.Application) -> None:
    """Refuse an app with a route whose handler is not ``guarded``."""
    bare = sorted(
        f"{route.method} {route.resource.canonical if route.resource else '?'}"
        for route in app.router.routes()
        if route.handler not in _GUARDED
    )
    if bare:
        raise RuntimeError(f"routes registered without bot.server.routes.guarded: {bare}")
