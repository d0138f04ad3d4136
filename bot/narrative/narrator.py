"""The Narrator: one narrative for an incident, a storm or an RCA document.

Always a narrative: the template writes one from the facts; with ``llm.provider: openai``
the model writes it instead when it can, in this order of checks:

    prompt fits the cap? -> budget left today? -> cached? -> breaker closed? -> semaphore
    -> provider call (bounded attempts) -> clean -> spend tokens -> cache

Any "no" or failure gives the template narrative, with the reason recorded. Both kinds
of text are cleaned before anyone sees them (``clean.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from bot.core.clock import Clock
from bot.core.incidents import EventKind, Incident
from bot.narrative.budget import TokenBudget
from bot.narrative.cache import CachedAnswer, NarrativeCache, cache_key
from bot.narrative.clean import clean, limit_words
from bot.narrative.context import IncidentSubject, distinct_labels
from bot.narrative.facts import from_incident
from bot.narrative.grounding import (
    Dropped,
    Evidence,
    Facts,
    actions_that_ran,
    fact_rows,
    ground,
)
from bot.narrative.llm import LlmClient, LlmError
from bot.narrative.metrics import NarrativeMetrics
from bot.narrative.prompt import (
    STAKEHOLDER_WORDS,
    Audience,
    PromptBuilder,
    PromptTooLarge,
    Subject,
)
from bot.narrative.rca import RcaDocument, RcaSubject
from bot.narrative.redact import Redactor
from bot.narrative.storm import StormFacts, StormSubject, service_of
from bot.narrative.templates import PromptBook, PromptTemplateError
from bot.narrative.tokens import TokenCounter, default_counter
from bot.settings import LlmSettings
from bot.store.base import Store
from bot.upstream.breaker import CircuitBreaker

log = logging.getLogger(__name__)

Source = Literal["template", "llm"]
MAX_DROPPED_SHOWN = 5
PROMPT_SECONDS = 5.0  # building one prompt; beyond it the template is used


def clip_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


IMPACT = {"P0": "critical", "P1": "major", "P2": "minor", "P3": "low-priority"}


@dataclass(frozen=True)
class Narrative:
    text: str
    source: Source
    audience: Audience
    generated_at: float
    model: str | None = None
    tokens: int = 0  # used by this request (0 for templates and cache hits)
    cached: bool = False
    reason: str = ""  # why the template was used: provider, budget_exhausted, breaker_open, …
    generation_ms: int = 0
    encoding: str | None = None
    prompt_tokens: int | None = None
    dropped: tuple[Dropped, ...] = ()  # LLM sentences the facts did not support
    evidence: tuple[Evidence, ...] = ()  # each LLM sentence kept, and the facts behind it
    facts: Mapping[str, str] = field(default_factory=dict)  # those facts, by id

    def to_data(self) -> dict[str, Any]:
        """The shape kept in ``incident.data["narrative"]``."""
        out: dict[str, Any] = {
            "text": self.text,
            "source": self.source,
            "audience": self.audience,
            "generated_at": self.generated_at,
            "model": self.model,
            "tokens": self.tokens,
        }
        if self.cached:
            out["cached"] = True
        if self.reason:
            out["reason"] = self.reason
        if self.dropped:
            out["dropped"] = [
                {"sentence": clip_text(d.sentence, 300), "unsupported": d.reason()}
                for d in self.dropped[:MAX_DROPPED_SHOWN]
            ]
            out["dropped_count"] = len(self.dropped)
        if self.evidence:
            out["evidence"] = [
                {"sentence": e.sentence, "facts": list(e.facts)} for e in self.evidence
            ]
            used = {key for e in self.evidence for key in e.facts}
            out["facts"] = {
                key: clip_text(row, 500) for key, row in self.facts.items() if key in used
            }
        return out


class Narrator:
    def __init__(
        self,
        settings: LlmSettings,
        store: Store,
        clock: Clock,
        metrics: NarrativeMetrics,
        *,
        llm: LlmClient | None = None,
        counter: TokenCounter | None = None,
        allowed_url_prefixes: Sequence[str] = (),
        secrets: Sequence[str] = (),
    ) -> None:
        """``secrets``: the configured secret values (``Settings.secret_values``), kept
        from the model whatever their shape."""
        self.settings = settings
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.llm = llm
        self.book = PromptBook(settings.prompts_dir)
        self.counter = counter or default_counter()
        self.redactor = Redactor(settings.redact_patterns, secrets)
        self.builder = PromptBuilder(
            self.book, self.counter, self.redactor, settings.max_prompt_tokens
        )
        self.cache = NarrativeCache(store, settings.cache_ttl)
        self.budget = TokenBudget(store, settings.daily_token_budget)
        self.breaker = CircuitBreaker(
            errors=settings.breaker_errors,
            window=settings.breaker_window,
            cooldown=settings.breaker_cooldown,
            monotonic=clock.monotonic,
            on_change=lambda is_open: metrics.breaker_open.set(1 if is_open else 0),
        )
        self.semaphore = asyncio.Semaphore(settings.concurrency)
        self.allowed_url_prefixes = tuple(allowed_url_prefixes)

    @property
    def provider(self) -> str:
        return self.settings.provider if self.llm is not None else "template"

    # public ----------------------------------------------------------------------

    async def explain(self, incident_id: int, audience: Audience = "engineer") -> Narrative:
        """The narrative of a stored incident (raises NotFound)."""
        incident = await self.store.get_incident(incident_id)
        return await self.for_incident(incident, audience)

    async def for_incident(
        self, incident: Incident, audience: Audience, *, use_llm: bool = True
    ) -> Narrative:
        facts = from_incident(incident)
        labels = {**incident.common_labels, **incident.group_labels}
        values = {
            "facts": facts,
            "audience": audience,
            "service": service_of(labels),
            "impact": IMPACT.get(facts.severity, ""),
            "firing_scopes": distinct_labels(facts.firing),
        }

        def template() -> str:
            return self._render(f"narrative_{audience}.md.j2", values)

        if not use_llm:
            return self._template(template, audience, "deferred" if self.llm else "provider")
        return await self._narrate(IncidentSubject(facts), audience, template, incident.id)

    async def for_storm(self, facts: StormFacts, incident_ids: Sequence[int]) -> Narrative:
        values = {"storm": facts, "audience": "engineer"}

        def template() -> str:
            return self._render("narrative_storm.md.j2", values)

        first = incident_ids[0] if incident_ids else None
        return await self._narrate(StormSubject(facts), "engineer", template, first)

    async def for_rca(self, doc: RcaDocument, audience: Audience) -> Narrative:
        values = {"doc": doc, "chains": doc.ranked_chains(), "audience": audience}

        def template() -> str:
            return self._render("narrative_rca.md.j2", values)

        return await self._narrate(RcaSubject(doc), audience, template, None)

    # the flow --------------------------------------------------------------------

    def _render(self, name: str, values: dict[str, Any]) -> str:
        """A template narrative; a broken template raises PromptTemplateError (no guessing)."""
        return self.book.render(name, **values)

    def _finish(self, text: str, audience: Audience) -> str:
        text = clean(text, allowed_url_prefixes=self.allowed_url_prefixes)
        return limit_words(text, STAKEHOLDER_WORDS) if audience == "stakeholder" else text

    def _template(self, render: Callable[[], str], audience: Audience, reason: str) -> Narrative:
        return Narrative(
            text=self._finish(render(), audience),
            source="template",
            audience=audience,
            generated_at=self.clock.now(),
            reason=reason,
        )

    def _fallback(
        self, render: Callable[[], str], audience: Audience, reason: str, status: str
    ) -> Narrative:
        self.metrics.requests.labels(self.provider, status).inc()
        if status != "template":
            self.metrics.errors.labels(reason).inc()
        return self._template(render, audience, reason)

    async def _narrate(
        self,
        subject: Subject,
        audience: Audience,
        template: Callable[[], str],
        incident_id: int | None,
    ) -> Narrative:
        llm = self.llm
        if llm is None:
            return self._fallback(template, audience, "provider", "template")
        now = self.clock.now()
        try:
            # Off the event loop and bounded in time: the facts are clipped, but counting
            # tokens and cutting to the cap is the heaviest CPU work a narrative does, and
            # the webhook must not wait for it.
            prompt = await asyncio.wait_for(
                asyncio.to_thread(self.builder.build, subject, audience), PROMPT_SECONDS
            )
        except TimeoutError:
            log.warning("narrative prompt: not built within %ss", PROMPT_SECONDS)
            return self._fallback(template, audience, "prompt_timeout", "skipped")
        except PromptTooLarge as exc:
            log.warning("narrative prompt: %s", exc)
            return self._fallback(template, audience, "prompt_too_large", "skipped")
        except PromptTemplateError as exc:
            log.error("narrative prompt: %s", exc)
            return self._fallback(template, audience, "prompt_template", "error")
        budget = await self.budget.state(now)
        self.metrics.budget_ratio.set(budget.ratio)
        if budget.exhausted:
            return self._fallback(template, audience, "budget_exhausted", "skipped")
        key = cache_key(self.settings.provider, llm.model, prompt.rendered)
        hit = await self.cache.get(key, now)
        rows = fact_rows(prompt.context)
        if hit is not None:  # grounded when it was stored; traced again to the same facts
            self.metrics.cache.labels("hit").inc()
            self.metrics.requests.labels(self.provider, "cached").inc()
            traced = ground(hit.text, Facts(prompt.data, actions_of(subject)), rows)
            return Narrative(
                hit.text, "llm", audience, hit.generated_at, hit.model, 0, cached=True,
                encoding=prompt.encoding, prompt_tokens=prompt.tokens,
                evidence=traced.evidence, facts=rows,
            )  # fmt: skip
        self.metrics.cache.labels("miss").inc()
        if not self.breaker.allow():
            return self._fallback(template, audience, "breaker_open", "skipped")
        started = self.clock.monotonic()
        async with self.semaphore:
            try:
                reply = await llm.complete(
                    prompt.messages(),
                    max_tokens=self.settings.max_tokens,
                    on_attempt_error=lambda error: self.breaker.failure(),
                )
            except LlmError as exc:
                return self._fallback(template, audience, exc.kind, "error")
            except BaseException:
                self.breaker.abandon()  # cancelled mid-call: let a later call be the trial
                raise
        self.breaker.success()
        elapsed = self.clock.monotonic() - started
        text = self._finish(reply.text, audience)
        if not text:
            return self._fallback(template, audience, "empty", "error")
        grounded = ground(text, Facts(prompt.data, actions_of(subject)), rows)
        for dropped in grounded.dropped:
            for claim in dropped.claims:
                self.metrics.ungrounded.labels(claim.kind).inc()
        if grounded.dropped:
            log.warning(
                "LLM narrative: %d of %d sentences not supported by the facts: %s",
                len(grounded.dropped),
                grounded.sentences,
                "; ".join(d.reason() for d in grounded.dropped[:MAX_DROPPED_SHOWN]),
            )
        if not grounded.enough:
            await self._spend(reply.tokens, incident_id)
            fallback = self._fallback(template, audience, "ungrounded", "error")
            return replace(fallback, dropped=grounded.dropped)
        text = grounded.text
        self.metrics.requests.labels(self.provider, "success").inc()
        self.metrics.seconds.observe(elapsed)
        self.metrics.tokens.labels(self.provider, reply.model).inc(reply.tokens)
        await self._spend(reply.tokens, incident_id)
        generated_at = self.clock.now()
        await self.cache.put(key, CachedAnswer(text, reply.model, reply.tokens, generated_at), now)
        return Narrative(
            text, "llm", audience, generated_at, reply.model, reply.tokens,
            generation_ms=round(elapsed * 1000), encoding=prompt.encoding,
            prompt_tokens=prompt.tokens, dropped=grounded.dropped, evidence=grounded.evidence,
            facts=rows,
        )  # fmt: skip

    async def _spend(self, tokens: int, incident_id: int | None) -> None:
        now = self.clock.now()
        state, crossed = await self.budget.spend(tokens, now)
        self.metrics.budget_ratio.set(state.ratio)
        for level in crossed:
            message = f"LLM token budget {level}% used: {state.used:,} of {state.limit:,} today"
            if level >= 100:
                message += "; narratives use templates until tomorrow (UTC)"
            log.warning("%s", message)
            self.metrics.budget_warnings.labels(str(level)).inc()
            if incident_id is not None:
                await self.store.append_event(
                    incident_id,
                    actor="alertpilot",
                    kind=EventKind.NARRATIVE_BUDGET,
                    message=message,
                    now=now,
                    data={"level": level, "used": state.used, "limit": state.limit},
                )


def actions_of(subject: Subject) -> frozenset[str] | None:
    """The kinds of action that ran, for an incident (its steps and timeline); None for
    subjects that record none (a storm, an RCA document): their text decides."""
    if not isinstance(subject, IncidentSubject):
        return None
    facts = subject.facts
    return actions_that_ran(
        ((r.name, r.state, r.summary) for r in facts.remediations),
        ((e.kind, e.message) for e in facts.timeline),
    )
