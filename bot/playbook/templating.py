"""Templating that cannot be escaped: Jinja2's sandbox, strict about undefined names.

Templates see ``labels`` and ``annotations`` (of the incident's first firing alert),
``common_labels`` and ``common_annotations`` (the group's), ``alerts`` (every alert's
labels and annotations) and ``incident`` (id, key, severity, status, title).

Label values are data. Where they reach PromQL, the ``promql`` filter turns a value
into a complete string literal (``{{ labels.service | promql }}`` -> ``"checkout"``) and
``promql_re`` into a literal for ``=~`` that matches the value exactly. Where they reach
a matcher (silences, alert queries), ``quote`` and ``quote_re`` do the same for
Alertmanager's syntax. Where they reach a URL, ``path_segment`` turns a value into one
path segment (``{{ labels.service | path_segment }}``: everything but RFC 3986's
unreserved characters percent-encoded, so ``/``, ``?``, ``#``, ``;``, ``%`` and ``\\``
cannot change the path; an empty value, ``.`` or ``..`` is refused with ``UnsafeValue``,
since as a segment it would name the parent or the collection instead), and Jinja's
``urlencode`` does the same for a query string value. ``render_skeleton`` renders a
template with every printed value replaced by one word: the shape the template's own
text gives a URL, which the rendered URL must keep.
Command arguments are checked against their own pattern after rendering.

A template that reads a label the alert does not carry (``labels.namespace``, not under
a ``default`` filter, an ``is defined`` test or an ``if``) is not applicable to that
alert: rendering raises ``NotApplicable`` naming the labels it needs, and
``required_labels`` tells them ahead of time (``alertpilot check`` lists them).
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError, nodes
from jinja2.sandbox import SandboxedEnvironment

from bot.core.incidents import Incident
from bot.core.matchers import promql_regex_literal, promql_string, regex_escape
from bot.errors import RenderingError

MAX_OUTPUT = 64 * 1024


class RenderError(RenderingError):
    """A template failed to render (undefined name, sandbox violation, output too large)."""


class UnsafeValue(RenderError):
    """A filter refused a value it cannot make safe where it is printed (``..`` as a path
    segment): nothing built from the template may be used."""


class NotApplicable(RenderError):
    """The template reads labels the alert does not carry."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = tuple(labels)
        names = ", ".join(f"`{name}`" for name in labels)
        super().__init__(f"not applicable: needs label{'s' if len(labels) > 1 else ''} {names}")


_LABEL_MAPS = ("labels", "common_labels")
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})
_GUARDING_FILTERS = frozenset({"default", "d"})


@functools.lru_cache(maxsize=4096)
def required_labels(source: str) -> frozenset[tuple[str, str]]:
    """``(map, label)`` pairs a template reads with no fallback: ``labels.x`` and
    ``labels["x"]`` (and the same of ``common_labels``), unless under a ``default``
    filter, inside a test (``is defined``) or the condition of an ``if``."""
    try:
        tree = environment().parse(source)
    except TemplateError:
        return frozenset()
    out: set[tuple[str, str]] = set()

    def label_of(node: nodes.Node) -> tuple[str, str] | None:
        if isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name):
            if node.node.name not in _LABEL_MAPS:
                return None
            if isinstance(node, nodes.Getattr):
                return None if node.attr in _MAPPING_METHODS else (node.node.name, node.attr)
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                return node.node.name, node.arg.value
        return None

    def tested(node: nodes.Node) -> frozenset[tuple[str, str]]:
        """The labels a condition looks at: its branches may read them."""
        found = {label_of(n) for n in [node, *node.find_all((nodes.Getattr, nodes.Getitem))]}
        return frozenset(f for f in found if f is not None)

    def walk(node: nodes.Node, guarded: bool, checked: frozenset[tuple[str, str]]) -> None:
        found = label_of(node)
        if found is not None:
            if not guarded and found not in checked:
                out.add(found)
            return
        if isinstance(node, nodes.Filter) and node.name in _GUARDING_FILTERS:
            if node.node is not None:
                walk(node.node, True, checked)
            for arg in node.args:
                walk(arg, guarded, checked)
            return
        if isinstance(node, nodes.Test):
            for child in node.iter_child_nodes():
                walk(child, True, checked)
            return
        if isinstance(node, nodes.If | nodes.CondExpr):
            test = node.test
            inner = checked | (tested(test) if test is not None else frozenset())
            for name, child in node.iter_fields():
                for one in child if isinstance(child, list) else [child]:
                    if isinstance(one, nodes.Node):
                        walk(one, guarded or name == "test", inner)
            return
        for child in node.iter_child_nodes():
            walk(child, guarded, checked)

    walk(tree, False, frozenset())
    return frozenset(out)


def missing_labels(source: str, ctx: Mapping[str, Any]) -> list[str]:
    """The labels ``source`` needs that ``ctx`` lacks, sorted."""
    missing = set()
    for where, name in required_labels(source):
        values = ctx.get(where)
        if isinstance(values, Mapping) and name not in values:
            missing.add(name)
    return sorted(missing)


def _quote(value: object) -> str:
    """A double-quoted value for Alertmanager matchers (Go escaping)."""
    return json.dumps(str(value), ensure_ascii=False)


def _quote_re(value: object) -> str:
    """A double-quoted regex for a matcher's ``=~`` that matches exactly the value."""
    return _quote(regex_escape(value))


