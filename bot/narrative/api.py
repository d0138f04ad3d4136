"""``POST /api/v1/narratives``: explain a stored incident or a posted RCA document; and
``POST /api/v1/mira/rca_analyze``, the RCA explanation service's contract: the same for
an RCA document only (``{"rcaData": <the RCA API's response, envelope included>}``),
for a non-technical reader unless ``audience`` says otherwise, unknown fields ignored,
and ``mira_generation_failed`` for a 500.

Body: ``{"incidentId": "42"}`` or ``{"rcaData": {...}}``, optionally ``"audience":
"engineer" | "stakeholder"``. Answer::

    {"status": "success", "data": {"explanation", "tokensUsed", "provider", "model",
     "generatedAt", "cached", "generationTimeMs"}}

Errors keep the app's ``{"error": code, "message": ...}`` shape, with ``"status": "error"``:
400 ``invalid_json_payload``, 401 ``unauthorized``, 404 ``not_found``, 429
``rate_limit_exceeded`` (with ``retryAfter`` and ``Retry-After``), 500
``generation_failed``, 503 ``store_unavailable``. Every answer carries the
``X-RateLimit-Limit``/``-Remaining``/``-Reset`` headers of the caller's window (per API
token, or per peer address when the API is open or the token is wrong).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bot import keys
from bot.errors import AuthError, NotFound, PayloadError, StoreError, StoreUnavailable
from bot.narrative.prompt import AUDIENCES, Audience
from bot.narrative.rca import RcaDocument
from bot.narrative.templates import PromptTemplateError
from bot.server import jsonbody
from bot.server.api import require_api_token
from bot.server.connections import read_body
from bot.server.exposure import not_json

log = logging.getLogger(__name__)

BAD = "invalid_json_payload"
FIELDS = {"incidentId", "rcaData", "audience"}


def _answer(status: int, body: dict[str, Any], headers: dict[str, str]) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _error(
    status: int, code: str, message: str, headers: dict[str, str], **extra: Any
) -> web.Response:
    return _answer(status, {"status": "error", "error": code, "message": message, **extra}, headers)


def _client(request: web.Request, authorized: bool) -> str:
    """Who the per-client limit counts: the API token when one is configured (and so
    proven), else the peer address — a made-up token must not buy a fresh allowance."""
    configured = request.app[keys.SETTINGS].server.api_token is not None
    header = request.headers.get("Authorization", "")
    token = header.partition(" ")[2].strip()
    if configured and authorized and token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return f"peer:{request.remote or 'unknown'}"


@dataclass(frozen=True)
class Contract:
    """What one endpoint takes and answers."""

    audience: Audience  # when the body does not say
    failed: str  # the error code of a 500
    incidents: bool  # whether it explains stored incidents too (else RCA documents only)
    strict: bool  # whether unknown fields are a 400


NARRATIVES = Contract("engineer", "generation_failed", incidents=True, strict=True)
RCA_ANALYZE = Contract("stakeholder", "mira_generation_failed", incidents=False, strict=False)


def _parse(
    raw: bytes, contract: Contract = NARRATIVES
) -> tuple[int | None, RcaDocument | None, Audience]:
    try:
        body = jsonbody.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise PayloadError("the body is not JSON", code=BAD) from None
    if not isinstance(body, dict):
        raise PayloadError("the body must be a JSON object", code=BAD)
    unknown = sorted(set(body) - FIELDS)
    if unknown and contract.strict:
        raise PayloadError(f"unknown field(s): {', '.join(unknown)}", code=BAD)
    if not contract.incidents and "rcaData" not in body:
        raise PayloadError("rcaData is required: the RCA document to explain", code=BAD)
    if ("incidentId" in body) == ("rcaData" in body):
        raise PayloadError("give exactly one of incidentId or rcaData", code=BAD)
    audience = body.get("audience", contract.audience)
    if audience not in AUDIENCES:
        raise PayloadError(f"audience must be one of {', '.join(AUDIENCES)}", code=BAD)
    if "incidentId" in body:
        raw_id = body["incidentId"]
        if isinstance(raw_id, int) and not isinstance(raw_id, bool) and 0 < raw_id < 10**18:
            return raw_id, None, audience
        digits = isinstance(raw_id, str) and raw_id.isascii() and raw_id.isdigit()
        if digits and 0 < len(raw_id) <= 18:
            return int(raw_id), None, audience
        raise PayloadError("incidentId must be a positive integer (or its digits)", code=BAD)
    try:
        return None, RcaDocument.model_validate(body["rcaData"]), audience
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in ("rcaData", *first["loc"]))
        raise PayloadError(f"{where}: {first['msg']}", code=BAD) from None


async def post_narratives(request: web.Request) -> web.Response:
    return await _explain(request, NARRATIVES)


async def rca_analyze(request: web.Request) -> web.Response:
    return await _explain(request, RCA_ANALYZE)


async def _explain(request: web.Request, contract: Contract) -> web.Response:
    app = request.app
    narrator, limiter = app[keys.NARRATIVES], app[keys.NARRATIVE_LIMITER]
    denied: AuthError | None = None
    try:
        require_api_token(request)
    except AuthError as exc:
        denied = exc
    decision = limiter.hit(_client(request, denied is None))
    headers = decision.headers()
    if not decision.allowed:  # before the 401: guessing tokens is rate limited too
        return _error(
            429,
            "rate_limit_exceeded",
            f"at most {decision.limit} narrative requests per {limiter.window:g}s; "
            f"retry in {decision.retry_after}s",
            headers,
            retryAfter=decision.retry_after,
        )
    if denied is not None:
        headers["WWW-Authenticate"] = 'Bearer realm="alertpilot"'
        return _error(401, "unauthorized", str(denied), headers)
    problem = not_json(request)
    if problem is not None:  # what a browser page can send without asking first
        return _error(415, "unsupported_media_type", problem, headers)
    try:
        timeout = app[keys.SETTINGS].server.body_timeout
        incident_id, doc, audience = _parse(await read_body(request, timeout), contract)
    except PayloadError as exc:
        return _error(400, exc.code, str(exc), headers)
    started = time.perf_counter()
    try:
        if incident_id is not None:
            narrative = await narrator.explain(incident_id, audience)
        else:
            assert doc is not None
            narrative = await narrator.for_rca(doc, audience)
    except NotFound as exc:
        return _error(404, "not_found", str(exc), headers)
    except StoreUnavailable:
        return _error(503, "store_unavailable", "the store cannot answer; retry later", headers)
    except (StoreError, PromptTemplateError) as exc:
        log.error("narrative generation failed: %s", exc)
        return _error(500, contract.failed, "the narrative could not be generated", headers)
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    data = {
        "explanation": narrative.text,
        "tokensUsed": narrative.tokens,
        "provider": narrator.settings.provider if narrative.source == "llm" else "template",
        "model": narrative.model,
        "generatedAt": datetime.fromtimestamp(narrative.generated_at, UTC).isoformat(),
        "cached": narrative.cached,
        "generationTimeMs": elapsed_ms,
    }
    return _answer(200, {"status": "success", "data": data}, headers)
