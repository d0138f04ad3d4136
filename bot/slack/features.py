"""Features Slack uses when they are there: the pipeline (Re-run diagnostics), remediation
(approvals), playbooks (runbooks, links, graphs), PagerDuty (on-call).

Each is looked up by its app key at the moment it is needed, so Slack works, with
fewer buttons and answers, in a configuration that leaves one out. The keys are typed,
so what each feature offers is checked where it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from bot import keys
from bot.core.incidents import Incident
from bot.playbook.model import Playbook
from bot.playbook.registry import PlaybookSet

if TYPE_CHECKING:  # they import bot.notify through bot.keys' features
    from bot.pagerduty.oncall import OnCallDirectory
    from bot.pipeline import Pipeline
    from bot.remediation.engine import RemediationEngine


class AppFeatures:
    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def pipeline(self) -> Pipeline | None:
        return self.app.get(keys.PIPELINE)

    @property
    def remediation(self) -> RemediationEngine | None:
        return self.app.get(keys.REMEDIATION)

    @property
    def playbooks(self) -> PlaybookSet | None:
        return self.app.get(keys.PLAYBOOKS)

    @property
    def oncall(self) -> OnCallDirectory | None:
        return self.app.get(keys.ONCALL)

    def can_rerun(self) -> bool:
        return self.pipeline is not None

    def can_approve(self) -> bool:
        return self.remediation is not None

    def playbook(self, name: str | None) -> Playbook | None:
        playbooks = self.playbooks
        if playbooks is None or name is None:
            return None
        return playbooks.get(name)

    def playbook_links(self, incident: Incident) -> list[tuple[str, str]]:
        playbook = self.playbook(incident.playbook)
        links = playbook.links if playbook is not None else []
        return [(str(link.title), str(link.url)) for link in links]
