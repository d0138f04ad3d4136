"""Static checks on playbook templates: unquoted values, and PromQL that does not parse.

``unquoted_outputs`` walks a template's Jinja AST: in a PromQL template every printed
expression that reads a variable (``labels.*``, ``annotations.*``, a ``set`` or loop
variable, ...) must end with the ``promql`` or ``promql_re`` filter, in a matcher template
with ``quote`` or ``quote_re``. Printing a value any other way lets a label value write
PromQL or matchers. ``regex_outputs`` then asks for the regex form right after ``=~`` or
``!~``: a plain quoted value there is a pattern, and ``instance=".*"`` would match every
instance (a silence for all of them, a check of the wrong target).

``url_outputs`` does the same for URL templates (webhooks, ``http`` diagnostics), by
where the value lands: in the path (before the first literal ``?`` or ``#``) only
through ``path_segment``, so a value is one segment and cannot add ``/``, ``..``, a query
or a fragment; in the query string through ``urlencode`` (or ``path_segment``).

``promql_problem`` is a light check of a rendered query: string literals terminate and
brackets balance. ``promtool_problems`` asks ``promtool check rules`` to parse many
queries at once, when the binary is there (``alertpilot check`` uses it).
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

log = logging.getLogger(__name__)

PROMQL_FILTERS = frozenset({"promql", "promql_re"})
MATCHER_FILTERS = frozenset({"quote", "quote_re"})
REGEX_FILTER = {"promql": "promql_re", "quote": "quote_re"}  # what a value after =~ needs
PATH_FILTER = "path_segment"
QUERY_FILTERS = frozenset({"urlencode", PATH_FILTER})
URL_FILTERS = QUERY_FILTERS
_REGEX_OPERATOR = re.compile(r"[=!]~\s*$")
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_PROMTOOL_ERROR = re.compile(r'group "q(\d+)", rule \d+, "q\d+": (.*)$')


def _describe(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_describe(node.node)}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return f"{_describe(node.node)}[{node.arg.value!r}]"
    if isinstance(node, nodes.Filter) and node.node is not None:
        return f"{_describe(node.node)} | {node.name}"
    return "an expression"


def unquoted_outputs(env: SandboxedEnvironment, source: str, filters: Iterable[str]) -> list[str]:
    """Printed expressions that read variables without ending in one of ``filters``."""
    allowed = frozenset(filters)
    found: list[str] = []
    for output in env.parse(source).find_all(nodes.Output):
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData | nodes.Const):
                continue
            if isinstance(node, nodes.Filter) and node.name in allowed:
                continue
            if not isinstance(node, nodes.Name) and next(node.find_all(nodes.Name), None) is None:
                continue  # a constant expression such as {{ 60 * 5 }}
            found.append(_describe(node))
    return found


def regex_outputs(env: SandboxedEnvironment, source: str, regex_filter: str) -> list[str]:
    """Printed expressions right after ``=~`` or ``!~`` whose last filter is not
    ``regex_filter`` (the source is lexed: the text before each ``{{`` is known there,
    which the AST does not keep)."""
    found: list[str] = []
    before = ""  # template text since the last printed expression (block tags skipped)
    printed: list[tuple[str, str]] | None = None  # the tokens of the expression being read
    for _, kind, value in env.lex(source):
        if kind == "data":
            before += value
        elif kind == "variable_begin":
            printed = []
        elif kind == "variable_end" and printed is not None:
            reads = any(token == "name" for token, _ in printed)  # not {{ "a|b" }}
            after_regex = _REGEX_OPERATOR.search(before) is not None
            if after_regex and reads and _last_filter(printed) != regex_filter:
                found.append("".join(v for _, v in printed).replace("|", " | "))
            printed, before = None, ""
        elif printed is not None and kind != "whitespace":
            printed.append((kind, value))
    return found


@dataclass(frozen=True)
class UrlOutput:
    """A printed expression of a URL template that lacks the filter its place needs."""

    expression: str
    part: str  # "path", "query", or "URL" (not placed: the AST pass found it)
    wanted: str  # the filter to write


def url_outputs(env: SandboxedEnvironment, source: str) -> list[UrlOutput]:
    """Printed expressions of a URL template that read variables without the filter their
    place needs: ``path_segment`` in the path, ``urlencode`` (or ``path_segment``) after the
    first literal ``?`` or ``#``.

    Two passes, since neither sees everything: the lexed source says where each ``{{``
    stands (the AST keeps no columns) and which filter its tokens end with; when that
    finds nothing, the AST says whether each expression as a whole ends in one of the
    filters (``{{ a if c else b | path_segment }}`` filters only ``b``).
    """
    found: list[UrlOutput] = []
    before = ""  # template text since the start (block tags skipped)
    printed: list[tuple[str, str]] | None = None
    for _, kind, value in env.lex(source):
        if kind == "data":
            before += value
        elif kind == "variable_begin":
            printed = []
        elif kind == "variable_end" and printed is not None:
            in_query = "?" in before or "#" in before
            allowed = QUERY_FILTERS if in_query else frozenset({PATH_FILTER})
            if _reads(printed) and _last_filter(printed) not in allowed:
                text = "".join(v for _, v in printed).replace("|", " | ")
                part, wanted = ("query", "urlencode") if in_query else ("path", PATH_FILTER)
                found.append(UrlOutput(text, part, wanted))
            printed = None
        elif printed is not None and kind != "whitespace":
            printed.append((kind, value))
    if found:
        return found
    return [  # ends in a filter token, not as a whole expression
        UrlOutput(name, "URL", PATH_FILTER) for name in unquoted_outputs(env, source, URL_FILTERS)
    ]


# names the lexer reports that read nothing: constants and keywords
_CONSTANT_NAMES = frozenset(
    {"true", "false", "none", "True", "False", "None", "is", "not", "and", "or", "in", "if"}
    | {"else"}
)


def _reads(tokens: Sequence[tuple[str, str]]) -> bool:
    """Whether a lexed expression names a variable (a filter's or test's name does not)."""
    previous: tuple[str, str] | None = None
    for token in tokens:
        if (
            token[0] == "name"
            and token[1] not in _CONSTANT_NAMES
            and previous not in (("operator", "|"), ("name", "is"), ("operator", "."))
        ):
            return True
        previous = token
    return False


def _last_filter(tokens: Sequence[tuple[str, str]]) -> str | None:
    """The filter an expression ends with (``x | f``, ``x | f(1)``), or None."""
    depth, pipe = 0, -1
    for i, token in enumerate(tokens):
        if token[0] != "operator":
            continue
        if token[1] in "([{":
            depth += 1
        elif token[1] in ")]}":
            depth -= 1
        elif token[1] == "|" and depth == 0:
            pipe = i
    rest = tokens[pipe + 1 :]
    if pipe < 0 or not rest or rest[0][0] != "name":
        return None
    call = rest[1:]
    if call and (call[0] != ("operator", "(") or call[-1] != ("operator", ")")):
        return None  # something follows the filter: ``x | f ~ y``
    return rest[0][1]


def promql_problem(query: str) -> str | None:
    """None if string literals terminate and brackets balance, else what is wrong."""
    if not query.strip():
        return "the query is empty"
    stack: list[tuple[str, int]] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch in "\"'":
            j = i + 1
            while j < n and query[j] != ch:
                if query[j] == "\n":
                    return f"string literal at offset {i} runs past the end of the line"
                j += 2 if query[j] == "\\" else 1
            if j >= n:
                return f"string literal at offset {i} is not terminated"
            i = j + 1
            continue
        if ch == "`":
            j = query.find("`", i + 1)
            if j < 0:
                return f"raw string at offset {i} is not terminated"
            i = j + 1
            continue
        if ch == "#":
            j = query.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if ch in "([{":
            stack.append((ch, i))
        elif ch in _CLOSERS:
            if not stack or stack[-1][0] != _CLOSERS[ch]:
                return f"unexpected {ch!r} at offset {i}"
            stack.pop()
        i += 1
    if stack:
        opener, at = stack[-1]
        return f"{opener!r} at offset {at} is never closed"
    return None


def promtool_problems(
    queries: Sequence[str], promtool: str, *, timeout: float = 30.0
) -> dict[int, str]:
    """Parse every query with ``promtool check rules``; map query index -> parse error.

    A promtool that cannot run, or answers in a way this does not understand, yields
    no problems (the light check still applies) and a warning in the log.
    """
    if not queries:
        return {}
    groups = [
        {"name": f"q{i}", "rules": [{"record": f"q{i}", "expr": query}]}
        for i, query in enumerate(queries)
    ]
    with tempfile.TemporaryDirectory(prefix="alertpilot-check-") as tmp:
        path = Path(tmp) / "queries.yml"
        path.write_text(yaml.safe_dump({"groups": groups}, allow_unicode=True))
        try:
            done = subprocess.run(
                [promtool, "check", "rules", "--lint=none", str(path)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("promtool could not check the queries: %s", exc)
            return {}
    found: dict[int, str] = {}
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        match = _PROMTOOL_ERROR.search(line)
        if match:
            found[int(match.group(1))] = match.group(2).removeprefix("could not parse expression: ")
    if done.returncode != 0 and not found:
        log.warning("promtool failed without naming a query: %s", done.stderr.strip()[:500])
    return found
