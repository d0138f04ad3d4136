"""Typed keys for the state an aiohttp app holds (no module globals)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from bot.actions import IncidentActions
from bot.alertmanager import AlertmanagerClient
from bot.clock import Clock
from bot.jobs import JobHandlers
from bot.metrics import Metrics
from bot.playbook.registry import PlaybookSet
from bot.prometheus import PrometheusClient
from bot.settings import Settings
from bot.store.base import Store
from bot.worker import InboxProcessor, JobRunner

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
CLOCK = web.AppKey("clock", Clock)
HANDLERS = web.AppKey("handlers", JobHandlers)
INBOX = web.AppKey("inbox", InboxProcessor)
RUNNER = web.AppKey("runner", JobRunner)
ACTIONS = web.AppKey("actions", IncidentActions)
HTTP = web.AppKey("http", aiohttp.ClientSession)
PROMETHEUS = web.AppKey("prometheus", PrometheusClient)
ALERTMANAGER = web.AppKey("alertmanager", AlertmanagerClient)
PLAYBOOKS = web.AppKey("playbooks", PlaybookSet)
