"""What the Slack feature holds while the app runs (under ``keys.SLACK``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.actions import IncidentActions
from bot.chat.access import Access
from bot.chat.approvers import Approvers
from bot.chat.silences import Silencer
from bot.chat.tasks import BackgroundTasks
from bot.clock import Clock
from bot.notify.optional import AppFeatures
from bot.notify.slack import SlackNotifier
from bot.notify.slack_outbox import SlackOutbox
from bot.prometheus import PrometheusClient
from bot.settings import Settings, SlackSettings
from bot.store.base import Store


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
