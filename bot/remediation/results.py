"""What a remediation step produced, and what stopped one.

Every action returns one ``StepResult`` with an explicit ``StepStatus``. A guard that
stops a step is a ``Stop`` (which guard, and why, in words a person can act on); an
action that refuses to build its call (a URL off the allowlist, an argument that fails
its pattern) raises ``Refused`` before anything is sent or started.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from bot.errors import ActionRefused


class Guard(StrEnum):
    """The guard that stopped a step."""

    MODE = "mode"  # remediation.mode (the global ceiling / kill switch)
    # every alert of the step's target has resolved, or the incident itself is resolved
    RESOLVED = "resolved"
    TEMPLATE = "template"  # a template did not render
    NOT_APPLICABLE = "not_applicable"  # the alert lacks a label the step's templates need
    ALLOWLIST = "allowlist"  # URL or executable not on the allowlist
    PATTERN = "pattern"  # a templated argument failed its pattern
    INVALID = "invalid"  # the rendered call is not valid (e.g. a matcher that does not parse)
    CHANGED = "changed"  # the call rendered to run differs from the one proposed (and approved)
    WHEN = "when"  # the PromQL precondition does not hold
    MAX_RUNS = "max_runs"  # max_runs per window, across incidents
    COOLDOWN = "cooldown"  # cooldown per target
    INTERRUPTED = "interrupted"  # the process stopped while the step ran: never run twice


@dataclass(frozen=True)
class Stop:
    guard: Guard
    reason: str

    def __str__(self) -> str:
        return f"{self.guard.value}: {self.reason}"


class Refused(ActionRefused):
    """An action would not build its call; nothing was sent or started."""

    def __init__(self, guard: Guard, reason: str) -> None:
        self.stop = Stop(guard, reason)
        super().__init__(str(self.stop))


class StepStatus(StrEnum):
    OK = "ok"  # done: HTTP 2xx, exit status 0, silence created
    FAILED = "failed"  # it ran and did not succeed (HTTP 4xx/5xx, non-zero exit, API error)
    TIMED_OUT = "timed_out"  # no answer in time; a command was killed
    ERROR = "error"  # it could not start (unreachable, executable missing, not configured)


class StepResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: StepStatus
    summary: str  # one line for people: "POST http://... -> HTTP 200"
    output: str = ""  # response body or stdout/stderr, truncated
    exit_code: int | None = None
    http_status: int | None = None
    silence_id: str | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is StepStatus.OK


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"
