"""A loopback HTTPS fake of PagerDuty: Events API v2 and a slice of REST API v2.

The Webhooks v3 helpers live in ``pagerduty_webhooks`` and are re-exported here.
"""

from __future__ import annotations

import ssl
import tempfile
import uuid
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web

from ._base import FakeServer, Fault, record_of
from .pagerduty_webhooks import pd_ref, send_webhook_v3, sign_v3, webhook_v3_event

__all__ = [
    "FakePagerDuty",
    "oncall_entry",
    "send_webhook_v3",
    "sign_v3",
    "validate_event",
    "webhook_v3_event",
]

JsonDict = dict[str, Any]

ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
_STATUS_FOR_ACTION = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}


class FakePagerDuty(FakeServer):
    """Fake PagerDuty over TLS with a throwaway ``trustme`` CA.

    Clients must trust ``ca_file`` (or use ``client_ssl_context()``); e.g.
    ``pagerduty.EventsApiV2Client(key, base_url=fake.base_url, verify=fake.client_ssl_context())``.
    """

    def __init__(self, api_token: str = "u+fake-api-token") -> None:
        self.api_token = api_token
        self.events: list[JsonDict] = []  # accepted Events API v2 bodies, in order
        self.change_events: list[JsonDict] = []
        self.alerts: dict[str, str] = {}  # dedup_key -> triggered/acknowledged/resolved
        self.oncalls: list[JsonDict] = []
        self.me: JsonDict = pd_ref("user", "PUSER01", "Fake Responder")
        self.escalations: list[JsonDict] = []  # PUT /incidents/{id} escalation_level changes
        self.levels = 3  # the escalation policy's levels: a higher one is a 400
        self.require_from = False  # an account-level token: PUT needs a From header
        self._drop_answers = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._ca_file: str | None = None
        super().__init__()

    def _setup_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v2/enqueue", self._enqueue)
        router.add_post("/v2/change/enqueue", self._change_enqueue)
        router.add_get("/oncalls", self._oncalls)
        router.add_get("/users/me", self._users_me)
        router.add_get("/incidents", self._incidents)
        router.add_put("/incidents/{incident_id}", self._update_incident)

    async def start(self) -> None:
        """Mint a fresh CA + 127.0.0.1 certificate, write the CA PEM, start serving TLS."""
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-pd-")
        ca = trustme.CA()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
        self._ca_file = str(Path(self._tmp.name) / "fake-pagerduty-ca.pem")
        ca.cert_pem.write_to_path(self._ca_file)
        self._ssl_context = server_ctx
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def ca_file(self) -> str:
        """Path of the PEM file of the CA that signed the server certificate."""
        if self._ca_file is None:
            raise RuntimeError("FakePagerDuty is not started")
        return self._ca_file

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:<port>``; serves both the Events and the REST API."""
        return self.root_url

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client-side context that trusts only this fake's CA (hostname checked)."""
        return ssl.create_default_context(cafile=self.ca_file)

    def set_oncalls(self, entries: list[JsonDict]) -> None:
        """Seed ``GET /oncalls``; see :func:`oncall_entry` for the entry shape."""
        self.oncalls = list(entries)

    def drop_answer_next(self, n: int = 1) -> None:
        """Take the next ``n`` events but drop the connection instead of answering, as a
        crash or a lost reply looks to the sender."""
        self._drop_answers += n

    def sends(self) -> list[int]:
        """Statuses answered to Events API posts, in order."""
        return [r.status for r in self.requests if r.path == "/v2/enqueue"]

    def lookups(self) -> list[int]:
        """Statuses answered to ``GET /incidents``, in order."""
        return [r.status for r in self.requests if r.path == "/incidents"]

    def triggers_for(self, dedup_key: str) -> list[JsonDict]:
        return [
            e
            for e in self.events
            if e.get("event_action") == "trigger" and e.get("dedup_key") == dedup_key
        ]

    # -- faults ----------------------------------------------------------------------

    def _fault_response(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        events_api = request.path.startswith("/v2/")
        if fault.kind == "rate_limit":
            headers = {"Retry-After": str(int(fault.retry_after))}
            if events_api:
                body: JsonDict = {
                    "status": "throttle event",
                    "message": "Requests for this service are arriving too quickly. "
                    "Please retry later.",
                }
            else:
                body = {"error": {"message": "Rate Limit Exceeded", "code": 2020}}
            return web.json_response(body, status=429, headers=headers)
        if events_api:
            return web.json_response(
                {"status": "error", "message": "Internal Server Error"}, status=fault.status
            )
        return web.json_response(
            {"error": {"message": "Internal Server Error", "code": 2000}}, status=fault.status
        )

    # -- Events API v2 ---------------------------------------------------------------

    async def _enqueue(self, request: web.Request) -> web.Response:
        body = record_of(request).body
        if not isinstance(body, dict):
            return _invalid(["Event object is not valid JSON"])
        errors = validate_event(body)
        if errors:
            return _invalid(errors)
        event = dict(body)
        if event["event_action"] == "trigger" and not event.get("dedup_key"):
            event["dedup_key"] = uuid.uuid4().hex
        self.events.append(event)
        self.alerts[event["dedup_key"]] = _STATUS_FOR_ACTION[event["event_action"]]
        if self._drop_answers > 0:
            self._drop_answers -= 1
            if request.transport is not None:
                request.transport.abort()
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]},
            status=202,
        )

    async def _change_enqueue(self, request: web.Request) -> web.Response:
        body = record_of(request).body
        payload = body.get("payload") if isinstance(body, dict) else None
        if not isinstance(payload, dict) or not payload.get("summary"):
            return _invalid(["'payload.summary' is missing or blank"])
        self.change_events.append(body)
        return web.json_response(
            {"status": "success", "message": "Change event processed"}, status=202
        )

    # -- REST API v2 -----------------------------------------------------------------

    def _rest_auth_error(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == f"Token token={self.api_token}":
            return None
        return web.json_response(
            {"error": {"message": "Authentication failed", "code": 2006}}, status=401
        )

    async def _oncalls(self, request: web.Request) -> web.Response:
        if (denied := self._rest_auth_error(request)) is not None:
            return denied
        q = request.query
        try:
            limit = min(int(q.get("limit", "25")), 100)
            offset = int(q.get("offset", "0"))
        except ValueError:
            return web.json_response(
                {"error": {"message": "Invalid Input Provided", "code": 2001}}, status=400
            )
        entries = self.oncalls
        for param, key in (
            ("schedule_ids[]", "schedule"),
            ("escalation_policy_ids[]", "escalation_policy"),
            ("user_ids[]", "user"),
        ):
            wanted = set(q.getall(param, []))
            if wanted:
                entries = [e for e in entries if (e.get(key) or {}).get("id") in wanted]
        return _page("oncalls", entries, limit, offset, total=q.get("total") == "true")

    def incidents(self) -> list[JsonDict]:
        """The incidents the accepted events made, as ``GET /incidents`` lists them: a
        trigger opens one for its dedup_key (unless one is open), acknowledge and resolve
        move it."""
        made: list[JsonDict] = []
        open_by_key: dict[str, JsonDict] = {}
        for n, event in enumerate(self.events):
            key, action = str(event["dedup_key"]), event["event_action"]
            incident = open_by_key.get(key)
            if action == "trigger" and incident is None:
                number = len(made) + 1
                incident_id = f"Q{number:06d}FAKE"
                incident = {
                    "id": incident_id,
                    "type": "incident",
                    "incident_number": number,
                    "incident_key": key,
                    "title": str((event.get("payload") or {}).get("summary", "")),
                    "status": "triggered",
                    "html_url": f"https://fake.pagerduty.com/incidents/{incident_id}",
                    "created_at": f"2026-01-01T00:00:{n % 60:02d}Z",
                }
                made.append(incident)
                open_by_key[key] = incident
            elif incident is not None and action in ("acknowledge", "resolve"):
                incident["status"] = _STATUS_FOR_ACTION[action]
                if action == "resolve":
                    del open_by_key[key]
        return made

    async def _incidents(self, request: web.Request) -> web.Response:
        if (denied := self._rest_auth_error(request)) is not None:
            return denied
        q = request.query
        found = self.incidents()
        if "incident_key" in q:
            found = [i for i in found if i["incident_key"] == q["incident_key"]]
        statuses = set(q.getall("statuses[]", []))
        if statuses:
            found = [i for i in found if i["status"] in statuses]
        limit, offset = min(int(q.get("limit", "25")), 100), int(q.get("offset", "0"))
        return _page("incidents", found, limit, offset, total=q.get("total") == "true")

    async def _update_incident(self, request: web.Request) -> web.Response:
        """``PUT /incidents/{id}``: the escalation level only (what alertpilot changes)."""
        if (denied := self._rest_auth_error(request)) is not None:
            return denied
        sender = request.headers.get("From")
        if self.require_from and not sender:
            return _rest_error(
                400, "Requests with account-level API keys must include a From header", 2001
            )
        incident_id = request.match_info["incident_id"]
        found = next((i for i in self.incidents() if i["id"] == incident_id), None)
        if found is None:
            return _rest_error(404, "Incident Not Found", 2100)
        body = record_of(request).body
        update = body.get("incident") if isinstance(body, dict) else None
        level = update.get("escalation_level") if isinstance(update, dict) else None
        kind = update.get("type") if isinstance(update, dict) else None
        if kind not in ("incident", "incident_reference") or not isinstance(level, int):
            return _rest_error(400, "Invalid Input Provided", 2001)
        if not 1 <= level <= self.levels:
            return _rest_error(400, "Escalation level is not valid for this policy", 2001)
        self.escalations.append({"id": incident_id, "level": level, "from": sender})
        return web.json_response({"incident": {**found, "escalation_level": level}})

    async def _users_me(self, request: web.Request) -> web.Response:
        if (denied := self._rest_auth_error(request)) is not None:
            return denied
        return web.json_response({"user": self.me})


def _page(
    name: str, items: list[JsonDict], limit: int, offset: int, *, total: bool
) -> web.Response:
    """One page of a REST API v2 list, with PagerDuty's classic pagination fields."""
    page = items[offset : offset + limit]
    return web.json_response(
        {
            name: page,
            "limit": limit,
            "offset": offset,
            "more": offset + len(page) < len(items),
            "total": len(items) if total else None,
        }
    )


def validate_event(body: JsonDict) -> list[str]:
    """The checks the real Events API v2 makes before answering 400 ``invalid event``."""
    errors: list[str] = []
    key = body.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = body.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is missing or blank")
    dedup_key = body.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append("'dedup_key' is missing or blank")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or blank")
        else:
            for field in ("summary", "source"):
                if not payload.get(field):
                    errors.append(f"'payload.{field}' is missing or blank")
            if payload.get("severity") not in SEVERITIES:
                errors.append(
                    "'payload.severity' is invalid (must be one of critical, error, warning, info)"
                )
    return errors


def _rest_error(status: int, message: str, code: int) -> web.Response:
    return web.json_response({"error": {"message": message, "code": code}}, status=status)


def _invalid(errors: list[str]) -> web.Response:
    return web.json_response(
        {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
        status=400,
    )


# -- REST fixtures -------------------------------------------------------------------


def oncall_entry(
    user_name: str,
    user_id: str,
    *,
    schedule_id: str | None = "PSCHED1",
    escalation_policy_id: str = "PESCAL1",
    level: int = 1,
    start: str | None = "2024-01-01T00:00:00Z",
    end: str | None = "2024-01-08T00:00:00Z",
) -> JsonDict:
    """One ``GET /oncalls`` entry, shaped like the real API's."""
    return {
        "user": pd_ref("user", user_id, user_name),
        "schedule": pd_ref("schedule", schedule_id, "Primary") if schedule_id else None,
        "escalation_policy": pd_ref("escalation_policy", escalation_policy_id, "Default"),
        "escalation_level": level,
        "start": start,
        "end": end,
    }
