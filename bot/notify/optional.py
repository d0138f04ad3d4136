"""Features Slack uses when they are there: the pipeline (Re-run diagnostics), remediation
(approvals), playbooks (runbooks, links, graphs), PagerDuty (on-call).

Each is looked up by its app key at the moment it is needed, so Slack works, with
fewer buttons and answers, in a build or a configuration that leaves one out.
"""

from __future__ import annotations

import inspect
from typing import Any

from aiohttp import web

from bot.incidents import Incident


def optional(app: web.Application, name: str) -> Any | None:
    """``app[keys.NAME]`` when that key exists and the feature registered itself, else None."""
    from bot import keys  # keys imports most of bot; look it up late

    key = getattr(keys, name, None)
    if key is None or not isinstance(key, web.AppKey):
        return None
    return app.get(key)


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class AppFeatures:
    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def pipeline(self) -> Any | None:
        return optional(self.app, "PIPELINE")

    @property
    def remediation(self) -> Any | None:
        return optional(self.app, "REMEDIATION")

    @property
    def playbooks(self) -> Any | None:
        return optional(self.app, "PLAYBOOKS")

    @property
    def oncall(self) -> Any | None:
        return optional(self.app, "ONCALL")

    def can_rerun(self) -> bool:
        return callable(getattr(self.pipeline, "rerun_diagnostics", None))

    def can_approve(self) -> bool:
        engine = self.remediation
        return callable(getattr(engine, "approve", None)) and callable(
            getattr(engine, "reject", None)
        )

    def playbook(self, name: str | None) -> Any | None:
        playbooks = self.playbooks
        if playbooks is None or name is None:
            return None
        return playbooks.get(name)

    def playbook_links(self, incident: Incident) -> list[tuple[str, str]]:
        playbook = self.playbook(incident.playbook)
        links = getattr(playbook, "links", None) or []
        return [(str(link.title), str(link.url)) for link in links]
