"""Fuzzing every inbound endpoint but ``/alertmanager`` (``test_fuzz_ingest.py``).

Signed Slack and PagerDuty requests with garbage inside, unsigned garbage, and garbage
bodies, paths and query strings for the incident, approval, narrative and on-call APIs:
malformed JSON, wrong types, deep nesting, huge strings, odd unicode. Each answer is a
clear 4xx (or a 2xx for what happens to be valid), never a 5xx, and ``/healthz`` still
answers 200 after every request.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import keys
from bot.app import create_app
from conftest import make_settings, payload
from fakes import FakePagerDuty, FakeSlack, oncall_entry, sign_v3, webhook_v3_event
from pagerduty_kit import SECRET as PD_SECRET
from pagerduty_kit import pd_section
from slackkit import SECRET as SLACK_SECRET
from slackkit import action_body, command_body, signed, slack_settings

API_TOKEN = "api-token-for-fuzzing-0123456789"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

# text a careless parser trips over: lone surrogates, NUL, bidi overrides, BOMs,
# non-ASCII digits ("²".isdigit() is True, int("²") raises), astral and combining marks
ODD = st.sampled_from(
    [
        *("\ud800", "\udfff", "\x00", "\u202e", "\ufeff", "\u2028", "e\u0301"),
        *("²", "\u0661\u0662", "Ⅻ", "\U0001d54f"),
    ]
)
TEXT = st.text(st.characters(exclude_categories=()), max_size=40) | ODD
PRINTABLE = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # encodable
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=25,
)


# header values a client can send: no control characters, anything else as UTF-8 bytes
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    max_size=80,
)


def dumps(value: Any) -> bytes:
    """JSON as a client might send it: lone surrogates as ``\\udXXX`` escapes."""
    return json.dumps(value).encode()


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    """Nesting far past any recursive parser's limit, as arrays or objects."""
    depth = draw(st.integers(500, 20_000))
    if draw(st.booleans()):
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def huge(draw: st.DrawFn) -> bytes:
    key = draw(st.sampled_from(["incidentId", "step", "rcaData", "event", "text", "x"]))
    size = draw(st.sampled_from([70_000, 300_000, 2_000_000]))
    return json.dumps({key: draw(st.sampled_from("a9²\u202e")) * size}).encode()


def garbage_bytes() -> st.SearchStrategy[bytes]:
    """Any body at all: random bytes, invalid UTF-8, random JSON, deep, huge."""
    return (
        st.binary(max_size=300)
        | st.sampled_from([b"", b"\xff\xfe\x00", b"\xc0\xaf", b"\xef\xbb\xbf{}", b"null"])
        | st.sampled_from([b'{"a": NaN}', b"[-Infinity]"])  # Python reads these; not JSON
        | JSON.map(dumps)
        | deep()
        | huge()
    )


