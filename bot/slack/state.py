"""What the Slack feature holds while the app runs (under ``keys.SLACK``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.clock import Clock
from bot.core.transitions import IncidentActions
from bot.settings import Settings, SlackSettings
from bot.slack.access import Access
from bot.slack.approvers import Approvers
from bot.slack.features import AppFeatures
from bot.slack.notifier import SlackNotifier
from bot.slack.outbox import SlackOutbox
from bot.slack.silence_menu import Silencer
from bot.slack.tasks import BackgroundTasks
from bot.store.base import Store
from bot.upstream.prometheus import PrometheusClient


@dataclass
class SlackState:
    settings: Settings
    store: Store
    clock: Clock
    client: AsyncWebClient
    outbox: SlackOutbox
    notifier: SlackNotifier
    silencer: Silencer
    approvers: Approvers
    access: Access
    features: AppFeatures
    actions: IncidentActions
    prometheus: Callable[[], PrometheusClient]
    verifier: SignatureVerifier
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    bolt: AsyncApp | None = None
    socket: Any | None = None  # AsyncSocketModeHandler when slack.app_token is set

    @property
    def slack(self) -> SlackSettings:
        assert self.settings.slack is not None
        return self.settings.slack
