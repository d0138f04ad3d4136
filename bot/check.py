"""``alertpilot check``: the config, every playbook and the prompt templates, all problems
at once, each as ``file:line: field: message``; and warnings, among them every link in
the playbooks and in the rules (``rules.paths``: their ``runbook_url`` annotations) that
Slack and PagerDuty could not show as a link a phone opens.

PromQL templates get the full parser (``promtool check rules``) when ``promtool`` is
installed, and the light check (strings terminate, brackets balance) otherwise.
Prompt templates are the shipped ``configs/prompts`` and ``llm.prompts_dir``; each
``*.j2`` file must parse, and the narrative's own check must find every template.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from bot.core import regex
from bot.core.matchers import MatchOp
from bot.core.yamlsource import Loc, format_loc, load_text
from bot.errors import ConfigError
from bot.notify.links import link_problem
from bot.playbook import allowlist
from bot.playbook.checks import Allowlists
from bot.playbook.loader import check_playbooks, default_paths_hint
from bot.playbook.model import CommandAction, Playbook, StepMode, TemplatedArg
from bot.playbook.templating import (
    RenderError,
    environment,
    render,
    required_labels,
    sample_context,
)
from bot.settings import Settings, load_settings
from bot.shipped import shipped

PROMTOOL = "/usr/bin/promtool"


@dataclass
class CheckReport:
    settings: Settings | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # from the playbooks; see cli.risky
    label_needs: list[str] = field(default_factory=list)  # steps an alert may not fit
    playbooks: int = 0
    playbook_files: int = 0
    prompt_files: int = 0


def find_promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.access(PROMTOOL, os.X_OK):
        found = PROMTOOL
    return found


def prompt_problems(directories: Iterable[Path]) -> tuple[int, list[str]]:
    """Parse every ``*.j2`` template (syntax only: filters belong to the narrative)."""
    env = SandboxedEnvironment()
    count, problems = 0, []
    for directory in directories:
        if not directory.is_dir():
            problems.append(f"{directory}: llm.prompts_dir: no such directory")
            continue
        for path in sorted(directory.glob("*.j2")):
            count += 1
            try:
                env.parse(path.read_text(encoding="utf-8"), filename=str(path))
            except TemplateSyntaxError as exc:
                problems.append(f"{path}:{exc.lineno}: template syntax error: {exc.message}")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: cannot read: {exc}")
    return count, problems


def _narrative_problems(settings: Settings, already: list[str]) -> list[str]:
    from bot.narrative.templates import DEFAULT_DIR, PromptBook

    where = settings.llm.prompts_dir or str(DEFAULT_DIR)
    return [
        f"{where}: {problem}"
        for problem in PromptBook(settings.llm.prompts_dir).check()
        if not any(f"/{problem.split(':', 1)[0]}:" in seen for seen in already)
    ]


def check_config(config: str | Path, *, promtool: str | None = None) -> CheckReport:
    report = CheckReport()
    try:
        settings = report.settings = load_settings(config)
    except ConfigError as exc:
        report.problems.extend(exc.problems)
        return report
    loaded = check_playbooks(
        settings.playbooks.paths,
        Allowlists.from_settings(settings),
        promtool=promtool,
        runbook_base=settings.links.runbook_base_url,
    )
    report.problems.extend(loaded.problems)
    report.problems.extend(default_paths_hint(settings, loaded.problems))
    report.warnings.extend(risky_steps(settings, loaded.playbooks))
    report.warnings.extend(loaded.warnings)
    report.warnings.extend(
        rule_link_warnings(settings.rules.paths, settings.links.runbook_base_url)
    )
    report.label_needs.extend(label_needs(loaded.playbooks))
    report.playbooks, report.playbook_files = len(loaded.playbooks), len(loaded.files)

    from bot.narrative.templates import DEFAULT_DIR

    directories = [DEFAULT_DIR] if DEFAULT_DIR.is_dir() else []
    if settings.llm.prompts_dir:
        directories.append(Path(settings.llm.prompts_dir))
    report.prompt_files, problems = prompt_problems(directories)
    report.problems.extend(problems)
    report.problems.extend(_narrative_problems(settings, problems))
    return report


RULE_SUFFIXES = (".yml", ".yaml")
SHIPPED_RULES = "rules"
RUNBOOK_ANNOTATIONS = ("runbook_url", "runbook")


def rule_files(paths: Iterable[str]) -> tuple[list[Path], list[str]]:
    """The rule files under ``rules.paths`` and the paths that are not there; the
    relative path ``rules`` that is not in the working directory is the shipped rules."""
    files: list[Path] = []
    missing: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists() and raw == SHIPPED_RULES:
            path = shipped(SHIPPED_RULES)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in RULE_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            missing.append(f"{path}: rules.paths: no such file or directory")
    return list(dict.fromkeys(files)), missing


def _runbook_urls(data: object) -> Iterator[tuple[Loc, str, str]]:
    """(key path, alert, value) of each runbook annotation in a rule file's data."""
    groups = data.get("groups") if isinstance(data, dict) else None
    for g, group in enumerate(groups if isinstance(groups, list) else []):
        rules = group.get("rules") if isinstance(group, dict) else None
        for r, rule in enumerate(rules if isinstance(rules, list) else []):
            annotations = rule.get("annotations") if isinstance(rule, dict) else None
            if not isinstance(annotations, dict):
                continue
            for name in RUNBOOK_ANNOTATIONS:
                url = annotations.get(name)
                if isinstance(url, str):
                    loc = ("groups", g, "rules", r, "annotations", name)
                    yield loc, str(rule.get("alert", "?")), url


