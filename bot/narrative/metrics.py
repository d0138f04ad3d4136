"""Narrative metrics, on the app's registry. Alerting rules in ``rules/`` use these names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NarrativeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = r = registry
        self.requests = Counter(
            "alertpilot_narrative_requests",
            "Narratives asked of a provider, by provider and outcome "
            "(success, error, fallback: a template was used instead).",
            ["provider", "status"],
            registry=r,
        )
        self.cache = Counter(
            "alertpilot_narrative_cache",
            "Narrative cache lookups, by result (hit, miss).",
            ["result"],
            registry=r,
        )
        self.tokens = Counter(
            "alertpilot_narrative_tokens",
            "Tokens used by narrative calls (prompt + completion), by provider and model.",
            ["provider", "model"],
            registry=r,
        )
        self.seconds = Histogram(
            "alertpilot_narrative_generation_seconds",
            "Time to produce a narrative from a provider (all attempts).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 10, 15, 30, 60, 120),
            registry=r,
        )
        self.errors = Counter(
            "alertpilot_narrative_errors",
            "Narrative failures by type (timeout, server, rate_limit, quota, auth, "
            "bad_request, connection, empty, breaker_open, budget_exhausted, template).",
            ["type"],
            registry=r,
        )
        self.budget_ratio = Gauge(
            "alertpilot_narrative_budget_used_ratio",
            "Share of today's LLM token budget used (1 = exhausted: templates only).",
            registry=r,
        )
        self.budget_warnings = Counter(
            "alertpilot_narrative_budget_warnings",
            "Daily token budget thresholds crossed (80, 90, 100 percent).",
            ["level"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "alertpilot_narrative_breaker_open",
            "1 while the LLM circuit breaker is open (templates are used).",
            registry=r,
        )
        self.ungrounded = Counter(
            "alertpilot_narrative_ungrounded",
            "Claims of LLM narratives that their facts do not support, by kind (number, time,"
            " version, name, action); their sentences were dropped before posting.",
            ["kind"],
            registry=r,
        )
        self.storms = Counter(
            "alertpilot_narrative_storms",
            "Alert storms summarised in one narrative instead of one per incident.",
            registry=r,
        )
