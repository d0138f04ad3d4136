"""Outbound HTTP: redirects are not followed; Alertmanager silences are created once."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.core.matchers import parse_matcher
from bot.upstream.alertmanager import AlertmanagerClient, AlertmanagerError
from bot.upstream.http import request


async def test_redirects_are_not_followed(aiohttp_server: Any) -> None:
    hits: list[str] = []

    async def elsewhere(req: web.Request) -> web.Response:
        hits.append(await req.text())
        return web.Response(text="took it")

    target: TestServer = await aiohttp_server(_app("/steal", elsewhere))

    async def redirect(req: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(target.make_url("/steal")))

    allowed: TestServer = await aiohttp_server(_app("/v1/flags", redirect))
    async with aiohttp.ClientSession() as session:
        resp = await request(
            session, "POST", str(allowed.make_url("/v1/flags")), timeout=5, json={"x": 1}
        )
    assert resp.status == 307
    assert hits == []  # the allowlisted URL is the only one called


async def test_silence_creation_is_not_retried(aiohttp_server: Any) -> None:
    calls: list[dict[str, Any]] = []

    async def flaky(req: web.Request) -> web.Response:
        calls.append(await req.json())
        return web.Response(status=503, text="try later")

    server: TestServer = await aiohttp_server(_app("/api/v2/silences", flaky))
    async with aiohttp.ClientSession() as session:
        client = AlertmanagerClient(session, str(server.make_url("")), retries=3)
        try:
            await client.create_silence(
                [parse_matcher('service="checkout"')], duration=60, created_by="t", comment="c"
            )
        except AlertmanagerError as exc:
            assert exc.status == 503
        else:
            raise AssertionError("a 503 must raise")
    assert len(calls) == 1


async def test_non_json_answer_is_an_alertmanager_error(aiohttp_server: Any) -> None:
    async def html(req: web.Request) -> web.Response:
        return web.Response(text="<html>proxy error</html>")

    server: TestServer = await aiohttp_server(_app("/api/v2/alerts", html, method="GET"))
    async with aiohttp.ClientSession() as session:
        client = AlertmanagerClient(session, str(server.make_url("")))
        try:
            await client.alerts([parse_matcher('service="checkout"')])
        except AlertmanagerError as exc:
            assert "not JSON" in str(exc)
        else:
            raise AssertionError("HTML must not pass as an answer")


def _app(path: str, handler: Any, method: str = "POST") -> web.Application:
    app = web.Application()
    app.router.add_route(method, path, handler)
    return app


async def test_expiring_a_silence_alertmanager_forgot_counts_as_expired(
    aiohttp_server: Any,
) -> None:
    async def forgotten(req: web.Request) -> web.Response:  # Alertmanager 0.25's answer
        return web.json_response("silence not found", status=500)

    async def broken(req: web.Request) -> web.Response:
        return web.json_response("internal error", status=500)

    app = web.Application()
    app.router.add_delete("/api/v2/silence/gone", forgotten)
    app.router.add_delete("/api/v2/silence/other", broken)
    server: TestServer = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        client = AlertmanagerClient(session, str(server.make_url("")), retries=0)
        await client.expire_silence("gone")
        try:
            await client.expire_silence("other")
        except AlertmanagerError as exc:
            assert exc.status == 500
        else:
            raise AssertionError("a real failure must raise")