def rule_link_warnings(paths: Iterable[str], runbook_base: str | None) -> list[str]:
    """Every ``runbook_url`` in the rule files that is no link people could open."""
    files, out = rule_files(paths)
    for path in files:
        try:
            docs = load_text(path.read_text(encoding="utf-8"), str(path), env=None)
        except (OSError, UnicodeDecodeError) as exc:
            out.append(f"{path}: cannot read: {exc}")
            continue
        except ConfigError as exc:
            out.extend(exc.problems)
            continue
        for doc in docs:
            for loc, alert, url in _runbook_urls(doc.data):
                problem = link_problem(url, runbook_base)
                if problem is not None:
                    out.append(f"{doc.where(loc)}: {format_loc(loc)}: {alert}: {url!r} {problem}")
    return out


def risky_remediation(settings: Settings) -> list[str]:
    """Remediation and approval settings that let more through than people expect."""
    out = []
    remediation = settings.remediation
    if remediation.mode == "auto":
        broad = [url for url in remediation.allowed_urls if allowlist.is_broad_url(url)]
        if broad:
            out.append(
                "remediation.mode is auto and remediation.allowed_urls allows whole hosts "
                f"({', '.join(broad)}): list the paths steps may call"
            )
    shells = [c for c in remediation.allowed_commands if allowlist.is_interpreter(c)]
    if shells and remediation.mode != "off":
        out.append(
            f"remediation.allowed_commands holds an interpreter ({', '.join(shells)}): "
            "a step can then run anything"
        )
    if settings.slack is not None and not settings.slack.approvers:
        out.append(
            "slack.approvers is empty: nobody can approve remediations from Slack (only "
            "`alertpilot approve` and the API can)"
        )
    return out


# Values no command argument built from alert labels should accept unseen: an option,
# a path out of where it points, a word break, a shell expansion (no shell runs, but
# the command itself may treat them specially).
_PROBES = ("--output=/etc/passwd", "../../etc", "a b", "$(id)")


def _everywhere(value: str) -> defaultdict[str, str]:
    """A label mapping in which every name holds ``value``."""
    return defaultdict(lambda: value)


def _lets_in_a_probe(arg: TemplatedArg) -> bool:
    """Whether the argument, rendered with a probe in every label, matches its pattern."""
    env = environment()
    for probe in _PROBES:
        ctx = sample_context()
        for key in ("labels", "annotations", "common_labels", "common_annotations"):
            ctx[key] = _everywhere(probe)
        ctx["alerts"] = [
            {"labels": ctx["labels"], "annotations": ctx["annotations"], "status": "firing"}
        ]
        try:
            value = render(env, arg.template, ctx)
        except RenderError:
            continue
        if regex.compile(arg.pattern).fullmatch(value):
            return True
    return False


def _templates(value: object) -> Iterator[str]:
    """Every template string inside a step's settings (queries, URLs, argv, bodies)."""
    if isinstance(value, str):
        if "{{" in value or "{%" in value:
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _templates(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _templates(item)


def label_needs(playbooks: Iterable[Playbook]) -> list[str]:
    """Steps whose templates read labels that the playbook's match does not guarantee:
    for an alert without them the step is not applicable (it says so, and runs not)."""
    out = []
    for playbook in playbooks:
        guaranteed = {
            m.name for m in playbook.match if m.op in (MatchOp.EQ, MatchOp.RE) and not m.matches({})
        }
        steps = [*playbook.diagnostics, *playbook.remediations]
        by_need: dict[tuple[str, ...], list[str]] = {}
        for step in steps:
            needed = {
                label
                for source in _templates(step.model_dump(mode="json"))
                for _, label in required_labels(source)
            } - guaranteed
            if needed:
                by_need.setdefault(tuple(sorted(needed)), []).append(step.name)
        if by_need:
            parts = [
                f"{', '.join(names)} need{'s' if len(names) == 1 else ''} "
                + ", ".join(f"`{label}`" for label in labels)
                for labels, names in by_need.items()
            ]
            out.append(
                f"{playbook.name}: steps read labels its match does not require (for an alert"
                f" without them they are not applicable): {'; '.join(parts)}"
            )
    return out


def risky_steps(settings: Settings, playbooks: Iterable[Playbook]) -> list[str]:
    """Steps that run by themselves with an argument pattern that lets such values in."""
    if settings.remediation.mode != "auto":
        return []
    out = []
    for playbook in playbooks:
        for step in playbook.remediations:
            if step.mode != StepMode.AUTO:
                continue
            for action in (step.action, step.rollback):
                if not isinstance(action, CommandAction):
                    continue
                for i, arg in enumerate(action.argv):
                    if isinstance(arg, TemplatedArg) and _lets_in_a_probe(arg):
                        out.append(
                            f"{playbook.name}/{step.name}: remediation.mode is auto and "
                            f"argv[{i}]'s pattern {arg.pattern!r} accepts values like "
                            "options, paths or spaces: narrow it, or make the step approval"
                        )
    return out
