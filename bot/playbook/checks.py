"""Load-time checks of one validated playbook's templates and allowlists.

Every template string is compiled in the sandbox and rendered against
``sample_context()``, so a syntax error, an unknown filter or a sandbox violation fails
at load, not during an incident. On top of that:

- PromQL templates (``query``, ``when``, ``verify.query``) print variables only through
  ``promql``/``promql_re``, and the rendered sample must parse (``lint.promql_problem``;
  ``promtool`` later, in one batch, when the caller asks for it);
- matcher templates (alert queries, silences) print variables only through ``quote``,
  and each renders to exactly one matcher;
- URLs (``http`` diagnostics, webhooks) keep scheme and host literal, print variables
  only through ``path_segment`` in the path and ``urlencode`` (or ``path_segment``) in the
  query string (``lint.url_outputs``; the problem names the playbook, the step and the
  expression), and render to a URL on the allowlist; command executables are on
  ``remediation.allowed_commands``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from bot.core.matchers import MatcherError, parse_matcher
from bot.core.yamlsource import Loc, Sourced, format_loc
from bot.playbook import allowlist, lint
from bot.playbook.model import Action, CommandAction, Playbook, SilenceAction, WebhookAction
from bot.playbook.templating import RenderError, render, sample_context
from bot.settings import Settings


@dataclass(frozen=True)
class Allowlists:
    diagnostic_urls: tuple[str, ...] = ()  # diagnostics.allowed_urls + remediation.allowed_urls
    remediation_urls: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Allowlists:
        remediation = tuple(settings.remediation.allowed_urls)
        return cls(
            diagnostic_urls=(*settings.diagnostics.allowed_urls, *remediation),
            remediation_urls=remediation,
            commands=tuple(settings.remediation.allowed_commands),
        )


@dataclass(frozen=True)
class RenderedQuery:
    """A PromQL template rendered with the sample context, for a batch ``promtool`` check."""

    where: str
    field: str
    query: str


@dataclass
class TemplateChecker:
    env: SandboxedEnvironment
    source: Sourced
    allow: Allowlists
    problems: list[str] = field(default_factory=list)
    queries: list[RenderedQuery] = field(default_factory=list)

    def check(self, playbook: Playbook, prefix: Loc) -> None:
        for i, diag in enumerate(playbook.diagnostics):
            loc = (*prefix, "diagnostics", i)
            who = f"playbook {playbook.name}, diagnostic {diag.name}"
            if diag.kind in ("promql", "promql_range"):
                self.promql(diag.query, (*loc, "query"))
            elif diag.kind == "alerts":
                self.matchers(diag.matchers, (*loc, "matchers"))
            elif diag.kind == "targets":
                self.template(diag.job, (*loc, "job"), (), None)  # a query parameter: sent encoded
            elif diag.kind == "http":
                self.url(
                    diag.url,
                    (*loc, "url"),
                    self.allow.diagnostic_urls,
                    "diagnostics.allowed_urls or remediation.allowed_urls",
                    who,
                )
        for i, step in enumerate(playbook.remediations):
            loc = (*prefix, "remediations", i)
            who = f"playbook {playbook.name}, remediation {step.name}"
            self.action(step.action, (*loc, "action"), who)
            if step.rollback is not None:
                self.action(step.rollback, (*loc, "rollback"), f"{who} (rollback)")
            if step.when is not None:
                self.promql(step.when, (*loc, "when"))
            if step.verify is not None:
                self.promql(step.verify.query, (*loc, "verify", "query"))

    # kinds of template -------------------------------------------------------------

    def promql(self, template: str, loc: Loc) -> None:
        rendered = self.template(template, loc, lint.PROMQL_FILTERS, "promql")
        if rendered is None:
            return
        problem = lint.promql_problem(rendered)
        if problem is not None:
            self.report(loc, f"not valid PromQL once rendered ({problem}): {rendered!r}")
            return
        self.queries.append(RenderedQuery(self.source.where(loc), format_loc(loc), rendered))

    def matchers(self, templates: Iterable[str], loc: Loc) -> None:
        for i, template in enumerate(templates):
            rendered = self.template(template, (*loc, i), lint.MATCHER_FILTERS, "quote")
            if rendered is None:
                continue
            try:
                parse_matcher(rendered)
            except MatcherError as exc:
                self.report((*loc, i), f"not one matcher once rendered: {exc}")

    def url(
        self, template: str, loc: Loc, allowed: tuple[str, ...], setting: str, who: str
    ) -> None:
        head = template.split("{{", 1)[0].split("{%", 1)[0]
        if "{{" in template or "{%" in template:
            _, sep, rest = head.partition("://")
            if not sep or "/" not in rest:
                self.report(loc, "scheme and host must be literal; template only the path")
                return
        try:
            unfiltered = lint.url_outputs(self.env, template)
        except TemplateSyntaxError:
            unfiltered = []  # reported by template() below
        if unfiltered:
            first = unfiltered[0]
            names = ", ".join(f"{{{{ {u.expression} }}}}" for u in unfiltered)
            where = "URL" if first.part == "URL" else f"URL {first.part}"
            self.report(
                loc,
                f"{who}: {names} printed in the {where} without the {first.wanted} filter: "
                f"write {{{{ {first.expression} | {first.wanted} }}}} so a label value stays "
                f"{'one query value' if first.part == 'query' else 'one path segment'} and "
                "cannot change where the call goes",
            )
            return
        rendered = self.template(template, loc, (), None)
        if rendered is None:
            return
        problem = allowlist.url_problem(rendered, allowed)
        if problem is not None:
            self.report(loc, f"URL {rendered!r} is {problem} ({setting})")
            return
        problem = allowlist.characters_problem(rendered)  # it is sent as it is, unencoded
        if problem is not None:
            self.report(loc, f"URL {rendered!r} {problem}")

    def action(self, action: Action, loc: Loc, who: str) -> None:
        if isinstance(action, SilenceAction):
            if not action.matchers:
                self.report((*loc, "matchers"), "a silence needs at least one matcher")
            self.matchers(action.matchers, (*loc, "matchers"))
        elif isinstance(action, WebhookAction):
            self.url(
                action.url,
                (*loc, "url"),
                self.allow.remediation_urls,
                "remediation.allowed_urls",
                who,
            )
            self.body(action.body, (*loc, "body"))
            for name, value in action.headers.items():
                self.template(value, (*loc, "headers", name), (), None)
        elif isinstance(action, CommandAction):
            executable = action.argv[0]
            assert isinstance(executable, str)  # the model requires a literal argv[0]
            if not allowlist.command_allowed(executable, self.allow.commands):
                self.report(
                    (*loc, "argv", 0),
                    f"executable {executable!r} is not on remediation.allowed_commands",
                )
            for i, arg in enumerate(action.argv):
                if not isinstance(arg, str):
                    self.template(arg.template, (*loc, "argv", i, "template"), (), None)

    def body(self, value: Any, loc: Loc) -> None:
        if isinstance(value, str):
            self.template(value, loc, (), None)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.body(item, (*loc, i))
        elif isinstance(value, dict):
            for key, item in value.items():
                self.body(item, (*loc, str(key)))

    # one template ------------------------------------------------------------------

    def template(
        self, template: str, loc: Loc, filters: Iterable[str], filter_hint: str | None
    ) -> str | None:
        """Compile, lint and render one template; None (and a problem) if it fails."""
        try:
            self.env.from_string(template)
        except TemplateSyntaxError as exc:
            line = f" (template line {exc.lineno})" if exc.lineno and "\n" in template else ""
            self.report(loc, f"template syntax error{line}: {exc.message}")
            return None
        if filter_hint is not None:
            unquoted = lint.unquoted_outputs(self.env, template, filters)
            if unquoted:
                names = ", ".join(f"{{{{ {name} }}}}" for name in unquoted)
                self.report(
                    loc,
                    f"{names} printed without the {filter_hint} filter: write "
                    f"{{{{ {unquoted[0]} | {filter_hint} }}}}"
                    f"{' (promql_re after =~)' if filter_hint == 'promql' else ''} "
                    f"so a value cannot change the "
                    f"{'query' if filter_hint == 'promql' else 'matcher'}",
                )
                return None
            wanted = lint.REGEX_FILTER[filter_hint]
            misused = lint.regex_outputs(self.env, template, wanted)
            if misused:
                self.report(
                    loc,
                    f"{{{{ {misused[0]} }}}} after a regex operator (=~ or !~) needs the "
                    f"{wanted} filter, so the value is matched exactly, not as a pattern",
                )
                return None
        try:
            return render(self.env, template, sample_context())
        except RenderError as exc:
            self.report(loc, str(exc))
            return None

    def report(self, loc: Loc, message: str) -> None:
        self.problems.append(f"{self.source.where(loc)}: {format_loc(loc)}: {message}")
