"""Typed keys for the state an aiohttp app holds (no module globals)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from bot.actions import IncidentActions
from bot.alertmanager import AlertmanagerClient
from bot.breaker import Breakers
from bot.clock import Clock
from bot.connections import Connections
from bot.exposure import Guard
from bot.jobs import JobHandlers
from bot.load import IngestLoad
from bot.metrics import Metrics
from bot.playbook.registry import PlaybookSet
from bot.prometheus import PrometheusClient
from bot.settings import Settings
from bot.silences import SilenceService
from bot.store.base import Store
from bot.worker import InboxProcessor, JobRunner

if TYPE_CHECKING:  # bot.pipeline imports this module
    from bot.chat.state import SlackState
    from bot.narrative.narrator import Narrator
    from bot.narrative.ratelimit import RateLimiter
    from bot.notify.pagerduty import PagerDutyFeature
    from bot.oncall import OnCallDirectory
    from bot.pipeline import Pipeline
    from bot.remediation.engine import RemediationEngine

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
