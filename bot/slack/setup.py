"""``setup(app)``: the whole Slack feature, when ``settings.slack`` is set.

notify.slack          job subscriber: the incident message and its thread
notify.slack.rollup   job: the storm roll-up, updated in place (debounced)
notify.slack.graph    job: the incident graph, uploaded to the thread
notify.slack.reminder job: a status-update reminder in the thread (P0/P1, until resolved)
notify.slack.postmortem  job: a postmortem draft in the thread when a P0/P1 resolves
POST /slack/events    slash command and buttons (signed requests)
Socket Mode           instead of /slack/events when slack.app_token is set
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from slack_sdk.signature import Clock as SignatureClock
from slack_sdk.signature import SignatureVerifier

from bot import keys
from bot.core.clock import Clock
from bot.core.transitions import IncidentActions
from bot.notify.links import LinkPolicy
from bot.runtime.jobs import Lane
from bot.runtime.shared_limits import SharedWindow
from bot.server.routes import guarded
from bot.slack.access import Access
from bot.slack.approvers import Approvers
from bot.slack.bolt import build_bolt
from bot.slack.features import AppFeatures
from bot.slack.followups import POSTMORTEM_KIND, REMINDER_KIND
from bot.slack.graph import GraphUploader
from bot.slack.http import slack_events
from bot.slack.members import Members
from bot.slack.notifier import GRAPH_KIND, ROLLUP_KIND, SlackNotifier
from bot.slack.outbox import ChannelPacer, SlackOutbox, make_client
from bot.slack.silence_menu import Silencer
from bot.slack.socket import SocketMode
from bot.slack.state import SlackState
from bot.slack.storm import StormTracker

log = logging.getLogger(__name__)


class _VerifierClock(SignatureClock):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def now(self) -> float:
        return self.clock.now()


def setup(app: web.Application) -> None:
    settings = app[keys.SETTINGS]
    slack = settings.slack
    if slack is None:
        raise ValueError("Slack setup needs the slack section of the config")
    store, clock = app[keys.STORE], app[keys.CLOCK]
    client = make_client(slack.bot_token.get_secret_value(), slack.api_url, slack.timeout)
    shared = SharedWindow(store, clock.now, "slack:channel:")
    pacer = ChannelPacer(slack.channel_rate, monotonic=time.monotonic, shared=shared)
    outbox = SlackOutbox(client, pacer)
    features = AppFeatures(app)
    storms = StormTracker(store, clock, threshold=slack.storm_threshold, window=slack.storm_window)
    notifier = SlackNotifier(
        store,
        outbox,
        storms,
        slack,
        features,
        clock,
        alertmanager_url=settings.alertmanager.browser_url,
        links=LinkPolicy.from_settings(settings),
        response=settings.response,
    )
    silencer = Silencer(
        store,
        lambda: app[keys.ALERTMANAGER],
        clock,
        app[keys.SILENCES],
        max_silence=slack.max_silence,
    )
    access = Access(
        slack,
        notifier.router,
        responders=Members(slack.responders, client, clock),
        query_users=Members(slack.query_users, client, clock),
    )
    actions = app.get(keys.ACTIONS) or IncidentActions(store, clock)
    state = SlackState(
        settings=settings,
        store=store,
        clock=clock,
        client=client,
        outbox=outbox,
        notifier=notifier,
        silencer=silencer,
        approvers=Approvers(slack.approvers, client, clock),
        access=access,
        features=features,
        actions=actions,
        prometheus=lambda: app[keys.PROMETHEUS],
        verifier=SignatureVerifier(
            slack.signing_secret.get_secret_value(), clock=_VerifierClock(clock)
        ),
    )
    state.bolt = build_bolt(state)
    app[keys.SLACK] = state

    handlers = app[keys.HANDLERS]
    handlers.register(SlackNotifier.kind, notifier, subscribe=True, lane=Lane.NOTIFY)
    handlers.register(ROLLUP_KIND, notifier.rollup_job, lane=Lane.NOTIFY)
    handlers.register(REMINDER_KIND, notifier.followups.reminder_job, lane=Lane.NOTIFY, timer=True)
    handlers.register(POSTMORTEM_KIND, notifier.followups.postmortem_job, lane=Lane.NOTIFY)
    handlers.register(  # a graph waits on Prometheus: the pipeline lane
        GRAPH_KIND,
        GraphUploader(
            store,
            outbox,
            features,
            lambda: app[keys.PROMETHEUS],
            clock,
            prometheus_urls=settings.prometheus.bases,
        ),
    )
    app.router.add_post("/slack/events", guarded(slack_events))
    app.cleanup_ctx.append(_slack_ctx)


async def _slack_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[keys.SLACK]
    session = app[keys.HTTP]
    state.client.session = session
    if state.bolt is not None:
        state.bolt.client.session = session
    slack = state.slack
    if slack.app_token is not None and state.bolt is not None:
        state.socket = SocketMode(state.bolt, slack.app_token.get_secret_value(), state.client)
        state.socket.start()
        log.info("Slack: Socket Mode (commands and buttons over a WebSocket)")
    yield
    if isinstance(state.socket, SocketMode):
        await state.socket.close()
    await state.tasks.close(timeout=state.settings.workers.drain_timeout)
