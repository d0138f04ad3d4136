"""Templating that cannot be escaped: Jinja2's sandbox, strict about undefined names.

Templates see ``labels`` and ``annotations`` (of the incident's first firing alert),
``common_labels`` and ``common_annotations`` (the group's), ``alerts`` (every alert's
labels and annotations) and ``incident`` (id, key, severity, status, title).

Label values are data. Where they reach PromQL, the ``promql`` filter turns a value
into a complete string literal (``{{ labels.service | promql }}`` -> ``"checkout"``) and
``promql_re`` into a literal for ``=~`` that matches the value exactly. Where they reach
a matcher (silences, alert queries), ``quote`` and ``quote_re`` do the same for
Alertmanager's syntax.
Command arguments are checked against their own pattern after rendering.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from bot.incidents import Incident
from bot.matchers import promql_regex_literal, promql_string, regex_escape

MAX_OUTPUT = 64 * 1024


class RenderError(Exception):
    """A template failed to render (undefined name, sandbox violation, output too large)."""


def _quote(value: object) -> str:
    """A double-quoted value for Alertmanager matchers (Go escaping)."""
    return json.dumps(str(value), ensure_ascii=False)


def _quote_re(value: object) -> str:
    """A double-quoted regex for a matcher's ``=~`` that matches exactly the value."""
    return _quote(regex_escape(value))


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
    except TemplateError as exc:
        raise RenderError(f"template error: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:  # e.g. {{ "a" + 1 }}
        raise RenderError(f"template error: {type(exc).__name__}: {exc}") from None
    if len(out) > MAX_OUTPUT:
        raise RenderError(f"template output is larger than {MAX_OUTPUT} characters")
    return out


def render_value(env: SandboxedEnvironment, value: Any, ctx: Mapping[str, Any]) -> Any:
    """Render every string inside a JSON-like value (a webhook body), leaving structure alone."""
    if isinstance(value, str):
        return render(env, value, ctx)
    if isinstance(value, list):
        return [render_value(env, item, ctx) for item in value]
    if isinstance(value, dict):
        return {key: render_value(env, item, ctx) for key, item in value.items()}
    return value