def near(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """A valid JSON object with one field dropped, retyped, added, or the body cut short."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        body = json.loads(json.dumps(base))
        choice = draw(st.integers(0, 4))
        if choice == 0 and body:
            del body[draw(st.sampled_from(sorted(body)))]
        elif choice == 1 and body:
            body[draw(st.sampled_from(sorted(body)))] = draw(JSON)
        elif choice == 2:
            body[draw(TEXT)] = draw(JSON)
        elif choice == 3:
            raw = dumps(body)
            return raw[: draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=10))
        return dumps(body)

    return mutate()


# -- one app per test function, shared by its examples (as test_fuzz_ingest does) ------

# keyed by the test function's own aiohttp_client fixture, which is kept alive with its
# client so that a later test's fixture can never reuse its id
_clients: dict[int, tuple[Any, TestClient]] = {}


def _cached(aiohttp_client: Any) -> TestClient | None:
    found = _clients.get(id(aiohttp_client))
    return found[1] if found is not None and found[0] is aiohttp_client else None


async def _client(
    aiohttp_client: Any, tmp_path_factory: Any, slack: FakeSlack, pagerduty: FakePagerDuty
) -> TestClient:
    if _cached(aiohttp_client) is None:
        _clients.clear()
        path: Path = tmp_path_factory.mktemp("fuzz")
        pagerduty.set_oncalls([oncall_entry("PUSER01", "Ana", schedule_id="PSCHED1")])
        settings_ = make_settings(
            path,
            server={"webhook_token": "webhook-token-for-fuzzing-0123", "api_token": API_TOKEN},
            slack={
                "bot_token": slack.token,
                "signing_secret": SLACK_SECRET,
                "api_url": slack.base_url,
                "default_channel": "C0ALERTS",
                "channel_rate": 50,
                "graphs": False,
            },
            pagerduty=pd_section(pagerduty),
            llm={"api_rate_limit": 1_000_000},
        )
        client: TestClient = await aiohttp_client(create_app(settings_))
        seeded = await client.post(
            "/alertmanager",
            json=payload("captured-firing"),
            headers={"Authorization": "Bearer webhook-token-for-fuzzing-0123"},
        )
        assert seeded.status == 200
        await client.app[keys.INBOX].drain()
        _clients[id(aiohttp_client)] = (aiohttp_client, client)
    found = _cached(aiohttp_client)
    assert found is not None
    return found


async def post(client: TestClient, path: str, body: bytes, headers: dict[str, str]) -> Any:
    """POST raw bytes (as a stream: aiohttp warns about large bodies given as bytes), as
    JSON where the endpoint takes JSON (every one but Slack's)."""
    if path != "/slack/events":
        headers = {"Content-Type": "application/json", **headers}
    return await client.post(path, data=io.BytesIO(body), headers=headers)


async def _healthy(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200


async def _answer(resp: Any) -> str:
    text: str = await resp.text()
    assert resp.status < 500, (resp.status, text[:500])
    return text


def _json_error(text: str) -> None:
    """A refusal says what is wrong, as ``{"error": code, "message": ...}``."""
    body = json.loads(text)
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body


# -- POST /slack/events ------------------------------------------------------------------


def slack_forms(fake: FakeSlack) -> st.SearchStrategy[bytes]:
    """Form bodies Slack could sign: real commands and buttons with fields garbled."""
    fields = st.dictionaries(
        st.sampled_from(
            ["command", "text", "user_id", "user_name", "channel_id", "payload", "token", "x"]
        )
        | TEXT,
        TEXT,
        max_size=6,
    )
    payloads = JSON.map(json.dumps) | deep().map(bytes.decode) | TEXT

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        choice = draw(st.integers(0, 4))
        if choice == 0:  # a lone surrogate becomes bytes that are not UTF-8
            return urlencode(draw(fields), errors="surrogatepass").encode()
        if choice == 1:
            return urlencode({"payload": draw(payloads)}, errors="surrogatepass").encode()
        if choice == 2:
            text = draw(st.sampled_from(["ack", "resolve", "show", "silence", "approve", ""]))
            return command_body(f"{text} {draw(PRINTABLE)}", fake, command="/alertpilot")
        if choice == 3:
            action = draw(st.sampled_from(["ap_ack", "ap_resolve", "ap_silence", "ap_approve"]))
            value = draw(PRINTABLE | st.sampled_from(["1:", "²", "1:forever", "#1"]))
            return action_body(action, value, fake)
        form = dict(
            (k, v)
            for k, v in json.loads(
                json.dumps({"payload": draw(JSON), "type": draw(TEXT)}, default=str)
            ).items()
        )
        return urlencode({k: json.dumps(v) for k, v in form.items()}).encode()

    return build()


@FUZZ
@given(data=st.data())
async def test_slack_signed_garbage_is_refused_cleanly(
    data: st.DataObject,
    aiohttp_client: Any,
    tmp_path_factory: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    client = await _client(aiohttp_client, tmp_path_factory, fake_slack, fake_pagerduty)
    body = data.draw(slack_forms(fake_slack) | garbage_bytes().filter(lambda b: len(b) < 2**20))
    resp = await post(client, "/slack/events", body, signed(body))
    await _answer(resp)
    assert resp.status in (200, 400, 401, 404), resp.status
    await client.app[keys.SLACK].tasks.join()
    await _healthy(client)


UNSIGNED_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "X-Slack-Request-Timestamp": st.sampled_from(
            ["", "²", "\u0661" + "\u0660" * 9, "-1", "1e9", "9" * 40, "0x10"]
        )
        | st.integers(0, 2**40).map(str)
        | st.just("NOW"),
        "X-Slack-Signature": st.sampled_from(["", "v0=", "v0=é", "v0=" + "0" * 64, "v1=abc"])
        | HEADER_TEXT,
    },
)


@FUZZ
@given(body=garbage_bytes().filter(lambda b: len(b) < 2**20), headers=UNSIGNED_HEADERS)
async def test_slack_unsigned_garbage_gets_401(
    body: bytes,
    headers: dict[str, str],
    aiohttp_client: Any,
    tmp_path_factory: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    client = await _client(aiohttp_client, tmp_path_factory, fake_slack, fake_pagerduty)
    if headers.get("X-Slack-Request-Timestamp") == "NOW":
        headers["X-Slack-Request-Timestamp"] = str(int(time.time()))
    sent = {k: v.encode().decode("latin-1") for k, v in headers.items()}  # raw UTF-8 bytes
    resp = await post(client, "/slack/events", body, sent)
    _json_error(await _answer(resp))
    assert resp.status in (401, 413), resp.status  # the size is checked before anything
    await _healthy(client)


# -- POST /pagerduty -----------------------------------------------------------------------


def pagerduty_bodies() -> st.SearchStrategy[bytes]:
    event = webhook_v3_event("incident.acknowledged", incident_key="nobody-knows-this-key")
    inner = event["event"]
    return (
        near(event)
        | near(inner).map(lambda raw: b'{"event":' + raw + b"}")
        | st.builds(
            lambda data: dumps({"event": {**inner, "data": data}}),
            JSON,
        )
        | garbage_bytes()
    )


@FUZZ
@given(body=pagerduty_bodies())
async def test_pagerduty_signed_garbage_is_refused_cleanly(
    body: bytes,
    aiohttp_client: Any,
    tmp_path_factory: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    client = await _client(aiohttp_client, tmp_path_factory, fake_slack, fake_pagerduty)
    headers = {"X-PagerDuty-Signature": sign_v3(body, [PD_SECRET])}
    resp = await post(client, "/pagerduty", body, headers)
    text = await _answer(resp)
    assert resp.status in (200, 400), (resp.status, text[:300])
    if resp.status == 400:
        _json_error(text)
    await _healthy(client)


@FUZZ
@given(
    body=pagerduty_bodies(),
    signature=st.none()
    | st.sampled_from(["", "v1=", "v1=é", "v0=abc", ",,,", "v1=" + "f" * 64])
    | HEADER_TEXT
    | st.just("OTHER-SECRET"),
)
async def test_pagerduty_unsigned_garbage_gets_401(
    body: bytes,
    signature: str | None,
    aiohttp_client: Any,
    tmp_path_factory: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    client = await _client(aiohttp_client, tmp_path_factory, fake_slack, fake_pagerduty)
    headers = {}
    if signature == "OTHER-SECRET":
        signature = sign_v3(body, ["whsec-someone-else"])
    if signature is not None:
        headers["X-PagerDuty-Signature"] = signature.encode().decode("latin-1")
    resp = await post(client, "/pagerduty", body, headers)
    _json_error(await _answer(resp))
    assert resp.status == 401
    await _healthy(client)


# -- POST /api/v1/narratives ---------------------------------------------------------------


def narrative_bodies() -> st.SearchStrategy[bytes]:
    rca = {
        "impact": {"service": "checkout", "metric": "error_rate", "severity": "P1"},
        "rootCause": {"service": "db", "evidence": ["pool exhausted"]},
        "chains": [[{"service": "db", "kpiName": "conns", "suspicionScore": 0.9}]],
        "diagnostics": {"timeRings": {"0-5m": "errors rise"}},
    }
    return (
        near({"incidentId": "1", "audience": "engineer"})
        | near({"incidentId": 1})
        | near({"rcaData": rca, "audience": "stakeholder"})
        | st.builds(lambda v: dumps({"incidentId": v}), JSON | ODD | st.integers(min_value=2**62))
        | st.builds(lambda v: dumps({"rcaData": v}), JSON)
        | garbage_bytes()
    )


@FUZZ
@given(body=narrative_bodies())
async def test_narrative_api_garbage_is_refused_cleanly(
    body: bytes,
    aiohttp_client: Any,
    tmp_path_factory: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    client = await _client(aiohttp_client, tmp_path_factory, fake_slack, fake_pagerduty)
    resp = await post(client, "/api/v1/narratives", body, AUTH)
    text = await _answer(resp)
    assert resp.status in (200, 400, 404), (resp.status, text[:300])
    if resp.status != 200:
        _json_error(text)
    await _healthy(client)


# -- POST /api/v1/incidents/{id}/approvals -------------------------------------------------

IDS = (
    st.sampled_from(["1", "2", "0", "²", "\u0661", "-1", "1.0", "9" * 19, "9" * 18, " 1", "%00"])
    | st.integers(0, 2**70).map(str)
    | TEXT.filter(lambda s: s.strip(".") != "")
)


@FUZZ
@given(
    ident=IDS,
    body=near({"step": "restart", "decision": "approve", "actor": "ana"})
    | near({"step": "restart", "decision": "reject", "actor": "ana", "reason": "no"})
    | garbage_bytes(),
)
async def test_approval_api_garbage_is_refused_cleanly(
    ident: str,
    body: bytes,
    aiohttp_client: Any,
    tmp_path_factory: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    client = await _client(aiohttp_client, tmp_path_factory, fake_slack, fake_pagerduty)
    path = f"/api/v1/incidents/{quote(ident, safe='', errors='surrogatepass')}/approvals"
    resp = await post(client, path, body, AUTH)
    text = await _answer(resp)
    assert resp.status in (400, 404, 405, 409), (resp.status, text[:300])
    await _healthy(client)


# -- GET /api/v1/incidents, /api/v1/incidents/{id}, /api/v1/oncall -------------------------

QUERY_VALUES = IDS | st.sampled_from(["triggered", "TRIGGERED", "resolved\x00", "500", "501"])
QUERIES = st.lists(
    st.tuples(st.sampled_from(["status", "limit", "offset", "schedule"]) | TEXT, QUERY_VALUES),
    max_size=4,
).map(
    lambda pairs: "&".join(
        f"{quote(k, safe='', errors='surrogatepass')}={quote(v, safe='', errors='surrogatepass')}"
        for k, v in pairs
    )
) | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60).filter(
    lambda s: "#" not in s
)


@FUZZ
@given(query=QUERIES, ident=IDS)
async def test_read_apis_take_odd_paths_and_query_strings(
    query: str,
    ident: str,
    aiohttp_client: Any,
    tmp_path_factory: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    client = await _client(aiohttp_client, tmp_path_factory, fake_slack, fake_pagerduty)
    listed = await client.get(f"/api/v1/incidents?{query}", headers=AUTH)
    text = await _answer(listed)
    assert listed.status in (200, 400), (listed.status, text[:300])
    one = await client.get(
        f"/api/v1/incidents/{quote(ident, safe='', errors='surrogatepass')}", headers=AUTH
    )
    text = await _answer(one)
    assert one.status in (200, 400, 404), (one.status, text[:300])
    oncall = await client.get(f"/api/v1/oncall?{query}", headers=AUTH)
    text = await _answer(oncall)
    assert oncall.status in (200, 400), (oncall.status, text[:300])
    await _healthy(client)


# -- credentials: any Authorization header is a 401 or accepted, never a crash -------------

AUTH_HEADERS = st.sampled_from(
    ["", "Bearer", "Bearer ", "Basic", "Basic é", "Basic ²", "Basic !!!", "Basic Og==",
     "Basic " + "QQ" * 300, "bearer é", "Token token=x", "Bearer \u202e"]
) | st.builds(
    lambda scheme, value: f"{scheme} {value}",
    st.sampled_from(["Bearer", "Basic", "bAsIc", "Digest", ""]),
    HEADER_TEXT,
)  # fmt: skip


@FUZZ
@given(header=AUTH_HEADERS)
async def test_garbage_credentials_get_401(
    header: str, aiohttp_client: Any, tmp_path_factory: Any
) -> None:
    client = _cached(aiohttp_client)
    if client is None:
        _clients.clear()
        path: Path = tmp_path_factory.mktemp("fuzz")
        settings_ = make_settings(
            path,
            server={
                "webhook_token": "webhook-token-for-fuzzing-0123",
                "webhook_basic_auth": {"username": "am", "password": "basic-pass-for-fuzz"},
                "api_token": API_TOKEN,
            },
            llm={"api_rate_limit": 1_000_000},
        )
        client = await aiohttp_client(create_app(settings_))
        _clients[id(aiohttp_client)] = (aiohttp_client, client)
    raw = {"Authorization": header.encode().decode("latin-1"), "Content-Type": "application/json"}
    for method, url in [
        ("POST", "/alertmanager"),
        ("GET", "/api/v1/incidents"),
        ("GET", "/api/v1/incidents/1"),
        ("POST", "/api/v1/incidents/1/approvals"),
        ("POST", "/api/v1/narratives"),
    ]:
        resp = await client.request(method, url, data=b"{}", headers=raw)
        _json_error(await _answer(resp))
        assert resp.status == 401, (method, url, resp.status)
    await _healthy(client)


# -- the named classes, each sent once to every endpoint -----------------------------------

NAMED = {
    "deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "deep objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "huge string": json.dumps({"incidentId": "9" * 5_000_000}).encode(),
    "lone surrogate": b'{"incidentId": "\\ud800", "step": "\\udfff"}',
    "invalid utf-8": b'{"step": "\xff\xfe"}',
    "overlong utf-8": b'{"step": "\xc0\xaf"}',
    "bom": b'\xef\xbb\xbf{"incidentId": "1"}',
    "nul": b'{"incidentId": "1\\u0000"}',
    "superscript id": '{"incidentId": "²"}'.encode(),
    "id past SQLite's integers": json.dumps({"incidentId": 2**70}).encode(),
    "wrong types": b'{"incidentId": [], "step": {}, "decision": 1, "actor": null}',
    "not json": b"incidentId=1",
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(NAMED))
async def test_each_hostile_body_class_on_every_endpoint(
    name: str,
    aiohttp_client: Any,
    tmp_path_factory: Any,
    fake_slack: FakeSlack,
    fake_pagerduty: FakePagerDuty,
) -> None:
    client = await _client(aiohttp_client, tmp_path_factory, fake_slack, fake_pagerduty)
    body = NAMED[name]
    slack_form = urlencode({"payload": body.decode("utf-8", "replace")}).encode()
    requests: list[tuple[str, bytes, dict[str, str], tuple[int, ...]]] = [
        ("/api/v1/narratives", body, AUTH, (200,) if name == "bom" else (400,)),
        ("/api/v1/incidents/1/approvals", body, AUTH, (400,)),
        ("/pagerduty", body, {"X-PagerDuty-Signature": sign_v3(body, [PD_SECRET])}, (400,)),
        ("/pagerduty", body, {}, (401,)),
        ("/slack/events", body, {}, (401, 413)),  # the size is checked before anything
        ("/slack/events", body, signed(body), (400, 401, 404, 413)),
        ("/slack/events", slack_form, signed(slack_form), (400, 404, 413)),
    ]
    for path, data, headers, allowed in requests:
        resp = await post(client, path, data, headers)
        text = await _answer(resp)
        assert resp.status in allowed, (path, resp.status, text[:300])
        await _healthy(client)


# -- regressions the fuzzing found ---------------------------------------------------------


async def test_a_signed_body_that_arrives_in_pieces_is_verified_whole(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """``read(n)`` returns what has arrived so far; the signature covers the whole body."""
    client: TestClient = await aiohttp_client(create_app(slack_settings(tmp_path, fake_slack)))
    body = command_body("help " + "x" * 60_000, fake_slack)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]
            await asyncio.sleep(0)

    resp = await client.post("/slack/events", data=pieces(), headers=signed(body))
    assert resp.status == 200, await resp.text()


async def test_a_command_that_says_payload_is_still_a_command(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """slack-bolt's own parser took any body containing "payload" for a button press."""
    client: TestClient = await aiohttp_client(create_app(slack_settings(tmp_path, fake_slack)))
    for body in (
        command_body("help payload", fake_slack),
        command_body("help", fake_slack, name="payload-team"),
    ):
        resp = await client.post("/slack/events", data=body, headers=signed(body))
        assert resp.status == 200, await resp.text()
        assert "/alertpilot" in await resp.text()
