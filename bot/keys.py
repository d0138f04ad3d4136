"""Typed keys for the state an aiohttp app holds (no module globals)."""

from __future__ import annotations

from aiohttp import web

from bot.clock import Clock
from bot.jobs import JobHandlers
from bot.metrics import Metrics
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
