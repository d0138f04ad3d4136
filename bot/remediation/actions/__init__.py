"""Remediation actions by kind: ``silence``, ``webhook``, ``command``.

``ActionRegistry`` is built in ``setup`` from the remediation settings and dispatches on
the step's ``kind``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.playbook.model import Action
from bot.remediation.actions.base import ActionContext, ActionKind, Call, Connections
from bot.remediation.actions.command import CommandKind
from bot.remediation.actions.silence import SilenceCall, SilenceKind
from bot.remediation.actions.webhook import WebhookKind
from bot.remediation.results import StepResult
from bot.settings import RemediationSettings

__all__ = ["ActionContext", "ActionRegistry", "Call", "Connections", "SilenceCall"]


class ActionRegistry:
    def __init__(self, kinds: list[ActionKind[Any, Any]]) -> None:
        self._kinds = {kind.kind: kind for kind in kinds}
        self.observe: Callable[[str, StepResult], None] = lambda kind, result: None

    @classmethod
    def from_settings(cls, settings: RemediationSettings) -> ActionRegistry:
        return cls(
            [
                SilenceKind(),
                WebhookKind(settings.allowed_urls),
                CommandKind(settings.allowed_commands),
            ]
        )

    def _kind(self, kind: str) -> ActionKind[Any, Any]:
        try:
            return self._kinds[kind]
        except KeyError:
            raise ValueError(f"no remediation action of kind {kind!r}") from None

    def prepare(self, action: Action, ctx: ActionContext) -> Call:
        """Render and check the call (raises Refused); no side effects."""
        call: Call = self._kind(action.kind).prepare(action, ctx)
        return call

    async def execute(self, action: Action, call: Call, conns: Connections) -> StepResult:
        result = await self._kind(action.kind).execute(call, conns)
        self.observe(action.kind, result)
        return result
