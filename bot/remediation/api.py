"""``POST /api/v1/incidents/{id}/approvals``: approve or reject a pending remediation step.

Body: ``{"step": "...", "decision": "approve" | "reject", "actor": "...", "reason": "..."}``
(``reason`` optional). Needs ``server.api_token``. The token is shared, so ``actor`` is
only what the caller says: the audit records it as ``<actor> (via API token)``. 202 when
approved (the step runs in
the background), 200 when rejected; 400 for a bad body, 401 without the token, 404 for
an unknown incident or step, 409 when the step is not awaiting approval or it expired.
"""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from bot import keys
from bot.errors import PayloadError
from bot.server import jsonbody
from bot.server.api import require_api_token
from bot.server.connections import read_body

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ApprovalBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step: Text
    decision: Literal["approve", "reject"]
    actor: Text
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] = ""


def parse_body(raw: bytes) -> ApprovalBody:
    try:
        data = jsonbody.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}", code="invalid_json") from None
    try:
        return ApprovalBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise PayloadError(
            f'{where}: {first["msg"]} (expected {{"step", "decision": "approve"|'
            f'"reject", "actor"}})',
            code="invalid_approval",
        ) from None


async def post_approval(request: web.Request) -> web.Response:
    require_api_token(request)
    raw = request.match_info["incident_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise PayloadError("incident id must be a number", code="bad_id")
    timeout = request.app[keys.SETTINGS].server.body_timeout
    body = parse_body(await read_body(request, timeout))
    engine = request.app[keys.REMEDIATION]
    incident_id = int(raw)
    actor = f"{body.actor} (via API token)"  # said by the caller, not proven by the token
    if body.decision == "approve":
        record = await engine.approve(incident_id, body.step, actor=actor, source="api")
    else:
        record = await engine.reject(
            incident_id, body.step, actor=actor, source="api", reason=body.reason
        )
    return web.json_response(
        {
            "incident_id": incident_id,
            "step": record.key,
            "decision": body.decision,
            "state": record.state.value,
            "attempt": record.attempt,
        },
        status=202 if body.decision == "approve" else 200,
    )
