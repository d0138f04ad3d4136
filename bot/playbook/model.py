"""The playbook format, as pydantic models that reject unknown keys.

A playbook file holds one playbook, a list of them, or ``{playbooks: [...]}``; several
files may be loaded. Templated strings (queries, URLs, bodies, arguments) are Jinja2,
rendered in a sandbox over ``labels``, ``annotations``, ``common_labels`` and
``incident``; values that reach PromQL must go through the ``promql`` filter.

Which playbook runs: playbooks are tried in ascending ``order`` (ties: file order,
then position in the file); the first whose ``match`` holds runs. A playbook with
``continue: true`` lets later ones run too, like Alertmanager's routes.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from bot.core import regex
from bot.core.durations import Duration, Target
from bot.core.matchers import MatcherStr
from bot.settings import Severity

_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# expectations ----------------------------------------------------------------

_EXPECT = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$")


class Expectation(Strict):
    """``"< 0.05"``: the value a healthy system shows. A result passes when it holds."""

    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float

    def holds(self, actual: float) -> bool:
        return {
            "<": actual < self.value,
            "<=": actual <= self.value,
            ">": actual > self.value,
            ">=": actual >= self.value,
            "==": actual == self.value,
            "!=": actual != self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


def _parse_expectation(value: object) -> object:
    if isinstance(value, str):
        match = _EXPECT.match(value)
        if match is None:
            raise ValueError(f"expected a comparison like '< 0.05', got {value!r}")
        return {"op": match.group(1), "value": float(match.group(2))}
    return value


Expect = Annotated[Expectation, BeforeValidator(_parse_expectation)]


# diagnostics -------------------------------------------------------------------


class DiagnosticBase(Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    label: str | None = None  # human label, e.g. "5xx share of requests"
    expect: Expect | None = None
    timeout: Duration = 10.0
    # what the query returns: ratio 0.123 and percent 12.3 both read "12.3%"
    unit: Literal["", "percent", "ratio", "seconds", "ms", "bytes", "per_second", "count"] = ""
    top_k: int = Field(default=5, ge=1, le=50)
    primary: bool = False  # the diagnostic to graph for this incident


class PromqlDiagnostic(DiagnosticBase):
    kind: Literal["promql"]
    query: str


class PromqlRangeDiagnostic(DiagnosticBase):
    kind: Literal["promql_range"]
    query: str
    window: Duration = 3600.0
    step: Duration = 60.0


class AlertsDiagnostic(DiagnosticBase):
    kind: Literal["alerts"]
    matchers: list[str]  # templated matcher strings, e.g. service="{{ labels.service }}"


class TargetsDiagnostic(DiagnosticBase):
    """The scrape targets of a job, from the configured Prometheus (``/api/v1/targets``):
    how many are down, and the last scrape error of each (up to ``top_k``)."""

    kind: Literal["targets"]
    job: str  # templated scrape pool, e.g. "{{ labels.job }}"


class HttpDiagnostic(DiagnosticBase):
    kind: Literal["http"]
    url: str
    json_field: str | None = None  # dotted path into a JSON answer, e.g. "status.db"
    expect_status: int | None = 200


Diagnostic = Annotated[
    PromqlDiagnostic
    | PromqlRangeDiagnostic
    | AlertsDiagnostic
    | TargetsDiagnostic
    | HttpDiagnostic,
    Field(discriminator="kind"),
]


# remediations ------------------------------------------------------------------


class StepMode(StrEnum):
    AUTO = "auto"
    APPROVAL = "approval"
    SUGGEST = "suggest"


class TemplatedArg(Strict):
    """A command argument built from alert data, checked against its own pattern."""

    template: str
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            regex.compile(value)
        except regex.RegexError as exc:
            raise ValueError(f"invalid pattern (RE2 syntax): {exc}") from None
        return value


class Verify(Strict):
    query: str  # PromQL; its value must satisfy ``expect`` within ``within``
    expect: Expect
    within: Duration = 300.0
    interval: Duration = 15.0


class SilenceAction(Strict):
    kind: Literal["silence"]
    matchers: list[str]  # templated matcher strings
    duration: Duration = 3600.0
    comment: str = "silenced by alertpilot"
    expire_on_resolve: bool = True


class WebhookAction(Strict):
    kind: Literal["webhook"]
    url: str
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    body: dict[str, object] | None = None  # string values are templates
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 10.0


class CommandAction(Strict):
    kind: Literal["command"]
    argv: list[str | TemplatedArg] = Field(min_length=1)
    timeout: Duration = 30.0
    max_output: int = Field(default=4000, ge=100, le=100_000)

    @field_validator("argv")
    @classmethod
    def _literals_are_literal(cls, argv: list[str | TemplatedArg]) -> list[str | TemplatedArg]:
        for i, arg in enumerate(argv):
            if isinstance(arg, str) and ("{{" in arg or "{%" in arg):
                raise ValueError(
                    f"argv[{i}] is templated: write it as {{template: ..., pattern: ...}} "
                    "so its value is checked"
                )
        if not isinstance(argv[0], str):
            raise ValueError("argv[0] (the executable) must be a literal")
        return argv


Action = Annotated[SilenceAction | WebhookAction | CommandAction, Field(discriminator="kind")]


class Remediation(Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str = ""
    action: Action
    mode: StepMode = StepMode.APPROVAL
    when: str | None = None  # PromQL precondition: must return a non-empty, non-zero result
    max_runs: int = Field(default=3, ge=1)
    window: Duration = 3600.0
    cooldown: Duration = 900.0
    cooldown_labels: list[str] | None = None  # target identity; default: the group labels
    verify: Verify | None = None
    rollback: Action | None = None


# escalation --------------------------------------------------------------------

_PAGE = re.compile(r"^\s*(immediately|never|if_unacked\s+(\S+))\s*$")


class PageRule(Strict):
    """``immediately``, ``never`` or ``if_unacked 5m`` (an ack in Slack counts)."""

    when: Literal["immediately", "never", "if_unacked"]
    after: float = 0.0

    def __str__(self) -> str:
        return f"if_unacked {self.after:g}s" if self.when == "if_unacked" else self.when


def _parse_page(value: object) -> object:
    from bot.core.durations import parse_duration

    if isinstance(value, str):
        match = _PAGE.match(value)
        if match is None:
            raise ValueError("expected 'immediately', 'never' or 'if_unacked DURATION'")
        if match.group(2):
            return {"when": "if_unacked", "after": parse_duration(match.group(2))}
        return {"when": match.group(1)}
    return value


Page = Annotated[PageRule, BeforeValidator(_parse_page)]

DEFAULT_PAGING: dict[Severity, PageRule] = {
    Severity.P0: PageRule(when="immediately"),
    Severity.P1: PageRule(when="if_unacked", after=300.0),
    Severity.P2: PageRule(when="never"),
    Severity.P3: PageRule(when="never"),
}


class Escalation(Strict):
    page: Page | None = None  # for every severity, unless ``by_severity`` says otherwise
    by_severity: dict[Severity, Page] = Field(default_factory=dict)
    # Response targets for this playbook's incidents, per severity, over
    # ``response.ack_within`` / ``resolve_within`` (``never``: none); see bot/targets.py.
    ack_within: dict[Severity, Target] = Field(default_factory=dict)
    resolve_within: dict[Severity, Target] = Field(default_factory=dict)

    def rule_for(self, severity: Severity) -> PageRule:
        if severity in self.by_severity:
            return self.by_severity[severity]
        return self.page or DEFAULT_PAGING[severity]


# the playbook ------------------------------------------------------------------


class Link(Strict):
    title: str
    url: str


class Playbook(Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str = ""
    match: list[MatcherStr] = Field(min_length=1)
    order: int = 100
    continue_: bool = Field(default=False, alias="continue")
    severity: Severity | None = None  # override the label-derived severity
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    remediations: list[Remediation] = Field(default_factory=list)
    escalation: Escalation = Field(default_factory=Escalation)
    links: list[Link] = Field(default_factory=list)
    runbook: str = ""  # free text for humans (Markdown)

    @model_validator(mode="after")
    def _unique_step_names(self) -> Playbook:
        for steps, what in ((self.diagnostics, "diagnostic"), (self.remediations, "remediation")):
            names = [step.name for step in steps]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} names must be unique: {', '.join(dupes)}")
        return self
