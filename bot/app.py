"""The aiohttp application factory: routes (each ``guarded``: ``bot.server.routes``) and
every resource's lifetime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bot import console, keys, narrative, pipeline, remediation
from bot.core.clock import Clock, SystemClock
from bot.core.durations import format_duration
from bot.core.transitions import IncidentActions
from bot.errors import StoreError
from bot.notify.log import LogNotifier
from bot.pagerduty import setup as paging
from bot.runtime.jobs import JobHandlers, Lane
from bot.runtime.load import IngestLoad
from bot.runtime.loop import AckFirstLoop, background
from bot.runtime.metrics import Metrics
from bot.runtime.worker import InboxProcessor, JobRunner
from bot.server import api
from bot.server.connections import Connections
from bot.server.exposure import Guard
from bot.server.ingest import alertmanager_webhook
from bot.server.routes import check_guarded, error, guarded
from bot.settings import Settings
from bot.silences.service import SilenceService
from bot.slack import setup as slack_feature
from bot.store.base import Store
from bot.store.factory import build_store
from bot.targets import ResponseTargets, TargetMetrics
from bot.upstream.alertmanager import AlertmanagerClient
from bot.upstream.breaker import Breakers
from bot.upstream.prometheus import PrometheusClient

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    clock = clock or SystemClock()
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    metrics = Metrics()
    handlers = JobHandlers()
    store = build_store(
        settings.store,
        subscribers=handlers.subscribers,  # features subscribe to events until the start
        clock=clock.now,
    )
    app[keys.SETTINGS] = settings
    app[keys.GUARD] = Guard(settings)
    app[keys.CONNECTIONS] = Connections(settings.server.max_connections, metrics)
    app[keys.CLOCK] = clock
    app[keys.METRICS] = metrics
    app[keys.HANDLERS] = handlers
    app[keys.STORE] = store
    app[keys.ACTIONS] = IncidentActions(store, clock)
    app[keys.SILENCES] = SilenceService(store, clock, lambda: app.get(keys.ALERTMANAGER))
    load = app[keys.LOAD] = IngestLoad(clock.monotonic, rate=settings.workers.flood_rate)
    app[keys.INBOX] = InboxProcessor(
        store,
        store.inbox_signal,
        settings.incidents,
        metrics,
        clock,
        settings.workers.poll_interval,
        load=load,
    )
    app[keys.RUNNER] = JobRunner(
        store, store.job_signal, handlers, settings.workers, metrics, clock, load=load
    )

    if settings.slack is None:
        handlers.register(LogNotifier.kind, LogNotifier(store), subscribe=True, lane=Lane.NOTIFY)
    app[keys.SILENCES].register(handlers)
    ResponseTargets(  # acknowledgement and resolution targets: core, whatever notifies
        store,
        clock,
        settings.response,
        TargetMetrics(metrics.registry),
        playbooks=lambda: app.get(keys.PLAYBOOKS),
    ).register(handlers)

    app.router.add_post("/alertmanager", guarded(alertmanager_webhook(app)))
    app.router.add_get("/healthz", guarded(api.healthz))
    app.router.add_get("/readyz", guarded(api.readyz))
    app.router.add_get("/metrics", guarded(api.metrics))
    app.router.add_get("/api/v1/incidents", guarded(api.list_incidents))
    app.router.add_get("/api/v1/incidents/{incident_id}", guarded(api.get_incident))
    # The store first: a store that cannot open (a database out of reach) stops the start
    # before anything else is opened, and it closes last.
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_http_ctx)
    # Features add their routes, job handlers and resources here, before the workers start.
    pipeline.setup(app)
    remediation.setup(app)
    narrative.setup(app)
    if settings.pagerduty is not None:
        paging.setup(app)
    else:
        _not_configured(app, "PagerDuty", "pagerduty", ["/pagerduty"], ["/api/v1/oncall"])
    if settings.slack is not None:
        slack_feature.setup(app)
    else:
        _not_configured(app, "Slack", "slack", ["/slack/events"], [])
    console.setup(app)  # off (404) without a console section
    app.cleanup_ctx.append(_workers_ctx)
    check_guarded(app)
    return app


def _not_configured(
    app: web.Application, feature: str, section: str, posts: list[str], gets: list[str]
) -> None:
    """A feature that is off answers its endpoints with a 404 that says so and how to turn
    it on, rather than a bare "Not Found" that reads like a wrong URL."""

    async def off(request: web.Request) -> web.Response:
        return error(
            404,
            "not_configured",
            f"{feature} is off: {request.path} answers once the config has a '{section}'"
            " section (see the README)",
        )

    for path in posts:
        app.router.add_post(path, guarded(off))
        app[keys.GUARD].not_json.add(path)  # whatever it is sent, the answer is the same
    for path in gets:
        app.router.add_get(path, guarded(off))


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    session = aiohttp.ClientSession(
        headers={"User-Agent": "alertpilot"}, raise_for_status=False, trust_env=False
    )
    app[keys.HTTP] = session
    diagnostics, metrics = settings.diagnostics, app[keys.METRICS]
    breakers = app[keys.BREAKERS] = Breakers(
        errors=diagnostics.breaker_errors,
        window=diagnostics.breaker_window,
        cooldown=diagnostics.breaker_cooldown,
        monotonic=app[keys.CLOCK].monotonic,
        on_change=lambda upstream, is_open: metrics.breaker_open.labels(upstream).set(
            1 if is_open else 0
        ),
    )
    prom = settings.prometheus
    app[keys.PROMETHEUS] = PrometheusClient(
        session,
        prom.url,
        timeout=prom.timeout,
        retries=prom.retries,
        bearer_token=prom.bearer_token.get_secret_value() if prom.bearer_token else None,
        breaker=breakers.get(prom.url, "Prometheus"),
    )
    app[keys.ALERTMANAGER] = AlertmanagerClient(
        session,
        settings.alertmanager.url,
        timeout=settings.alertmanager.timeout,
        breaker=breakers.get(settings.alertmanager.url, "Alertmanager"),
        ui_url=settings.alertmanager.external_url,
    )
    yield
    await session.close()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[keys.STORE]
    await store.open()
    yield
    await store.close()


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    released = await app[keys.STORE].release_running_jobs()
    if released:
        log.warning("resuming %d job(s) interrupted by the last shutdown", released)
    moved = await app[keys.STORE].route_jobs()
    if moved:
        log.info("%d waiting job(s) filed under their lane", moved)
    loop = asyncio.get_running_loop()
    if isinstance(loop, AckFirstLoop):  # `serve`: background work gives way to requests
        loop.requests = app[keys.CONNECTIONS].serving
    inbox, runner = app[keys.INBOX], app[keys.RUNNER]
    inbox.start()
    runner.start()
    retention = app[keys.SETTINGS].store.retention
    pruner = background(_prune(app[keys.STORE], app[keys.CLOCK], retention), name="prune")
    yield
    log.info("draining workers")
    pruner.cancel()
    await asyncio.gather(pruner, return_exceptions=True)
    await inbox.stop()
    await runner.stop()


async def _prune(store: Store, clock: Clock, retention: float, every: float = 3600.0) -> None:
    """Delete what ``store.retention`` says is old: at startup, then every hour (or every
    ``retention``, if that is shorter). Without it the inbox's file grows by every
    payload received, repeats included, for as long as the server runs."""
    every = min(every, retention)
    while True:
        try:
            gone = await store.prune(clock.now() - retention)
        except StoreError as exc:
            log.warning("store: pruning failed, will retry: %s", exc)
        else:
            if gone:
                log.info("store: pruned %d rows older than %s", gone, format_duration(retention))
        await asyncio.sleep(every)