def path_segment(value: object) -> str:
    """``str(value)`` as exactly one URL path segment: UTF-8, every byte that is not an
    RFC 3986 unreserved character (``A-Z a-z 0-9 - . _ ~``) percent-encoded.

    So a value cannot end the segment (``/``), start a query or a fragment (``?``, ``#``),
    add path parameters (``;``), smuggle an escape a server decodes again (``%``) or a
    separator some servers accept (``\\``). What encoding cannot neutralise is refused:
    an empty value (the URL would name the collection: ``/flags/`` instead of
    ``/flags/x``) and the dot-segments ``.`` and ``..``, which clients and servers resolve
    to the same or the parent path. A lone surrogate becomes U+FFFD.
    """
    text = str(value).encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if text in ("", ".", ".."):
        shown = "an empty value" if not text else repr(text)
        raise UnsafeValue(
            f"path_segment: {shown} cannot be a URL path segment (it would address "
            f"{'the collection' if not text else 'the same or the parent path'}, not one item)"
        )
    return quote(text, safe="")


SKELETON_WORD = "x"


@functools.cache
def environment() -> SandboxedEnvironment:
    """The one sandboxed environment of playbook templates (shared: it holds no state
    but its filters, and its compiled templates are kept for the next incident)."""
    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
    )
    env.filters["promql"] = promql_string
    env.filters["promql_re"] = promql_regex_literal
    env.filters["quote"] = _quote
    env.filters["quote_re"] = _quote_re
    env.filters["path_segment"] = path_segment
    return env


def context(incident: Incident) -> dict[str, Any]:
    alerts = incident.firing or list(incident.alerts)
    first = alerts[0] if alerts else None
    return {
        "labels": dict(first.labels) if first else dict(incident.common_labels),
        "annotations": dict(first.annotations) if first else dict(incident.common_annotations),
        "common_labels": dict(incident.common_labels),
        "common_annotations": dict(incident.common_annotations),
        "alerts": [
            {"labels": dict(a.labels), "annotations": dict(a.annotations), "status": a.status}
            for a in incident.alerts
        ],
        "incident": {
            "id": incident.id,
            "key": incident.key,
            "severity": incident.severity.value,
            "status": incident.status.value,
            "title": incident.title,
        },
    }


def sample_context(labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A context for checking templates at load time; every label lookup has a value."""
    from collections import defaultdict

    def values(base: Mapping[str, str] | None) -> defaultdict[str, str]:
        out: defaultdict[str, str] = defaultdict(lambda: "example")
        out.update(base or {})
        return out

    return {
        "labels": values(labels),
        "annotations": values(None),
        "common_labels": values(labels),
        "common_annotations": values(None),
        "alerts": [{"labels": values(labels), "annotations": values(None), "status": "firing"}],
        "incident": {
            "id": 1,
            "key": "example",
            "severity": "P2",
            "status": "triggered",
            "title": "example",
        },
    }


# Compiled templates by environment and source. Playbook templates are few and rendered
# for every incident: compiling one costs about fifty times rendering it. Bounded, since
# a source may come from elsewhere.
_COMPILED: weakref.WeakKeyDictionary[SandboxedEnvironment, dict[str, Template]] = (
    weakref.WeakKeyDictionary()
)
COMPILED_LIMIT = 2048


def _compiled(env: SandboxedEnvironment, source: str) -> Template:
    cache = _COMPILED.setdefault(env, {})
    template = cache.get(source)
    if template is None:
        template = env.from_string(source)
        if len(cache) >= COMPILED_LIMIT:
            cache.clear()
        cache[source] = template
    return template


def render(env: SandboxedEnvironment, source: str, ctx: Mapping[str, Any]) -> str:
    try:
        out = _compiled(env, source).render(ctx)
    except UndefinedError as exc:
        missing = missing_labels(source, ctx)
        if missing:
            raise NotApplicable(missing) from None
        raise RenderError(f"template error: {exc}") from None
    except TemplateError as exc:
        raise RenderError(f"template error: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:  # e.g. {{ "a" + 1 }}
        raise RenderError(f"template error: {type(exc).__name__}: {exc}") from None
    if len(out) > MAX_OUTPUT:
        raise RenderError(f"template output is larger than {MAX_OUTPUT} characters")
    return out


_SKELETONS: weakref.WeakKeyDictionary[SandboxedEnvironment, SandboxedEnvironment] = (
    weakref.WeakKeyDictionary()
)


def render_skeleton(env: SandboxedEnvironment, source: str, ctx: Mapping[str, Any]) -> str:
    """``source`` rendered with every printed expression's value replaced by one plain
    word: the URL the template's own text makes, with the same branches taken.

    A URL template means one shape (how many path segments, whether a query string
    follows) whatever the label values; comparing the real rendering with this one tells
    whether a value changed it, even where a filter was left out or did not hold.
    """
    skeleton = _SKELETONS.get(env)
    if skeleton is None:
        skeleton = env.overlay(finalize=lambda value: SKELETON_WORD)
        _SKELETONS[env] = skeleton
    return render(skeleton, source, ctx)


def render_value(env: SandboxedEnvironment, value: Any, ctx: Mapping[str, Any]) -> Any:
    """Render every string inside a JSON-like value (a webhook body), leaving structure alone."""
    if isinstance(value, str):
        return render(env, value, ctx)
    if isinstance(value, list):
        return [render_value(env, item, ctx) for item in value]
    if isinstance(value, dict):
        return {key: render_value(env, item, ctx) for key, item in value.items()}
    return value
