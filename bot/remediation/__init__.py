"""Guarded remediation: silences, webhooks and commands that playbooks propose.

``setup(app)`` puts the ``RemediationEngine`` under ``keys.REMEDIATION``, registers its
job handlers (``remediation.run``, ``.verify``, ``.expire`` and the ``remediation.events``
subscriber) and the approvals API route. The clients it runs with (Prometheus,
Alertmanager, the HTTP session, the playbooks) are read from the app when a job runs,
so they may be opened later, in ``cleanup_ctx``.
"""

from __future__ import annotations

from aiohttp import web

from bot import keys
from bot.remediation.actions import ActionRegistry, Connections
from bot.remediation.api import post_approval
from bot.remediation.approvals import ApprovalConflict
from bot.remediation.engine import RemediationEngine
from bot.server.routes import guarded

__all__ = ["ApprovalConflict", "RemediationEngine", "setup"]


def setup(app: web.Application) -> None:
    def connections() -> Connections:
        return Connections(
            prometheus=app.get(keys.PROMETHEUS),
            alertmanager=app.get(keys.ALERTMANAGER),
            http=app.get(keys.HTTP),
            playbooks=app.get(keys.PLAYBOOKS),
        )

    registry = ActionRegistry.from_settings(app[keys.SETTINGS].remediation)
    counter = app[keys.METRICS].remediations
    registry.observe = lambda kind, result: counter.labels(kind, result.status.value).inc()
    engine = RemediationEngine(
        app[keys.STORE],
        app[keys.CLOCK],
        app[keys.SETTINGS].remediation,
        actions=app[keys.ACTIONS],
        registry=registry,
        connections=connections,
    )
    app[keys.REMEDIATION] = engine
    engine.register(app[keys.HANDLERS])
    app.router.add_post("/api/v1/incidents/{incident_id}/approvals", guarded(post_approval))
