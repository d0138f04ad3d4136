"""Wiring the narrative feature into the app: ``setup(app)`` from ``create_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bot import keys
from bot.narrative.api import post_narratives, rca_analyze
from bot.narrative.jobs import (
    EVENTS_OF_INTEREST,
    LLM_JOB,
    STORM_JOB,
    SUBSCRIBER,
    NarrativeJobs,
)
from bot.narrative.llm import LlmClient
from bot.narrative.metrics import NarrativeMetrics
from bot.narrative.narrator import Narrator
from bot.narrative.ratelimit import RateLimiter
from bot.runtime.jobs import Lane
from bot.server.routes import guarded


def setup(app: web.Application) -> None:
    settings, clock = app[keys.SETTINGS], app[keys.CLOCK]
    llm_settings = settings.llm
    llm = LlmClient(llm_settings) if llm_settings.provider == "openai" else None
    public = settings.server.public_url
    narrator = Narrator(
        llm_settings,
        app[keys.STORE],
        clock,
        NarrativeMetrics(app[keys.METRICS].registry),
        llm=llm,
        allowed_url_prefixes=[public] if public else [],
        secrets=settings.secret_values(),
    )
    app[keys.NARRATIVES] = narrator
    app[keys.NARRATIVE_LIMITER] = RateLimiter(
        llm_settings.api_rate_limit, llm_settings.api_rate_window, clock.now
    )
    jobs = NarrativeJobs(narrator)
    handlers = app[keys.HANDLERS]
    handlers.register(
        SUBSCRIBER,
        jobs.on_event,
        subscribe=True,
        events=EVENTS_OF_INTEREST,
        lane=Lane.NARRATIVE,
    )
    handlers.register(LLM_JOB, jobs.on_llm, lane=Lane.NARRATIVE)
    handlers.register(STORM_JOB, jobs.on_storm, lane=Lane.NARRATIVE)
    app.router.add_post("/api/v1/narratives", guarded(post_narratives))
    app.router.add_post("/api/v1/mira/rca_analyze", guarded(rca_analyze))
    # They refuse a body that is not JSON themselves, with their rate-limit headers.
    app[keys.GUARD].not_json.update(("/api/v1/narratives", "/api/v1/mira/rca_analyze"))
    app.cleanup_ctx.append(_llm_ctx)


async def _llm_ctx(app: web.Application) -> AsyncIterator[None]:
    llm = app[keys.NARRATIVES].llm
    if llm is not None:
        llm.open()
    yield
    if llm is not None:
        await llm.close()
