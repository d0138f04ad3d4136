"""``webhook``: an HTTP call to a URL on ``remediation.allowed_urls`` with a templated JSON body.

The URL is rendered, then checked against the allowlist as text and again as the client
will send it (after normalisation), so a label value cannot move the call to another
host or out of the allowed path. Header values are templates too, refused if they would
hold a line break; they are sent but never recorded (they may hold credentials). POST
and PATCH are not retried (a remediation must not apply twice); PUT and DELETE are
retried once on a network error or a 5xx.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from yarl import URL

from bot.httpclient import HttpError, request
from bot.playbook import allowlist
from bot.playbook.model import WebhookAction
from bot.playbook.templating import NotApplicable, RenderError, render_value
from bot.remediation.actions.base import ActionContext, ActionKind, Call, Connections
from bot.remediation.results import Guard, Refused, StepResult, StepStatus, truncate

MAX_RESPONSE = 2000
_IDEMPOTENT = frozenset({"PUT", "DELETE"})


class WebhookCall(Call):
    kind: Literal["webhook"] = "webhook"
    method: str
    url: str
    body: Any = None
    header_names: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)
    timeout: float

    def describe(self) -> str:
        return f"{self.method} {self.url}"


class WebhookKind(ActionKind[WebhookAction, WebhookCall]):
    kind = "webhook"

    def __init__(self, allowed_urls: list[str]) -> None:
        self.allowed_urls = list(allowed_urls)

    def check_url(self, url: str) -> str:
        """The URL as it will be sent, or Refused."""
        if any(ch.isspace() or not ch.isprintable() for ch in url):
            raise Refused(Guard.ALLOWLIST, f"URL {url!r} holds whitespace or control characters")
        problem = allowlist.url_problem(url, self.allowed_urls)
        if problem is None:
            try:
                sent = str(URL(url))
            except (ValueError, TypeError) as exc:
                raise Refused(Guard.INVALID, f"URL {url!r} does not parse: {exc}") from None
            problem = allowlist.url_problem(sent, self.allowed_urls)
            if problem is None:
                return sent
        raise Refused(
            Guard.ALLOWLIST, f"URL {truncate(url, 300)} is {problem} (remediation.allowed_urls)"
        )

    def prepare(self, spec: WebhookAction, ctx: ActionContext) -> WebhookCall:
        url = self.check_url(ctx.render(spec.url, "url"))
        try:
            body = None if spec.body is None else render_value(ctx.env, spec.body, ctx.values)
        except NotApplicable as exc:
            raise Refused(Guard.NOT_APPLICABLE, str(exc)) from None
        except RenderError as exc:
            raise Refused(Guard.TEMPLATE, f"body: {exc}") from None
        return WebhookCall(
            method=spec.method,
            url=url,
            body=body,
            header_names=sorted(spec.headers),
            headers=self.headers(spec, ctx),
            timeout=spec.timeout,
        )

    @staticmethod
    def headers(spec: WebhookAction, ctx: ActionContext) -> dict[str, str]:
        """Each header value rendered; one that would hold a line break or another control
        character (a label value writing headers of its own) is refused, and not quoted:
        header values may be credentials."""
        out = {}
        for name, template in spec.headers.items():
            value = ctx.render(template, f"headers.{name}")
            if not value.isprintable():
                raise Refused(
                    Guard.INVALID, f"header {name} holds a line break or control character"
                )
            out[name] = value
        return out

    async def _execute(self, call: WebhookCall, conns: Connections) -> StepResult:
        if conns.http is None:
            return StepResult(status=StepStatus.ERROR, summary="no HTTP client")
        try:
            url = self.check_url(call.url)  # once more, right before sending
        except Refused as exc:
            return StepResult(status=StepStatus.ERROR, summary=f"refused: {exc}")
        kwargs: dict[str, Any] = {"headers": call.headers}
        if call.body is not None:
            kwargs["json"] = call.body
        try:
            resp = await request(
                conns.http,
                call.method,
                url,
                timeout=call.timeout,
                retries=1 if call.method in _IDEMPOTENT else 0,
                retry_statuses=frozenset({502, 503, 504}),
                **kwargs,
            )
        except HttpError as exc:
            status = StepStatus.TIMED_OUT if "timed out" in str(exc) else StepStatus.ERROR
            return StepResult(status=status, summary=truncate(str(exc), 300))
        ok = 200 <= resp.status < 300
        return StepResult(
            status=StepStatus.OK if ok else StepStatus.FAILED,
            summary=f"{call.method} {url} -> HTTP {resp.status}",
            output=truncate(resp.text, MAX_RESPONSE),
            http_status=resp.status,
        )
