"""``webhook``: an HTTP call to a URL on ``remediation.allowed_urls`` with a templated JSON body.

The URL is rendered (label values through ``path_segment`` in the path, ``urlencode``
in the query string, which ``alertpilot check`` requires) and then checked as it will be
sent, byte for byte: the client sends it as it is (``encoded=True``: no requoting that
would turn ``%3B`` back into ``;``). It must hold only characters a URL carries
unencoded, be on ``remediation.allowed_urls`` (scheme, host, port and path prefix), have
no path a server could read as another (``allowlist.path_problem``: backslashes,
dot-segments, encoded or behind ``;``), and keep the template's shape
(``allowlist.shape_problem``: as many path segments, no query string or fragment the
template lacks), so a label value cannot move the call to another host, out of the
allowed path or to another resource under it. It is checked again right before sending.

Header values are templates too, refused if they would hold a line break; they are
sent but never recorded (they may hold credentials): the call keeps only their names,
and the step's record keeps its spec with every header value replaced by
``NOT_RECORDED`` (``bot.remediation.headers``). POST and PATCH are not retried (a
remediation must not apply twice); PUT and DELETE are retried once on a network error
or a 5xx.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from yarl import URL

from bot.playbook import allowlist
from bot.playbook.model import WebhookAction
from bot.playbook.templating import NotApplicable, RenderError, render_value
from bot.remediation.actions.base import ActionContext, ActionKind, Call, Connections
from bot.remediation.results import Guard, Refused, StepResult, StepStatus, truncate
from bot.upstream.http import HttpError, request

MAX_RESPONSE = 2000
_IDEMPOTENT = frozenset({"PUT", "DELETE"})


class WebhookCall(Call):
    kind: Literal["webhook"] = "webhook"
    method: str
    url: str
    body: Any = None
    header_names: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)
    # the URL template rendered with every value one plain word: the shape ``url`` keeps
    intended: str = Field(default="", exclude=True, repr=False)
    timeout: float

    def describe(self) -> str:
        return f"{self.method} {self.url}"


class WebhookKind(ActionKind[WebhookAction, WebhookCall]):
    kind = "webhook"

    def __init__(self, allowed_urls: list[str]) -> None:
        self.allowed_urls = list(allowed_urls)

    def check_url(self, url: str, intended: str = "") -> str:
        """The URL exactly as it will be sent, or Refused.

        ``intended`` is the URL template's skeleton (``ActionContext.skeleton``); the URL
        must keep its shape. Empty: the shape is not checked (a call built by hand).
        """
        shown = truncate(url, 300)
        problem = allowlist.characters_problem(url)
        if problem is not None:
            raise Refused(Guard.ALLOWLIST, f"URL {shown!r} {problem}")
        problem = allowlist.url_problem(url, self.allowed_urls)
        if problem is not None:
            raise Refused(Guard.ALLOWLIST, f"URL {shown} is {problem} (remediation.allowed_urls)")
        if intended:
            problem = allowlist.shape_problem(url, intended)
            if problem is not None:
                raise Refused(
                    Guard.ALLOWLIST, f"URL {shown} does not keep its template's shape: {problem}"
                )
        try:
            URL(url, encoded=True)
        except (ValueError, TypeError) as exc:
            raise Refused(Guard.INVALID, f"URL {shown!r} does not parse: {exc}") from None
        return url

    def prepare(self, spec: WebhookAction, ctx: ActionContext) -> WebhookCall:
        url = ctx.render(spec.url, "url")
        intended = ctx.skeleton(spec.url, "url")
        url = self.check_url(url, intended)
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
            intended=intended,
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
            url = self.check_url(call.url, call.intended)  # once more, right before sending
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
                encoded=True,
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
