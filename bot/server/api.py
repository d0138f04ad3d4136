"""Operating surface and incident API: health, readiness, metrics, incidents as JSON."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot import keys
from bot.core.incidents import Status
from bot.diagnostics.summary import tally
from bot.errors import NotConfigured, PayloadError, StoreError
from bot.records.diagnostics import diagnostics_of
from bot.records.narrative import narrative_of
from bot.server.auth import check_credentials


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store takes a write and both workers run. ``store`` says which
    store this replica uses (``sqlite`` or ``postgresql``) and whether it is writable."""
    app = request.app
    checks: dict[str, str] = {}
    store = app[keys.STORE]
    try:
        await store.ping()
        checks["store"] = "ok"
    except StoreError as exc:
        checks["store"] = f"failing: {exc}"
    checks["inbox_worker"] = "ok" if app[keys.INBOX].alive else "stopped"
    checks["job_runner"] = "ok" if app[keys.RUNNER].alive else "stopped"
    ready = all(value == "ok" for value in checks.values())
    app[keys.METRICS].ready.set(1 if ready else 0)
    return web.json_response(
        {
            "status": "ready" if ready else "not ready",
            "checks": checks,
            "store": {"backend": store.backend, "writable": checks["store"] == "ok"},
        },
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    registry = app[keys.METRICS]
    store = app[keys.STORE]
    workers_alive = app[keys.INBOX].alive and app[keys.RUNNER].alive
    try:
        registry.observe_stats(await store.stats(), app[keys.CLOCK].now())
    except StoreError:
        registry.store_errors.labels("stats").inc()
    try:
        await store.ping()  # as /readyz: reads still work while commits fail (locked, full)
        writable = True
    except StoreError:
        writable = False
    registry.ready.set(1 if writable and workers_alive else 0)
    body = generate_latest(registry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def require_api_token(request: web.Request) -> None:
    """The API needs ``server.api_token``: without one it is off, not open (a browser
    on the on-call's machine can reach a server on loopback)."""
    token = request.app[keys.SETTINGS].server.api_token
    if token is None:
        raise NotConfigured("the API is off: set server.api_token to turn it on")
    check_credentials(request, token=token)


def _int_param(request: web.Request, name: str, default: int, upper: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or not 0 <= int(raw) <= upper:
        raise PayloadError(
            f"query parameter {name} must be an integer 0..{upper}", code="bad_query"
        )
    return int(raw)


async def list_incidents(request: web.Request) -> web.Response:
    require_api_token(request)
    raw_status = request.query.get("status")
    try:
        status = Status(raw_status) if raw_status else None
    except ValueError:
        allowed = ", ".join(s.value for s in Status)
        raise PayloadError(f"status must be one of {allowed}", code="bad_query") from None
    incidents = await request.app[keys.STORE].list_incidents(
        status=status,
        limit=_int_param(request, "limit", 50, 500),
        offset=_int_param(request, "offset", 0, 10**9),
    )
    return web.json_response(
        {"incidents": [incident.to_json(with_timeline=False) for incident in incidents]}
    )


async def get_incident(request: web.Request) -> web.Response:
    require_api_token(request)
    raw = request.match_info["incident_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise PayloadError("incident id must be a number", code="bad_id")
    incident = await request.app[keys.STORE].get_incident(int(raw))
    out = incident.to_json()
    results = diagnostics_of(incident)
    if results is not None:  # passed, failed and not checked, counted apart
        out["diagnostics"] = {"summary": tally(results).line(), "results": results}
    narrative = narrative_of(incident)
    if narrative is not None:  # with, for an LLM's, the facts behind each sentence
        out["narrative"] = narrative.dump()
    return web.json_response(out)
