"""The loopback fakes, exercised with the real client libraries the bot uses."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pagerduty
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from fakes import (
    FakeOpenAI,
    FakePagerDuty,
    FakeSlack,
    fixtures,
    oncall_entry,
    send_webhook_v3,
    sign_v3,
    webhook_v3_event,
)

TOKEN = "xoxb-test-token"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
PD_TOKEN = "u+pd-rest-token"
# A valid 1x1 transparent PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


fake_openai = fixtures.fake_openai  # the shared fixtures, re-used here to test them


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def pd() -> AsyncIterator[FakePagerDuty]:
    async with FakePagerDuty(api_token=PD_TOKEN) as fake:
        yield fake


@pytest.fixture
async def oai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key="sk-test-0123456789") as fake:
        yield fake


# -- Slack -------------------------------------------------------------------------------


async def test_slack_post_update_thread_upload(slack: FakeSlack) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
    assert (await client.auth_test())["user_id"] == "U0BOT"

    first = await client.chat_postMessage(channel="C1", text="firing", blocks=[{"type": "divider"}])
    reply = await client.chat_postMessage(channel="C1", text="diag", thread_ts=first["ts"])
    assert float(reply["ts"]) > float(first["ts"])
    assert first["ts"] == "1700000000.000100"

    await client.chat_update(channel="C1", ts=first["ts"], text="resolved")
    upload = await client.files_upload_v2(
        channel="C1",
        content=PNG,
        filename="graph.png",
        title="CPU",
        initial_comment="graph",
        thread_ts=first["ts"],
    )

    assert slack.calls("chat.postMessage")[0].params["blocks"] == [{"type": "divider"}]
    assert slack.calls("chat.postMessage")[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert len(slack.calls("chat.update")) == 1
    assert slack.messages[("C1", first["ts"])]["text"] == "resolved"
    file_id = upload["file"]["id"]
    assert slack.files[file_id].data == PNG
    assert slack.files[file_id].completed
    assert slack.calls("files.getUploadURLExternal")[0].params["length"] == str(len(PNG))
    thread = slack.thread("C1", first["ts"])
    assert [m["text"] for m in thread] == ["resolved", "diag", "graph"]
    assert thread[-1]["files"][0]["mimetype"] == "image/png"


async def test_slack_other_methods(slack: FakeSlack) -> None:
    slack.set_usergroup("S1", ["U1", "U2"])
    slack.add_channel("C9", "incidents")
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
    posted = await client.chat_postMessage(channel="C9", text="x")
    link = await client.chat_getPermalink(channel="C9", message_ts=posted["ts"])
    assert link["permalink"].endswith("/archives/C9/p" + posted["ts"].replace(".", ""))
    assert (await client.conversations_info(channel="C9"))["channel"]["name"] == "incidents"
    assert (await client.usergroups_users_list(usergroup="S1"))["users"] == ["U1", "U2"]
    eph = await client.chat_postEphemeral(channel="C9", user="U1", text="only you")
    assert eph["message_ts"] and slack.ephemerals[0]["user"] == "U1"
    with pytest.raises(SlackApiError) as err:
        await client.usergroups_users_list(usergroup="S404")
    assert err.value.response["error"] == "no_such_subteam"
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel="C9", ts="1.2", text="nope")
    assert err.value.response["error"] == "message_not_found"


async def test_slack_auth(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as err:
        await AsyncWebClient(token="xoxb-wrong", base_url=slack.base_url).auth_test()
    assert err.value.response["error"] == "invalid_auth"
    async with aiohttp.ClientSession() as s, s.post(slack.base_url + "auth.test") as resp:
        assert (await resp.json())["error"] == "not_authed"


async def test_slack_form_encoded_body(slack: FakeSlack) -> None:
    form = {"channel": "C1", "text": "hi", "blocks": json.dumps([{"type": "divider"}])}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(slack.base_url + "chat.postMessage", data=form, headers=headers) as resp,
    ):
        body = await resp.json()
    assert body["ok"] and body["message"]["blocks"] == [{"type": "divider"}]


class RecordingRateLimitHandler(AsyncRateLimitErrorRetryHandler):
    def __init__(self) -> None:
        super().__init__(max_retry_count=1)
        self.seen: list[tuple[int, str | None]] = []

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None:
            retry_after = response.headers.get("retry-after") or response.headers.get("Retry-After")
            self.seen.append((response.status_code, retry_after[0] if retry_after else None))
        return await super()._can_retry_async(
            state=state, request=request, response=response, error=error
        )


async def test_slack_rate_limit_seen_by_retry_handler(slack: FakeSlack) -> None:
    handler = RecordingRateLimitHandler()
    handlers: list[AsyncRetryHandler] = [handler]
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url, retry_handlers=handlers)
    slack.rate_limit_next(1, retry_after=0)
    resp = await client.chat_postMessage(channel="C1", text="after retry")
    assert resp["ok"]
    assert handler.seen[0] == (429, "0")
    assert [r.status for r in slack.calls("chat.postMessage")] == [429, 200]


async def test_slack_rate_limit_and_failures_without_retry(slack: FakeSlack) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
    slack.rate_limit_next(1, retry_after=7)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C1", text="x")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    assert err.value.response["error"] == "ratelimited"

    slack.fail_next(1, status=500, match="chat.update")
    await client.auth_test()  # not matched, so not failed
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel="C1", ts="1", text="x")
    assert err.value.response.status_code == 500

    slack.outage(True)
    with pytest.raises(SlackApiError) as err:
        await client.auth_test()
    assert err.value.response.status_code == 503
    slack.outage(False)
    assert (await client.auth_test())["ok"]


async def test_slack_multipart_upload_and_strict_channels() -> None:
    async with FakeSlack(token=TOKEN, strict_channels=True) as slack:
        client = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel="C404", text="x")
        assert err.value.response["error"] == "channel_not_found"
        url = await client.files_getUploadURLExternal(filename="a.png", length=len(PNG))
        form = aiohttp.FormData()
        form.add_field("file", PNG, filename="a.png", content_type="image/png")
        async with aiohttp.ClientSession() as s, s.post(url["upload_url"], data=form) as resp:
            assert resp.status == 200
        assert slack.files[url["file_id"]].data == PNG


async def test_slack_response_url(slack: FakeSlack) -> None:
    url = slack.response_url("cmd-1")
    async with aiohttp.ClientSession() as s, s.post(url, json={"text": "ack"}) as resp:
        assert resp.status == 200
    assert slack.responses["cmd-1"] == [{"text": "ack"}]


# -- PagerDuty ---------------------------------------------------------------------------


def _events_client(pd: FakePagerDuty) -> pagerduty.EventsApiV2Client:
    client = pagerduty.EventsApiV2Client(
        ROUTING_KEY, base_url=pd.base_url, verify=pd.client_ssl_context()
    )
    client.sleep_timer = 0.001
    return client


async def test_pagerduty_events_roundtrip(pd: FakePagerDuty) -> None:
    def run() -> str:
        with _events_client(pd) as client:
            key = client.trigger("disk full", "node-1", dedup_key="alert-1", severity="error")
            client.acknowledge(key)
            client.resolve(key)
            return key

    assert await asyncio.to_thread(run) == "alert-1"
    assert [e["event_action"] for e in pd.events] == ["trigger", "acknowledge", "resolve"]
    assert pd.triggers_for("alert-1")[0]["payload"]["summary"] == "disk full"
    assert pd.alerts["alert-1"] == "resolved"
    assert pd.requests[0].headers["Content-Type"] == "application/json"


async def test_pagerduty_tls_is_really_verified(pd: FakePagerDuty) -> None:
    def run() -> None:
        with pagerduty.EventsApiV2Client(ROUTING_KEY, base_url=pd.base_url) as client:
            client.max_network_attempts = 0
            client.trigger("x", "y")

    with pytest.raises(pagerduty.Error):
        await asyncio.to_thread(run)
    assert pd.events == []


async def test_pagerduty_events_validation(pd: FakePagerDuty) -> None:
    bad = {"routing_key": "short", "event_action": "trigger", "payload": {"severity": "bad"}}
    async with (
        aiohttp.ClientSession() as s,
        s.post(pd.base_url + "/v2/enqueue", json=bad, ssl=pd.client_ssl_context()) as resp,
    ):
        body = await resp.json()
    assert resp.status == 400
    assert body["status"] == "invalid event" and body["message"] == "Event object is invalid"
    assert len(body["errors"]) == 4  # routing_key, summary, source, severity
    assert pd.events == []


async def test_pagerduty_events_rate_limit_then_success(pd: FakePagerDuty) -> None:
    pd.rate_limit_next(1)
    pd.fail_next(1, status=500)

    def run() -> str:
        with _events_client(pd) as client:
            return client.trigger("x", "y", dedup_key="k")

    assert await asyncio.to_thread(run) == "k"
    assert [r.status for r in pd.requests] == [429, 500, 202]


async def test_pagerduty_rest_oncalls_paginated(pd: FakePagerDuty) -> None:
    entries = [
        oncall_entry(f"User {i}", f"PU{i}", schedule_id="PSA" if i % 2 else "PSB") for i in range(7)
    ]
    pd.set_oncalls(entries)

    def run(token: str) -> list[dict[str, Any]]:
        with pagerduty.RestApiV2Client(
            token, base_url=pd.base_url, verify=pd.client_ssl_context()
        ) as client:
            client.default_page_size = 2
            return list(client.iter_all("oncalls", params={"schedule_ids": ["PSA"]}))

    got = await asyncio.to_thread(run, PD_TOKEN)
    assert [o["user"]["id"] for o in got] == ["PU1", "PU3", "PU5"]
    pages = pd.requests_to("/oncalls")
    assert [r.query["offset"] for r in pages] == ["0", "2"]
    assert pages[0].query.getall("schedule_ids[]") == ["PSA"]
    assert pages[0].headers["Authorization"] == f"Token token={PD_TOKEN}"

    with pytest.raises(pagerduty.HttpError) as err:
        await asyncio.to_thread(run, "wrong")
    assert err.value.response is not None and err.value.response.status_code == 401


async def test_pagerduty_webhook_v3_signing(aiohttp_server: Any) -> None:
    secrets = ["old-secret", "new-secret"]
    received: list[bool] = []

    async def receive(request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "v1=" + hmac.new(b"new-secret", raw, hashlib.sha256).hexdigest()
        sigs = request.headers["X-PagerDuty-Signature"].split(",")
        received.append(any(hmac.compare_digest(expected, s) for s in sigs))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/pd", receive)
    server = await aiohttp_server(app)
    event = webhook_v3_event("incident.acknowledged", "PABC123", "alert-1", "Ada Lovelace")
    assert event["event"]["data"]["status"] == "acknowledged"
    assert event["event"]["agent"]["summary"] == "Ada Lovelace"
    assert event["event"]["agent"]["type"] == "user_reference"
    status, _ = await send_webhook_v3(str(server.make_url("/pd")), event, secrets)
    assert status == 204 and received == [True]
    assert sign_v3(b"{}", ["a", "b"]).count("v1=") == 2


# -- OpenAI ------------------------------------------------------------------------------


def _openai(oai: FakeOpenAI, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=oai.base_url + "/v1", api_key=oai.api_key, max_retries=0, **kw
    )


async def test_openai_chat_completion(oai: FakeOpenAI) -> None:
    oai.reply = lambda body: "echo: " + body["messages"][-1]["content"]
    async with _openai(oai) as client:
        resp = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "why is disk full?"}]
        )
    assert resp.choices[0].message.content == "echo: why is disk full?"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens > 0
    assert resp.model == "gpt-4o-mini"
    assert oai.completions[0]["messages"][0]["content"] == "why is disk full?"
    assert oai.requests[0].headers["Authorization"] == f"Bearer {oai.api_key}"


async def test_shared_fixture(fake_openai: FakeOpenAI) -> None:
    async with _openai(fake_openai) as client:
        resp = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert resp.choices[0].message.content == "OK"


async def test_openai_errors(oai: FakeOpenAI) -> None:
    msgs: Any = [{"role": "user", "content": "hi"}]
    async with _openai(oai) as client:
        oai.quota_next(1)
        with pytest.raises(openai.RateLimitError) as quota:
            await client.chat.completions.create(model="m", messages=msgs)
        assert quota.value.code == "insufficient_quota"

        oai.rate_limit_next(1, retry_after=3)
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="m", messages=msgs)
        assert limited.value.code == "rate_limit_exceeded"
        assert limited.value.response.headers["retry-after"] == "3"

        oai.fail_next(1)
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="m", messages=msgs)

        oai.unauthorized = True
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="m", messages=msgs)
        oai.unauthorized = False
        assert (await client.chat.completions.create(model="m", messages=msgs)).choices


async def test_openai_delay_causes_timeout(oai: FakeOpenAI) -> None:
    oai.delay = 5.0
    async with _openai(oai, timeout=0.2) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
