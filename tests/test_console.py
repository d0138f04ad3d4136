"""The console at /ui/ over HTTP (the browser test drives the same pages in Chromium):
off unless configured, who may get in and how, CSRF on every form, actions through the
same code as Slack's buttons with the person's name on the timeline, and pages that
show neither a secret nor a hostile label as anything but text."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.incidents import EventKind, Status
from bot.remediation.records import ApprovalState, StepState, approvals_of
from conftest import make_settings, payload
from consolekit import ALICE, BOB, FORM, act, console_section, csrf_of, fire, said, sign_in
from remediation_kit import Receiver, group, playbook, start

HOSTILE = [
    '<script>document.title="pwned"</script>',
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "{{ 7*7 }}{% raw %}",
    "</textarea><svg onload=alert(1)>",
]


async def console_client(aiohttp_client: Any, tmp_path: Path, **console: Any) -> TestClient:
    settings = make_settings(tmp_path, console=console_section(**console))
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


async def test_the_console_is_off_without_a_console_section(
    aiohttp_client: Any, settings: Any
) -> None:
    client = await aiohttp_client(create_app(settings))
    for path in ("/ui", "/ui/", "/ui/incidents/1", "/ui/playbooks", "/ui/signin"):
        answer = await client.get(path, allow_redirects=False)
        assert answer.status == 404, path
        assert (await answer.json())["error"] == "not_configured"
    answer = await client.post("/ui/action", data="do=acknowledge&incident=1", headers=FORM)
    assert answer.status == 404


async def test_pages_answer_whoever_is_not_signed_in_with_the_sign_in_form(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await console_client(aiohttp_client, tmp_path)
    incident = await fire(client, payload("captured-firing"))
    for path in ("/ui/", f"/ui/incidents/{incident.id}", "/ui/playbooks?x=1"):
        answer = await client.get(path, allow_redirects=False)
        html = await answer.text()
        assert answer.status == 401
        assert f'name="next" value="{path}"' in html and 'id="signin"' in html
        assert "HighErrorRate" not in html
    for path in ("/ui/action", "/ui/signout"):
        answer = await client.post(path, data="do=acknowledge&incident=1", headers=FORM)
        assert answer.status == 401
    # signing in from there comes back to the page asked for
    page = await client.get(f"/ui/incidents/{incident.id}")
    answer = await client.post(
        "/ui/signin",
        data={"csrf": csrf_of(await page.text()), "token": ALICE, "next": page.url.path},
        allow_redirects=False,
    )
    assert answer.headers["Location"] == f"/ui/incidents/{incident.id}"


async def test_sign_in_gives_a_strict_session_cookie(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await console_client(aiohttp_client, tmp_path)
    form = await client.get("/ui/signin")
    assert "HttpOnly" in form.headers["Set-Cookie"]  # the double-submit token's cookie
    csrf = csrf_of(await form.text())
    wrong = await client.post("/ui/signin", data={"csrf": csrf, "token": "x" * 30})
    assert wrong.status == 401 and "not known" in await wrong.text()
    forged = await client.post("/ui/signin", data={"csrf": "other", "token": ALICE})
    assert forged.status == 403 and "expired" in await forged.text()
    answer = await client.post(
        "/ui/signin",
        data={"csrf": csrf, "token": ALICE, "next": "https://evil.example/"},
        allow_redirects=False,
    )
    assert answer.status == 303
    assert answer.headers["Location"] == "/ui/"  # never another site
    cookie = answer.headers["Set-Cookie"]
    assert "alertpilot_session=" in cookie and ALICE not in cookie
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"):
        assert attribute in cookie
    assert "Secure" not in cookie  # public_url is not https here
    page = await client.get("/ui/")
    assert page.status == 200 and '<span id="viewer">alice</span>' in await page.text()
    # signing out ends the session on the server, not only in this browser
    session = client.session.cookie_jar.filter_cookies(client.make_url("/ui/"))
    held = session["alertpilot_session"].value
    out = await client.post("/ui/signout", data={"csrf": csrf_of(await page.text())})
    assert out.status == 200 and "/ui/signin" in str(out.url)
    client.session.cookie_jar.update_cookies({"alertpilot_session": held})
    again = await client.get("/ui/", allow_redirects=False)
    assert again.status == 401


async def test_the_cookie_is_secure_behind_https(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        server={"public_url": "https://alertpilot.example.com"},
        console=console_section(),
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    form = await client.get("/ui/signin")
    assert "Secure" in form.headers["Set-Cookie"]
    csrf = csrf_of(await form.text())
    answer = await client.post(  # a browser sends a Secure cookie over https only: by hand
        "/ui/signin",
        data={"csrf": csrf, "token": ALICE},
        headers={"Cookie": f"alertpilot_signin={csrf}"},
        allow_redirects=False,
    )
    assert answer.status == 303 and "Secure" in answer.headers["Set-Cookie"]


async def test_sign_in_attempts_are_limited(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await console_client(aiohttp_client, tmp_path)
    csrf = csrf_of(await (await client.get("/ui/signin")).text())
    statuses = []
    for _ in range(11):
        answer = await client.post("/ui/signin", data={"csrf": csrf, "token": "y" * 20})
        statuses.append(answer.status)
    assert statuses[:10] == [401] * 10 and statuses[10] == 429


async def test_every_form_checks_its_csrf_token(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await console_client(aiohttp_client, tmp_path)
    incident = await fire(client, payload("captured-firing"))
    csrf = await sign_in(client)
    for token in ("", "wrong", csrf[:-1]):
        status, html = await act(client, token, incident.id, "acknowledge")
        assert status == 403 and "expired" in html
    status, _ = await act(client, "wrong", incident.id, "resolve")
    assert status == 403
    out = await client.post("/ui/signout", data={"csrf": "wrong"})
    assert out.status == 403
    stored = await client.app[keys.STORE].get_incident(incident.id)
    assert stored.status is Status.TRIGGERED
    assert [e.kind for e in stored.timeline if e.actor == "alice"] == []


async def test_a_form_from_another_site_is_refused(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await console_client(aiohttp_client, tmp_path)
    incident = await fire(client, payload("captured-firing"))
    csrf = await sign_in(client)
    answer = await client.post(
        "/ui/action",
        data={"csrf": csrf, "incident": str(incident.id), "do": "acknowledge"},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert answer.status == 403
    stored = await client.app[keys.STORE].get_incident(incident.id, timeline=False)
    assert stored.status is Status.TRIGGERED


async def test_acknowledge_and_resolve_are_recorded_with_the_persons_name(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await console_client(aiohttp_client, tmp_path)
    incident = await fire(client, payload("captured-firing"))
    csrf = await sign_in(client, BOB)
    status, html = await act(client, csrf, incident.id, "acknowledge")
    assert status == 200 and said(html) == f"You acknowledged #{incident.id}."
    assert '<span class="status status-acknowledged" id="status">' in html
    status, html = await act(client, csrf, incident.id, "acknowledge")
    assert said(html) == f"#{incident.id} is already acknowledged by bob."
    status, html = await act(client, csrf, incident.id, "resolve")
    assert said(html) == f"You resolved #{incident.id}."
    stored = await client.app[keys.STORE].get_incident(incident.id)
    assert stored.status is Status.RESOLVED and stored.acknowledged_by == "bob"
    mine = [e for e in stored.timeline if e.actor == "bob"]
    assert [(e.kind, e.message, e.data["source"]) for e in mine] == [
        (EventKind.ACKNOWLEDGED, "acknowledged by bob in the console", "console"),
        (EventKind.RESOLVED, "resolved by bob in the console: resolved in the console", "console"),
    ]
    assert 'id="acknowledge"' not in html and 'id="resolve"' not in html  # nothing left to do


async def test_a_trusted_proxy_names_the_user(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, console={"trusted_proxies": ["127.0.0.0/8"], "user_header": "X-Auth-Request-User"}
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    incident = await fire(client, payload("captured-firing"))
    who = {"X-Auth-Request-User": "carol@example.com"}
    page = await client.get("/ui/", headers=who)
    assert page.status == 200
    html = await page.text()
    assert '<span id="viewer">carol@example.com</span>' in html
    assert "Sign out" not in html  # the proxy signs people out
    html = await (await client.get(f"/ui/incidents/{incident.id}", headers=who)).text()
    answer = await client.post(
        "/ui/action",
        data={"csrf": csrf_of(html), "incident": str(incident.id), "do": "acknowledge"},
        headers=who,
    )
    assert said(await answer.text()) == f"You acknowledged #{incident.id}."
    stored = await client.app[keys.STORE].get_incident(incident.id, timeline=False)
    assert stored.acknowledged_by == "carol@example.com"
    # another name cannot use carol's form token
    forged = await client.post(
        "/ui/action",
        data={"csrf": csrf_of(html), "incident": str(incident.id), "do": "resolve"},
        headers={"X-Auth-Request-User": "mallory"},
    )
    assert forged.status == 403
    # no header: nobody, and no sign-in form to fall back on
    assert (await client.get("/ui/", allow_redirects=False)).status == 401


async def test_the_user_header_is_ignored_from_elsewhere(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await console_client(aiohttp_client, tmp_path, trusted_proxies=["10.0.0.0/8"])
    answer = await client.get("/ui/", headers={"X-Forwarded-User": "alice"})
    assert answer.status == 401 and 'id="signin"' in await answer.text()


async def test_hostile_labels_are_text_on_every_page(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await console_client(aiohttp_client, tmp_path)
    labels = {f"x{i}": value for i, value in enumerate(HOSTILE)}
    incident = await fire(
        client,
        group({"alertname": "Hostile", "service": HOSTILE[1]}, labels=labels),
    )
    await sign_in(client)
    for path in (
        "/ui/",
        f"/ui/incidents/{incident.id}",
        "/ui/?q=" + "%3Cscript%3E",
        "/ui/?service=%22%3E%3Cimg",
    ):
        answer = await client.get(path)
        html = await answer.text()
        assert answer.status == 200
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert "<script>document" not in html and "<img src=x" not in html
        assert "<svg" not in html and "</textarea><svg" not in html
        assert len(re.findall(r"<script\b", html)) == 1  # the console's own script
    page = await (await client.get(f"/ui/incidents/{incident.id}")).text()
    assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in page
    assert "{{ 7*7 }}{% raw %}" in page  # printed, not evaluated
    found = await (await client.get("/ui/?q=" + "onerror")).text()
    assert f'data-id="{incident.id}"' in found  # searched in the labels


async def test_no_page_shows_a_secret(aiohttp_client: Any, tmp_path: Path) -> None:
    async with Receiver() as receiver:
        step = {
            "name": "restart",
            "mode": "approval",
            "action": {
                "kind": "webhook",
                "url": f"{receiver.url}/restart",
                "headers": {"Authorization": "Bearer hook-secret-0123456789"},
            },
        }
        h = await start(
            aiohttp_client,
            tmp_path,
            [playbook(step)],
            console=console_section(),
            remediation={"mode": "approval", "allowed_urls": [receiver.url]},
        )
        incident_id = await h.fire({"alertname": "CacheDown"})
        await h.wait_step(incident_id, "restart", {StepState.PENDING_APPROVAL})
        await sign_in(h.client)
        pages = ["/ui/", f"/ui/incidents/{incident_id}", "/ui/playbooks", "/ui/signin"]
        secrets = [*h.app[keys.SETTINGS].secret_values(), "hook-secret-0123456789"]
        for path in pages:
            html = await (await h.client.get(path)).text()
            for secret in secrets:
                assert secret not in html, (path, secret)


async def test_approvals_follow_console_approvers(aiohttp_client: Any, tmp_path: Path) -> None:
    async with Receiver() as receiver:
        step = {
            "name": "restart",
            "mode": "approval",
            "action": {"kind": "webhook", "url": f"{receiver.url}/restart"},
        }
        h = await start(
            aiohttp_client,
            tmp_path,
            [playbook(step)],
            console=console_section(),
            remediation={"mode": "approval", "allowed_urls": [receiver.url]},
        )
        incident_id = await h.fire({"alertname": "CacheDown"})
        await h.wait_step(incident_id, "restart", {StepState.PENDING_APPROVAL})
        bob = await sign_in(h.client, BOB)
        _, html = await act(h.client, bob, incident_id, "approve", step="restart")
        assert said(html) == (
            "You cannot approve remediations: you are not an approver for remediations "
            "(console.approvers)."
        )
        notes = await h.events(incident_id, EventKind.NOTE)
        assert notes[-1].message == (
            "bob tried to approve 'restart' in the console: refused (you are not an approver "
            "for remediations (console.approvers))"
        )
        assert (await h.step(incident_id, "restart")).state is StepState.PENDING_APPROVAL
        h.client.session.cookie_jar.clear()
        alice = await sign_in(h.client, ALICE)
        _, html = await act(h.client, alice, incident_id, "approve", step="restart")
        assert said(html) == f"You approved restart on #{incident_id}."
        approval = approvals_of(await h.incident(incident_id))["restart"]
        assert (approval.state, approval.actor, approval.source) == (
            ApprovalState.APPROVED,
            "alice",
            "console",
        )
        await h.wait_step(incident_id, "restart", {StepState.SUCCEEDED})
        assert [r.path for r in receiver.received] == ["/restart"]
        _, html = await act(h.client, alice, incident_id, "reject", step="restart")
        assert said(html) == (  # the engine's own refusal, as in Slack
            f"step 'restart' of incident #{incident_id} is not awaiting approval (it is succeeded)"
        )


async def test_a_silence_is_capped_and_alertmanager_trouble_is_said(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await console_client(aiohttp_client, tmp_path, max_silence="4h")
    incident = await fire(client, payload("captured-firing"))
    csrf = await sign_in(client)
    page = await (await client.get(f"/ui/incidents/{incident.id}")).text()
    assert '<option value="3600">1h</option>' in page and "86400" not in page
    _, html = await act(client, csrf, incident.id, "silence", length="86400")
    assert said(html) == "A silence from the console lasts 1m to 4h (console.max_silence)."
    _, html = await act(client, csrf, incident.id, "silence", length="3600")
    assert said(html).startswith("Nothing was silenced: ")  # no Alertmanager on 127.0.0.1:9
    stored = await client.app[keys.STORE].get_incident(incident.id, timeline=False)
    assert "silences" not in stored.data


async def test_the_list_filters_searches_and_pages(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await console_client(aiohttp_client, tmp_path, page_size=5)
    opened = []
    for n in range(6):
        severity = "critical" if n == 0 else "warning"
        opened.append(
            await fire(
                client,
                group(
                    {"alertname": f"Alert{n}", "service": "cart" if n % 2 else "search"},
                    labels={"severity": severity, "pod": f"pod-{n}"},
                    fingerprint=f"f000000{n}",
                ),
            )
        )
    csrf = await sign_in(client)
    await act(client, csrf, opened[1].id, "acknowledge")

    async def ids(query: str) -> list[int]:
        html = await (await client.get("/ui/" + query)).text()
        return [int(found) for found in re.findall(r'data-id="(\d+)"', html)]

    newest = [i.id for i in reversed(opened)]
    assert await ids("") == newest[:5]
    assert await ids("?page=2") == newest[5:]
    assert await ids("?status=acknowledged") == [opened[1].id]
    assert await ids("?severity=P1") == [opened[0].id]
    assert await ids("?service=cart") == [i.id for i in reversed(opened) if i.id % 2 == 0][:5]
    assert await ids("?q=POD-3") == [opened[3].id]  # a label value, any case
    assert await ids("?q=alert4") == [opened[4].id]  # the title
    assert await ids("?range=1h") == newest[:5]
    assert await ids("?status=bogus&page=x") == newest[:5]  # ignored, not an error page
    assert await ids("?page=0") == newest[:5]
    assert await ids("?page=" + "9" * 5000) == newest[:5]
    html = await (await client.get("/ui/")).text()
    assert 'href="/ui/?page=2" rel="next"' in html
    assert "alice" in html  # acknowledged by, in the list


async def test_an_unknown_incident_is_a_page_that_says_so(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await console_client(aiohttp_client, tmp_path)
    csrf = await sign_in(client)
    for path in ("/ui/incidents/999", "/ui/incidents/abc"):
        answer = await client.get(path)
        assert answer.status == 404 and "No such incident" in await answer.text()
    status, _ = await act(client, csrf, 999, "acknowledge")
    assert status == 404


async def test_static_files_and_their_headers(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await console_client(aiohttp_client, tmp_path)
    css = await client.get("/ui/static/console.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    js = await client.get("/ui/static/console.js")
    assert js.status == 200 and "setInterval" in await js.text()
    assert (await client.get("/ui/static/../../settings.py")).status in (401, 404)
    assert (await client.get("/ui/static/nothing.js")).status == 404


@pytest.mark.parametrize("broken", [{}, {"users": [{"name": "a", "token": "short"}]}])
def test_a_console_nobody_can_use_is_a_config_error(tmp_path: Path, broken: Any) -> None:
    with pytest.raises(ValueError):
        make_settings(tmp_path, console=broken)


def test_check_warns_about_a_console_without_tls_or_links(tmp_path: Path) -> None:
    from bot.console.advice import console_warnings

    exposed = make_settings(
        tmp_path,
        server={"listen": "0.0.0.0:8080", "webhook_token": "w" * 20},
        console=console_section(approvers=["alice", "zed"]),
    )
    warnings = "\n".join(console_warnings(exposed))
    assert "without TLS" in warnings
    assert "server.public_url is not set" in warnings
    assert "names zed, who cannot sign in" in warnings
    behind_tls = make_settings(
        tmp_path,
        server={"public_url": "https://alertpilot.example.com"},
        console=console_section(),
    )
    assert console_warnings(behind_tls) == []
    assert console_warnings(make_settings(tmp_path)) == []


def graphed_playbook() -> dict[str, Any]:
    ones = {"name": "ones", "kind": "promql", "query": "vector(1)", "expect": "< 2"}
    return {**playbook(), "diagnostics": [{**ones, "primary": True}]}


@pytest.mark.integration
async def test_the_graph_is_drawn_from_the_playbook_query(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    from stack import Prometheus

    async with Prometheus(tmp_path) as prom:
        h = await start(
            aiohttp_client,
            tmp_path,
            [graphed_playbook()],
            console=console_section(),
            prometheus={"url": prom.url, "timeout": 5},
        )
        incident_id = await h.fire({"alertname": "CacheDown"})
        await sign_in(h.client)
        page = await (await h.client.get(f"/ui/incidents/{incident_id}")).text()
        assert f'src="/ui/incidents/{incident_id}/graph.png"' in page
        answer = await h.client.get(f"/ui/incidents/{incident_id}/graph.png")
        assert answer.status == 200 and answer.content_type == "image/png"
        assert (await answer.read()).startswith(b"\x89PNG\r\n\x1a\n")


async def test_no_graph_without_a_query_or_without_prometheus(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    h = await start(aiohttp_client, tmp_path, [graphed_playbook()], console=console_section())
    graphed = await h.fire({"alertname": "CacheDown"})
    other = await fire(h.client, payload("captured-firing"))  # its Prometheus: not ours
    await sign_in(h.client)
    page = await (await h.client.get(f"/ui/incidents/{other.id}")).text()
    assert "graph.png" not in page
    assert (await h.client.get(f"/ui/incidents/{other.id}/graph.png")).status == 404
    answer = await h.client.get(f"/ui/incidents/{graphed}/graph.png")  # 127.0.0.1:9
    assert answer.status == 503 and "Prometheus did not answer" in await answer.text()
    h.client.session.cookie_jar.clear()
    gone = await h.client.get(f"/ui/incidents/{graphed}/graph.png")
    assert gone.status == 401


@pytest.mark.integration
async def test_a_silence_from_the_console_is_made_recorded_and_expired_on_resolve(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    from stack import Alertmanager

    async with Alertmanager(tmp_path, "http://127.0.0.1:9/unused") as am:
        settings = make_settings(tmp_path, alertmanager={"url": am.url}, console=console_section())
        client: TestClient = await aiohttp_client(create_app(settings))
        incident = await fire(client, payload("captured-firing"))
        csrf = await sign_in(client)
        _, html = await act(client, csrf, incident.id, "silence", length="resolved")
        assert said(html).startswith(
            f"Silenced #{incident.id} until resolved or for 1d at most: 3 alerts, one silence"
        )
        stored = await client.app[keys.STORE].get_incident(incident.id)
        records = stored.data["silences"]
        assert [(r["source"], r["by"], r["expire_on_resolve"]) for r in records] == [
            ("console", "alice", True)
        ] * 3
        made = {s["id"]: s for s in await am.silences()}
        assert {made[r["id"]]["createdBy"] for r in records} == {"alice"}
        note = [e for e in stored.timeline if e.kind == EventKind.NOTE][-1]
        assert note.actor == "alice" and "by alice in the console" in note.message
        assert note.data["source"] == "console"
        assert "silenced" in html and records[0]["id"] in html  # listed on the page

        await act(client, csrf, incident.id, "resolve")

        async def expired() -> bool:
            held = await client.app[keys.STORE].get_incident(incident.id, timeline=False)
            return all(r.get("expired_at") for r in held.data["silences"])

        deadline = asyncio.get_running_loop().time() + 15
        while not await expired():
            assert asyncio.get_running_loop().time() < deadline, "silences not expired"
            await asyncio.sleep(0.05)
        states = {s["id"]: s["status"]["state"] for s in await am.silences()}
        assert {states[r["id"]] for r in records} == {"expired"}


NASTY = ["", "0", "-1", "1e9", "9" * 40, "\x00", "%", "'; DROP TABLE incidents;--", *HOSTILE]


async def test_odd_input_gets_an_answer_never_a_server_error(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await console_client(aiohttp_client, tmp_path)
    incident = await fire(client, payload("captured-firing"))
    csrf = await sign_in(client)
    for value in NASTY:
        for name in ("status", "severity", "service", "range", "q", "page"):
            answer = await client.get("/ui/", params={name: value})
            assert answer.status == 200, (name, value)
        answer = await client.get("/ui/incidents/" + quote(value, safe=""))
        assert answer.status in (200, 404), value
        for fields in (
            {"incident": value, "do": "acknowledge"},
            {"incident": str(incident.id), "do": value},
            {"incident": str(incident.id), "do": "silence", "length": value},
            {"incident": str(incident.id), "do": "approve", "step": value},
        ):
            answer = await client.post("/ui/action", data={"csrf": csrf, **fields})
            assert answer.status in (200, 404), (fields, answer.status)
    stored = await client.app[keys.STORE].get_incident(incident.id, timeline=False)
    assert stored.status is Status.TRIGGERED  # none of it acknowledged anything


def test_ages_and_list_links_read_as_people_write_them() -> None:
    from bot.console.filters import Filters
    from bot.console.present import age

    now = 1_800_000_000.0
    assert [age(now - s, now) for s in (-5, 42, 300, 7500, 3 * 86400 + 4 * 3600 + 59)] == [
        "0s",
        "42s",
        "5m",
        "2h5m",
        "3d4h",
    ]
    filters = Filters.parse({"status": "triggered", "q": "a&b", "page": "3"})
    assert filters.link(page=2) == "/ui/?status=triggered&q=a%26b&page=2"
    assert filters.link(page=1) == "/ui/?status=triggered&q=a%26b"
    assert Filters.parse({}).link() == "/ui/"


def test_a_narratives_bold_and_code_are_shown_and_nothing_else_is_markup() -> None:
    from bot.console.state import mrkdwn

    assert str(mrkdwn("*[P1] Disk* on `db-1`")) == (
        "<strong>[P1] Disk</strong> on <code>db-1</code>"
    )
    hostile = mrkdwn('*<script>x</script>* `<img src=x onerror="y">` a*b*c')
    assert str(hostile) == (
        "<strong>&lt;script&gt;x&lt;/script&gt;</strong> "
        "<code>&lt;img src=x onerror=&#34;y&#34;&gt;</code> a*b*c"
    )
