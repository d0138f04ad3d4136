"""``silence``: an Alertmanager silence (API v2) for the step's matchers and duration.

Each matcher template must render to exactly one matcher (label values go through the
``quote`` filter), so a label value cannot add matchers or widen one. A silence needs at
least one equality matcher with a non-empty value: one that would match every alert is
refused. The silence id goes on the incident, to be expired when it resolves.
"""

from __future__ import annotations

from typing import Literal

from bot.core.durations import format_duration
from bot.core.matchers import Matcher, MatcherError, MatchOp, parse_matcher
from bot.playbook.model import SilenceAction
from bot.remediation.actions.base import ActionContext, ActionKind, Call, Connections
from bot.remediation.results import Guard, Refused, StepResult, StepStatus, truncate
from bot.upstream.alertmanager import AlertmanagerError

CREATED_BY = "alertpilot"


class SilenceCall(Call):
    kind: Literal["silence"] = "silence"
    matchers: list[str]  # canonical matcher strings, e.g. service="checkout"
    duration: float
    comment: str
    expire_on_resolve: bool

    def describe(self) -> str:
        return f"silence {{{', '.join(self.matchers)}}} for {format_duration(self.duration)}"

    def parsed(self) -> list[Matcher]:
        return [parse_matcher(text) for text in self.matchers]


class SilenceKind(ActionKind[SilenceAction, SilenceCall]):
    kind = "silence"

    def prepare(self, spec: SilenceAction, ctx: ActionContext) -> SilenceCall:
        matchers: list[Matcher] = []
        for i, template in enumerate(spec.matchers):
            text = ctx.render(template, f"matchers[{i}]")
            try:
                matchers.append(parse_matcher(text))
            except MatcherError as exc:
                raise Refused(
                    Guard.INVALID, f"matchers[{i}] is not one matcher once rendered: {exc}"
                ) from None
        if not any(m.op is MatchOp.EQ and m.value for m in matchers):
            raise Refused(
                Guard.INVALID,
                "a silence needs at least one equality matcher with a value "
                '(e.g. alertname="X"); this one could match every alert',
            )
        comment = ctx.render(spec.comment, "comment").strip() or "silenced by alertpilot"
        comment = f"{comment} (incident #{ctx.incident.id}, step {ctx.step})"
        return SilenceCall(
            matchers=[str(m) for m in matchers],
            duration=spec.duration,
            comment=truncate(comment, 500),
            expire_on_resolve=spec.expire_on_resolve,
        )

    async def _execute(self, call: SilenceCall, conns: Connections) -> StepResult:
        if conns.alertmanager is None:
            return StepResult(status=StepStatus.ERROR, summary="no Alertmanager client")
        try:
            silence_id = await conns.alertmanager.create_silence(
                call.parsed(), duration=call.duration, created_by=CREATED_BY, comment=call.comment
            )
        except AlertmanagerError as exc:
            return StepResult(status=StepStatus.FAILED, summary=truncate(str(exc), 300))
        return StepResult(
            status=StepStatus.OK,
            summary=f"silence {silence_id} created for {format_duration(call.duration)}",
            output=conns.alertmanager.silence_url(silence_id),
            silence_id=silence_id,
        )
