"""``http``: a GET of a URL on the allowlist; status, latency and an optional JSON field.

The rendered URL must be on ``diagnostics.allowed_urls`` or ``remediation.allowed_urls``
(``bot.playbook.allowlist``), checked after rendering in the form it is sent (it is sent
as it is, not requoted), with no path a server reads as another and the shape of its
template (as the webhook action checks it), so a label value cannot point it
elsewhere; redirects are not followed. Network errors are retried once; an
error status is an answer, not retried, and fails the step when it is not
``expect_status``. The value is the ``json_field`` (dotted path, list indexes allowed)
when given, else the latency in seconds.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import JsonValue
from yarl import URL

from bot.diagnostics.base import DiagnosticStep, StepError, StepInput
from bot.diagnostics.judge import Outcome, Point
from bot.diagnostics.result import DiagnosticStatus
from bot.playbook.allowlist import characters_problem, shape_problem, url_problem
from bot.playbook.model import HttpDiagnostic
from bot.playbook.templating import render_skeleton
from bot.upstream.http import request

MAX_BODY = 1024 * 1024
_MISSING = object()


def dig(document: Any, path: str) -> Any:
    """``status.db`` or ``items.0.value`` inside a JSON document; ``_MISSING`` if absent."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _short(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 120 else text[:117] + "..."


class HttpStep(DiagnosticStep[HttpDiagnostic]):
    kind = "http"
    upstream = "service"

    async def _invoke(self, spec: HttpDiagnostic, step: StepInput) -> Outcome:
        url = self.render(spec.url, step)
        problem = url_problem(url, self.sources.allowed_urls)
        if problem is not None:
            raise StepError(
                f"URL {url!r} is {problem} (diagnostics.allowed_urls, remediation.allowed_urls)"
            )
        problem = characters_problem(url)
        if problem is not None:
            raise StepError(f"URL {url!r} {problem}")
        problem = shape_problem(url, render_skeleton(self.sources.env, spec.url, step.context))
        if problem is not None:
            raise StepError(f"URL {url!r} does not keep its template's shape: {problem}")
        try:
            URL(url, encoded=True)
        except (ValueError, TypeError) as exc:
            raise StepError(f"URL {url!r} does not parse: {exc}") from None
        resp = await request(
            self.sources.http,
            "GET",
            url,
            timeout=spec.timeout,
            retries=1,
            retry_statuses=frozenset(),
            max_body=MAX_BODY,
            allow_redirects=False,
            encoded=True,
            headers={"Accept": "application/json, */*;q=0.5"},
            breaker=None if self.sources.breakers is None else self.sources.breakers.get(url),
        )
        details: dict[str, JsonValue] = {"status": resp.status, "latency": round(resp.elapsed, 4)}
        failure = None
        if spec.expect_status is not None and resp.status != spec.expect_status:
            failure = f"HTTP {resp.status} (expected {spec.expect_status})"
        if spec.json_field is None:
            return Outcome(
                DiagnosticStatus.OK,
                [Point({}, resp.elapsed)],
                query=url,
                unit=spec.unit or "seconds",
                failure=failure,
                details=details,
            )
        try:
            document = resp.json()
        except ValueError:
            raise StepError(f"HTTP {resp.status}: the answer is not JSON") from None
        found = dig(document, spec.json_field)
        if found is _MISSING:
            return Outcome(
                DiagnosticStatus.NO_DATA,
                query=url,
                error=f"HTTP {resp.status}: no field {spec.json_field!r} in the answer",
                details=details,
            )
        details["field"] = found if isinstance(found, str | int | float | bool) else _short(found)
        if isinstance(found, bool | int | float):
            value = float(found)
            if math.isfinite(value):
                return Outcome(
                    DiagnosticStatus.OK, [Point({}, value)], query=url, failure=failure,
                    details=details,
                )  # fmt: skip
        shown = f"{spec.json_field} = {_short(found)}"
        if spec.expect is not None:
            failure = "; ".join(filter(None, [failure, "not a number"]))
        return Outcome(
            DiagnosticStatus.OK,
            [Point({}, None)],
            query=url,
            shown=shown,
            failure=failure,
            details=details,
        )
