"""Typed keys for the state an aiohttp app holds (no module globals)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from bot.core.clock import Clock
from bot.core.transitions import IncidentActions
from bot.playbook.registry import PlaybookSet
from bot.runtime.jobs import JobHandlers
from bot.runtime.load import IngestLoad
from bot.runtime.metrics import Metrics
from bot.runtime.worker import InboxProcessor, JobRunner
from bot.server.connections import Connections
from bot.server.exposure import Guard
from bot.settings import Settings
from bot.silences.service import SilenceService
from bot.store.base import Store
from bot.upstream.alertmanager import AlertmanagerClient
from bot.upstream.breaker import Breakers
from bot.upstream.prometheus import PrometheusClient

if TYPE_CHECKING:  # bot.pipeline imports this module
    from bot.narrative.narrator import Narrator
    from bot.narrative.ratelimit import RateLimiter
    from bot.pagerduty.feature import PagerDutyFeature
    from bot.pagerduty.oncall import OnCallDirectory
    from bot.pipeline import Pipeline
    from bot.remediation.engine import RemediationEngine
    from bot.slack.state import SlackState

SETTINGS = web.AppKey("settings", Settings)
GUARD = web.AppKey("guard", Guard)
CONNECTIONS = web.AppKey("connections", Connections)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
CLOCK = web.AppKey("clock", Clock)
HANDLERS = web.AppKey("handlers", JobHandlers)
INBOX = web.AppKey("inbox", InboxProcessor)
LOAD = web.AppKey("load", IngestLoad)
RUNNER = web.AppKey("runner", JobRunner)
ACTIONS = web.AppKey("actions", IncidentActions)
HTTP = web.AppKey("http", aiohttp.ClientSession)
PROMETHEUS = web.AppKey("prometheus", PrometheusClient)
ALERTMANAGER = web.AppKey("alertmanager", AlertmanagerClient)
SILENCES = web.AppKey("silences", SilenceService)
BREAKERS = web.AppKey("breakers", Breakers)
PLAYBOOKS = web.AppKey("playbooks", PlaybookSet)
PIPELINE: web.AppKey[Pipeline] = web.AppKey("pipeline")
REMEDIATION: web.AppKey[RemediationEngine] = web.AppKey("remediation")
NARRATIVES: web.AppKey[Narrator] = web.AppKey("narratives")
NARRATIVE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("narrative_limiter")
PAGERDUTY: web.AppKey[PagerDutyFeature] = web.AppKey("pagerduty")
ONCALL: web.AppKey[OnCallDirectory] = web.AppKey("oncall")
SLACK: web.AppKey[SlackState] = web.AppKey("slack")
