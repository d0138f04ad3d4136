"""Helpers for the console tests: settings with a console, signing in as a browser does
(the form's CSRF token, the session cookie), and what a page's forms carry."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from html import unescape
from typing import Any

from aiohttp.test_utils import TestClient

from bot import keys
from bot.core.incidents import Incident

ALICE = "alice-console-token-0123456789"
BOB = "bob-console-token-0123456789ab"
USERS = [{"name": "alice", "token": ALICE}, {"name": "bob", "token": BOB}]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def console_section(**extra: Any) -> dict[str, Any]:
    return {"users": USERS, "approvers": ["alice"], **extra}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def sign_in(client: TestClient, token: str = ALICE) -> str:
    """Sign in through the form; the CSRF token the pages' forms now carry."""
    page = await client.get("/ui/signin")
    assert page.status == 200
    answer = await client.post(
        "/ui/signin",
        data={"csrf": csrf_of(await page.text()), "token": token, "next": "/ui/"},
        allow_redirects=False,
    )
    assert answer.status == 303, await answer.text()
    listing = await client.get("/ui/")
    assert listing.status == 200
    return csrf_of(await listing.text())


async def act(
    client: TestClient, csrf: str, incident_id: int, do: str, **fields: str
) -> tuple[int, str]:
    """Press a button on the incident's page: the status and the page it leads to."""
    answer = await client.post(
        "/ui/action", data={"csrf": csrf, "incident": str(incident_id), "do": do, **fields}
    )
    return answer.status, await answer.text()


def said(html: str) -> str:
    """What the page says an action did, as text."""
    found = re.search(r'id="said">([^<]*)<', html)
    return unescape(found.group(1)) if found else ""


async def fire(client: TestClient, group: Mapping[str, Any]) -> Incident:
    """Post an Alertmanager group to the webhook; the incident it opened or updated."""
    answer = await client.post("/alertmanager", json=group)
    assert answer.status == 200, await answer.text()
    store = client.app[keys.STORE]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await client.app[keys.INBOX].drain()
        for incident in await store.list_incidents(limit=50):  # newest first
            if incident.group_key == group["groupKey"]:
                return incident
        await asyncio.sleep(0.02)
    raise AssertionError(f"no incident for {group['groupKey']}")
