"""alertpilot's own metrics, on a registry of the app's (never the global one)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bot.store.base import Stats

SEVERITIES = ("P0", "P1", "P2", "P3")


class IngestTally(Collector):
    """What the webhook counts on every request, as plain integers, added to their
    counters whenever the registry is collected. A prometheus_client counter takes a
    lock on every ``inc``: three of them were 2 µs of each webhook's time in a flood.

    Registered ahead of the counters, so a collection (a scrape, ``get_sample_value``)
    moves the tallies over before it reads them; it yields no metric of its own. Only
    the event loop adds to the tallies; what has been moved is remembered, so a
    collection from another thread never loses or doubles a count."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = 0
        self.firing = 0
        self.resolved = 0
        self.duplicates = 0
        self._moved = (0, 0, 0, 0)
        self._lock = threading.Lock()
        self._targets: tuple[Counter, ...] = ()
        registry.register(self)

    def into(self, accepted: Counter, firing: Counter, resolved: Counter, dupes: Counter) -> None:
        self._targets = (accepted, firing, resolved, dupes)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = (self.accepted, self.firing, self.resolved, self.duplicates)
            for counter, total, moved in zip(self._targets, now, self._moved, strict=True):
                if total > moved:
                    counter.inc(total - moved)
            self._moved = now
        yield from ()


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tally = IngestTally(r)  # first: collected before the counters it feeds
        self.webhooks = Counter(
            "alertpilot_webhooks",
            "Inbound webhook requests by endpoint and result.",
            ["endpoint", "result"],
            registry=r,
        )
        self.alerts_ingested = Counter(
            "alertpilot_alerts_ingested",
            "Alerts received in accepted payloads, by status.",
            ["status"],
            registry=r,
        )
        # Bound once: the webhook counts every request, and labels() is a locked lookup.
        self.ingested_firing = self.alerts_ingested.labels("firing")
        self.ingested_resolved = self.alerts_ingested.labels("resolved")
        self.webhook_accepted = self.webhooks.labels("alertmanager", "accepted")
        self.connections_open = Gauge(
            "alertpilot_http_connections", "Inbound HTTP connections open.", registry=r
        )
        self.connections_closed = Counter(
            "alertpilot_http_connections_closed",
            "Inbound connections closed by the connection cap: evicted (the oldest with no "
            "request in progress, to make room) or refused (every one was serving).",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "alertpilot_duplicate_deliveries",
            "Payloads that repeated an alert state already seen (retries, HA pairs, resends).",
            registry=r,
        )
        self.tally.into(
            self.webhook_accepted, self.ingested_firing, self.ingested_resolved, self.duplicates
        )
        self.inbox_depth = Gauge(
            "alertpilot_inbox_depth", "Acknowledged payloads not yet processed.", registry=r
        )
        self.inbox_oldest_age = Gauge(
            "alertpilot_inbox_oldest_age_seconds",
            "Age of the oldest unprocessed payload.",
            registry=r,
        )
        self.processing_lag = Histogram(
            "alertpilot_processing_lag_seconds",
            "Time from ack to the payload's incident update.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.incidents_open = Gauge(
            "alertpilot_incidents_open",
            "Incidents not resolved, by severity.",
            ["severity"],
            registry=r,
        )
        self.jobs = Counter(
            "alertpilot_jobs",
            "Background jobs by kind and outcome.",
            ["kind", "outcome"],
            registry=r,
        )
        self.jobs_pending = Gauge(
            "alertpilot_jobs_pending",
            "Jobs waiting or running (the outbox), retries in backoff included.",
            registry=r,
        )
        self.jobs_scheduled = Gauge(
            "alertpilot_jobs_scheduled",
            "Timers: jobs that have not run yet and are due later (escalations, reminders,"
            " response targets).",
            registry=r,
        )
        self.breaker_open = Gauge(
            "alertpilot_upstream_breaker_open",
            "1 while the circuit breaker of an upstream (scheme://host:port) is open.",
            ["upstream"],
            registry=r,
        )
        self.lane_busy = Gauge(
            "alertpilot_lane_busy",
            "Jobs running in each lane (notify, pipeline, narrative) at the last dispatch.",
            ["lane"],
            registry=r,
        )
        self.jobs_failed = Gauge("alertpilot_jobs_failed", "Jobs that failed for good.", registry=r)
        self.diagnostics = Counter(
            "alertpilot_diagnostics",
            "Diagnostic steps run, by kind and status (error: the source was down, slow or "
            "refused the query; the result says which).",
            ["kind", "status"],
            registry=r,
        )
        self.remediations = Counter(
            "alertpilot_remediations",
            "Remediation actions run, by kind and status (failed, timed_out, error: the "
            "step's timeline event says why).",
            ["kind", "status"],
            registry=r,
        )
        self.store_errors = Counter(
            "alertpilot_store_errors",
            "Store operations that could not commit.",
            ["operation"],
            registry=r,
        )
        self.ready = Gauge(
            "alertpilot_ready", "1 when the store is writable and workers are alive.", registry=r
        )

    def observe_stats(self, stats: Stats, now: float) -> None:
        self.inbox_depth.set(stats.inbox_depth)
        oldest = stats.oldest_pending_at
        self.inbox_oldest_age.set(0.0 if oldest is None else max(0.0, now - oldest))
        self.jobs_pending.set(stats.jobs_pending)
        self.jobs_scheduled.set(stats.jobs_scheduled)
        self.jobs_failed.set(stats.jobs_failed)
        for severity in SEVERITIES:
            self.incidents_open.labels(severity).set(stats.open_by_severity.get(severity, 0))
