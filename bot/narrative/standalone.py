"""The narrator outside the server, for ``alertpilot explain``: own store, own client."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from bot.core.clock import Clock, SystemClock
from bot.narrative.llm import LlmClient
from bot.narrative.metrics import NarrativeMetrics
from bot.narrative.narrator import Narrative, Narrator
from bot.narrative.prompt import Audience
from bot.settings import Settings
from bot.store.factory import build_store


async def explain_incident(
    settings: Settings, incident_id: int, audience: Audience, *, clock: Clock | None = None
) -> Narrative:
    """Open the store (and the LLM client), explain one incident, close both."""
    clock = clock or SystemClock()
    store = build_store(settings.store, clock=clock.now, inbox_writer=False)
    llm = LlmClient(settings.llm) if settings.llm.provider == "openai" else None
    public = settings.server.public_url
    await store.open()
    try:
        if llm is not None:
            llm.open()
        narrator = Narrator(
            settings.llm,
            store,
            clock,
            NarrativeMetrics(CollectorRegistry()),
            llm=llm,
            allowed_url_prefixes=[public] if public else [],
            secrets=settings.secret_values(),
        )
        return await narrator.explain(incident_id, audience)
    finally:
        if llm is not None:
            await llm.close()
        await store.close()
