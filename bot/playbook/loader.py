"""Reading playbook files: every problem named by file, line and field, all at once.

``playbooks.paths`` lists files and directories; a directory contributes every
``*.yaml``/``*.yml`` below it (hidden files skipped), all in sorted order, which is the
load order the registry uses to break ties of ``order``. A file holds one playbook
mapping, a list of them, or ``{playbooks: [...]}`` (several YAML documents are fine).
Playbooks are code: ``${VAR}`` is not substituted in them.

Problems look like ``playbooks/x.yaml:12: playbooks[0].diagnostics[1].query: message``.
``check_playbooks`` returns them all; ``load_playbooks`` raises ``ConfigError`` with all
of them, so a server never starts with a playbook that would fail mid-incident.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core.yamlsource import Loc, Sourced, format_loc, load_text, validate_source
from bot.errors import ConfigError
from bot.notify.links import link_problem
from bot.playbook import lint
from bot.playbook.checks import Allowlists, RenderedQuery, TemplateChecker
from bot.playbook.model import Playbook
from bot.playbook.registry import PlaybookSet
from bot.playbook.templating import environment
from bot.settings import Settings
from bot.shipped import shipped

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml")


@dataclass
class LoadReport:
    """What loading found: the valid playbooks, in load order, every problem, and
    warnings (links people could not open)."""

    playbooks: list[Playbook] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


SHIPPED_PLAYBOOKS = "playbooks"


def playbook_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """The files to load, in order, and the paths that do not exist. The relative path
    ``playbooks`` that is not in the working directory is the shipped playbooks."""
    files: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists() and str(raw) == SHIPPED_PLAYBOOKS:
            # the default config's "playbooks", where there is no such folder (an
            # installed alertpilot run from elsewhere): the playbooks it ships
            path = shipped(SHIPPED_PLAYBOOKS)
        if path.is_dir():
            found = [
                p
                for p in path.rglob("*")
                if p.suffix in SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
            files.extend(sorted(found))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: playbooks.paths: no such file or directory")
    unique = list(dict.fromkeys(files))
    return unique, problems


def _items(source: Sourced) -> tuple[list[tuple[Loc, Any]], list[str]]:
    """The playbook mappings in one YAML document, each with its key path."""
    data = source.data
    if isinstance(data, dict) and "playbooks" in data:
        extra = sorted(str(k) for k in data if k != "playbooks")
        problems = [f"{source.where((k,))}: {k}: unknown key" for k in extra]
        listed = data["playbooks"]
        if not isinstance(listed, list):
            where = source.where(("playbooks",))
            return [], [*problems, f"{where}: playbooks: expected a list of playbooks"]
        return [(("playbooks", i), item) for i, item in enumerate(listed)], problems
    if isinstance(data, dict):
        return [((), data)], []
    if isinstance(data, list):
        return [((i,), item) for i, item in enumerate(data)], []
    return [], [
        f"{source.where(())}: expected a playbook mapping, a list of playbooks "
        "or {playbooks: [...]}"
    ]


def check_playbooks(
    paths: Iterable[str | Path],
    allow: Allowlists,
    *,
    promtool: str | None = None,
    runbook_base: str | None = None,
) -> LoadReport:
    """Load and check every playbook; collect every problem instead of stopping. A link
    that Slack and PagerDuty could not show as one (a path with no
    ``links.runbook_base_url`` to resolve it against, a scheme other than http(s)) is a
    warning: the playbook works, its link is left out."""
    report = LoadReport()
    report.files, report.problems = playbook_files(paths)
    env = environment()
    seen: dict[str, str] = {}
    queries: list[RenderedQuery] = []
    for path in report.files:
        try:
            text = path.read_text(encoding="utf-8")
            docs = load_text(text, str(path), env=None)
        except OSError as exc:
            report.problems.append(f"{path}: cannot read: {exc.strerror}")
            continue
        except UnicodeDecodeError:
            report.problems.append(f"{path}: not UTF-8 text")
            continue
        except ConfigError as exc:
            report.problems.extend(exc.problems)
            continue
        for source in docs:
            items, problems = _items(source)
            report.problems.extend(problems)
            for prefix, item in items:
                if not isinstance(item, dict):
                    report.problems.append(
                        f"{source.where(prefix)}: {format_loc(prefix)}: expected a playbook "
                        f"mapping, got {type(item).__name__}"
                    )
                    continue
                try:
                    playbook = validate_source(Playbook, source, item, prefix)
                except ConfigError as exc:
                    report.problems.extend(exc.problems)
                    continue
                checker = TemplateChecker(env, source, allow)
                checker.check(playbook, prefix)
                report.problems.extend(checker.problems)
                queries.extend(checker.queries)
                where = source.where((*prefix, "name"))
                if playbook.name in seen:
                    report.problems.append(
                        f"{where}: {format_loc((*prefix, 'name'))}: playbook name "
                        f"{playbook.name!r} is already used at {seen[playbook.name]}"
                    )
                    continue
                seen[playbook.name] = where
                if not checker.problems:
                    report.playbooks.append(playbook)
                    report.warnings.extend(_link_warnings(source, prefix, playbook, runbook_base))
    if promtool is not None:
        report.problems.extend(_promtool(queries, promtool))
    report.problems.sort(key=_position)
    return report


def _link_warnings(
    source: Sourced, prefix: Loc, playbook: Playbook, runbook_base: str | None
) -> list[str]:
    out = []
    for i, item in enumerate(playbook.links):
        problem = link_problem(item.url, runbook_base)
        if problem is not None:
            loc = (*prefix, "links", i, "url")
            out.append(
                f"{source.where(loc)}: {format_loc(loc)}: {item.url!r} {problem}"
                " (left out of Slack and PagerDuty)"
            )
    return out


def _position(problem: str) -> tuple[str, int]:
    """Sort key: file, then line (``path:12: ...``); stable for the rest."""
    head = problem.partition(": ")[0]
    path, _, line = head.rpartition(":")
    return (path, int(line)) if path and line.isdigit() else (head, 0)


def _promtool(queries: Sequence[RenderedQuery], promtool: str) -> list[str]:
    found = lint.promtool_problems([q.query for q in queries], promtool)
    return [
        f"{queries[i].where}: {queries[i].field}: not valid PromQL once rendered "
        f"({message}): {queries[i].query!r}"
        for i, message in sorted(found.items())
    ]


def load_playbooks(settings: Settings, *, promtool: str | None = None) -> PlaybookSet:
    """The playbooks ``settings.playbooks.paths`` name; ConfigError listing every problem."""
    report = check_playbooks(
        settings.playbooks.paths,
        Allowlists.from_settings(settings),
        promtool=promtool,
        runbook_base=settings.links.runbook_base_url,
    )
    if report.problems:
        raise ConfigError([*report.problems, *default_paths_hint(settings, report.problems)])
    for warning in report.warnings:
        log.warning("playbook link: %s", warning)
    log.info("loaded %d playbook(s) from %d file(s)", len(report.playbooks), len(report.files))
    return PlaybookSet(report.playbooks)


def default_paths_hint(settings: Settings, problems: list[str]) -> list[str]:
    """Why a config that names no playbooks gets allowlist errors: ``playbooks.paths``
    defaults to ``[playbooks]``, the shipped ones, whose URLs and commands only the
    shipped config allows."""
    if "playbooks" in settings.model_fields_set:
        return []
    if not any("allowlist" in p or "allowed_commands" in p for p in problems):
        return []
    return [
        "(the config has no playbooks section, so playbooks.paths is its default, "
        "[playbooks]: the shipped playbooks, whose URLs and commands only "
        "configs/alertpilot.yaml allows. Set playbooks.paths to your own, or [] for none, "
        "or copy the diagnostics and remediation sections of configs/alertpilot.yaml)"
    ]
