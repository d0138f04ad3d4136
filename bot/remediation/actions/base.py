"""The common base of remediation actions: build the call, then run it.

``prepare`` renders the step's templates and checks the result (allowlists, patterns,
matchers) with no side effect: the same call is shown in a suggestion, recorded in a dry
run and checked again right before it runs. ``execute`` times and logs the run and turns
any failure into a ``StepResult``; each kind writes ``_execute``.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import aiohttp
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict

from bot.core.incidents import Incident
from bot.playbook.registry import PlaybookSet
from bot.playbook.templating import (
    NotApplicable,
    RenderError,
    UnsafeValue,
    render,
    render_skeleton,
)
from bot.remediation.results import Guard, Refused, StepResult, StepStatus
from bot.upstream.alertmanager import AlertmanagerClient
from bot.upstream.prometheus import PrometheusClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connections:
    """The clients a running server holds; absent ones are None (the CLI holds none)."""

    prometheus: PrometheusClient | None = None
    alertmanager: AlertmanagerClient | None = None
    http: aiohttp.ClientSession | None = None
    playbooks: PlaybookSet | None = None


@dataclass(frozen=True)
class ActionContext:
    """What a step's templates see, and which incident and step the call is for."""

    env: SandboxedEnvironment
    values: Mapping[str, Any]
    incident: Incident
    step: str

    def render(self, source: str, where: str) -> str:
        try:
            return render(self.env, source, self.values)
        except NotApplicable as exc:
            raise Refused(Guard.NOT_APPLICABLE, str(exc)) from None
        except UnsafeValue as exc:  # a label value that no encoding makes safe there
            raise Refused(Guard.INVALID, f"{where}: {exc}") from None
        except RenderError as exc:
            raise Refused(Guard.TEMPLATE, f"{where}: {exc}") from None

    def skeleton(self, source: str, where: str) -> str:
        """``source`` with every printed value one plain word (the shape a URL must keep);
        rendered after ``render`` succeeded on the same source, so it fails only as that did."""
        try:
            return render_skeleton(self.env, source, self.values)
        except RenderError as exc:
            raise Refused(Guard.TEMPLATE, f"{where}: {exc}") from None


class Call(BaseModel):
    """A rendered, checked call. Its JSON dump is what a dry run records."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def describe(self) -> str:
        raise NotImplementedError

    def display(self) -> dict[str, Any]:
        return {"text": self.describe(), **self.model_dump(mode="json")}


SpecT = TypeVar("SpecT")
CallT = TypeVar("CallT", bound=Call)


class ActionKind(abc.ABC, Generic[SpecT, CallT]):
    kind: ClassVar[str]

    @abc.abstractmethod
    def prepare(self, spec: SpecT, ctx: ActionContext) -> CallT:
        """Render and check the call; raise Refused. No side effects."""

    async def execute(self, call: CallT, conns: Connections) -> StepResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.info("remediation %s: running %s", self.kind, call.describe())
        try:
            result = await self._execute(call, conns)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one action must not hide what happened
            log.exception("remediation %s crashed", self.kind)
            result = StepResult(
                status=StepStatus.ERROR, summary=f"{self.kind} crashed: {type(exc).__name__}"
            )
        result = result.model_copy(update={"duration": round(loop.time() - started, 3)})
        log.info(
            "remediation %s: %s (%s, %.2fs)",
            self.kind,
            result.summary,
            result.status.value,
            result.duration,
        )
        return result

    @abc.abstractmethod
    async def _execute(self, call: CallT, conns: Connections) -> StepResult: ...
