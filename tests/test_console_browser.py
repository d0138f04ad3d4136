"""The console in a real browser: Debian's Chromium, headless, driven by Selenium through
Debian's chromedriver (``scripts/install-test-deps.sh`` installs both; Selenium never
downloads a driver here: the Service names /usr/bin/chromedriver).

Incidents are opened by posting Alertmanager webhooks to a real server on loopback,
Slack is the loopback fake. The on-call signs in, sees the list, filters it, opens an
incident and acknowledges it: the page, the store and the Slack message all say so.
An incident whose labels carry HTML and script is on the same list and stays text.

With ``CONSOLE_SCREENSHOTS=docs`` the list, an incident and the playbooks page are saved
as ``docs/console-list.png``, ``docs/console-incident.png`` and
``docs/console-playbooks.png`` (the README shows them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient

from bot import keys
from bot.app import create_app
from bot.core.incidents import Status
from bot.playbook.model import Playbook
from bot.playbook.registry import PlaybookSet
from conftest import payload
from consolekit import ALICE, console_section, fire
from fakes import FakeSlack
from remediation_kit import Receiver, group
from slackkit import message_text, slack_settings
from stack import free_port

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
    reason="needs Debian's chromium and chromium-driver (scripts/install-test-deps.sh)",
)
T = TypeVar("T")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


async def call(fn: Callable[..., T], *args: Any) -> T:
    """A WebDriver call off the event loop, which must keep serving the pages."""
    return await asyncio.to_thread(fn, *args)


async def until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """``check()``'s answer once it is true. An element the page swapped out while it
    was read (it refreshes itself) is not an answer yet: the next round reads it again."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = await check()
        except StaleElementReferenceException:
            found = None
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def playbook(receiver: Receiver) -> dict[str, Any]:
    """A playbook for the checkout errors: one diagnostic (Prometheus is not there: not
    checked) and a restart that waits for approval."""
    return {
        "name": "checkout-errors",
        "description": "5xx on checkout: check the error ratio, restart the pods on approval.",
        "match": ['alertname="HighErrorRate"'],
        "diagnostics": [
            {
                "name": "error_ratio",
                "kind": "promql",
                "label": "5xx ratio over 5m",
                "expect": "< 0.05",
                "query": 'sum(rate(http_requests_total{service="checkout",code=~"5.."}[5m]))',
            }
        ],
        "remediations": [
            {
                "name": "restart_pods",
                "mode": "approval",
                "description": "Restart checkout's pods",
                "action": {
                    "kind": "webhook",
                    "url": f"{receiver.url}/restart",
                    "body": {"service": "{{ labels.service }}"},
                },
            }
        ],
    }


def shot(driver: Any, name: str, tmp_path: Path) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    target = Path(folder) if folder else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 40, 700), 2400))
    driver.save_screenshot(str(target / name))
    driver.set_window_size(1280, 1000)


async def test_sign_in_filter_open_and_acknowledge_in_chromium(
    aiohttp_client: Any, tmp_path: Path, fake_slack: FakeSlack, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with Receiver() as receiver:
        settings = slack_settings(
            tmp_path,
            fake_slack,
            sections={
                "server": {"public_url": base},
                "console": console_section(refresh_every="5s"),
                "remediation": {"mode": "approval", "allowed_urls": [receiver.url]},
            },
        )
        app = create_app(settings)
        app[keys.PLAYBOOKS] = PlaybookSet([Playbook.model_validate(playbook(receiver))])
        client: TestClient = await aiohttp_client(app, server_kwargs={"port": port})
        checkout = await fire(client, payload("captured-firing"))
        await fire(client, group({"alertname": "DiskFilling", "service": "search"}))
        hostile = await fire(
            client, group({"alertname": "Hostile", "service": "web"}, labels={"note": HOSTILE})
        )
        await fire(client, group({"alertname": "CacheDown", "service": "cart"}))

        async def posted() -> bool:
            return len(fake_slack.calls("chat.postMessage")) >= 4

        await until(posted, "the Slack messages of the four incidents")
        # the message links to the incident's page in the console
        first = next(
            m for m in fake_slack.messages.values() if f"#{checkout.id} " in message_text(m)
        )
        assert f"{base}/ui/incidents/{checkout.id}" in message_text(first)

        driver = browser
        await call(driver.get, f"{base}/ui/")
        assert driver.find_elements(By.ID, "signin")  # nobody signed in yet: the way in
        await call(driver.find_element(By.ID, "token").send_keys, ALICE)
        await call(driver.find_element(By.CSS_SELECTOR, "#signin button").click)
        await until(lambda: _async(driver.find_elements, By.CSS_SELECTOR, "tr.incident"), "list")
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.incident")
        assert len(rows) == 4
        assert driver.find_element(By.ID, "viewer").text == "alice"
        # the hostile labels are text: no script ran, no image was made of them
        assert driver.execute_script("return window.pwned === undefined")
        await call(driver.get, f"{base}/ui/incidents/{hostile.id}")
        labels = driver.find_element(By.CSS_SELECTOR, "ul.labels").text
        assert "<script>window.pwned=1</script>" in labels
        assert driver.execute_script("return window.pwned === undefined")
        assert not driver.find_elements(By.CSS_SELECTOR, "main img")
        await call(driver.get, f"{base}/ui/")

        # filter: the checkout service only
        service = driver.find_element(By.NAME, "service")
        await call(service.send_keys, "checkout")
        await call(driver.find_element(By.CSS_SELECTOR, "#filters button").click)
        await until(lambda: _async(lambda: "service=checkout" in driver.current_url), "filter")
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.incident")
        assert [r.get_attribute("data-id") for r in rows] == [str(checkout.id)]

        # open it, and acknowledge
        await call(rows[0].find_element(By.CSS_SELECTOR, "td.title a").click)
        await until(lambda: _async(driver.find_elements, By.ID, "acknowledge"), "incident page")
        assert driver.find_element(By.ID, "status").text == "triggered"
        await call(driver.find_element(By.ID, "acknowledge").click)
        page = await until(
            lambda: _async(lambda: acknowledged_page(driver)), "the page to say acknowledged"
        )
        assert page["said"] == f"You acknowledged #{checkout.id}."
        assert page["by"].startswith("alice")
        assert "acknowledged by alice in the console" in page["timeline"]

        stored = await client.app[keys.STORE].get_incident(checkout.id)
        assert stored.status is Status.ACKNOWLEDGED
        assert stored.acknowledged_by == "alice"

        async def slack_says() -> bool:
            return any(
                "Acknowledged by alice" in message_text(dict(update.params))
                for update in fake_slack.calls("chat.update")
            )

        await until(slack_says, "the Slack message to say who acknowledged")
        await until(
            lambda: _async(lambda: bool(driver.find_elements(By.CSS_SELECTOR, "form.decide"))),
            "the approval buttons",
            timeout=15,
        )
        await call(driver.refresh)
        await call(shot, driver, "console-incident.png", tmp_path)
        await call(driver.get, f"{base}/ui/")
        await until(lambda: _async(driver.find_elements, By.CSS_SELECTOR, "tr.incident"), "list")
        await call(shot, driver, "console-list.png", tmp_path)

        # the open list shows an incident opened meanwhile, without a reload
        await fire(client, group({"alertname": "QueueBacklog", "service": "batch"}))

        async def five_rows() -> bool:
            rows = await call(driver.find_elements, By.CSS_SELECTOR, "tr.incident")
            return len(rows) == 5

        await until(five_rows, "the list to refresh itself", timeout=15)
        assert driver.execute_script("return document.getElementById('live').dataset.updated")

        # the playbooks page counts the match and the acknowledgement
        await call(driver.find_element(By.LINK_TEXT, "Playbooks").click)
        row = '#playbooks tr[data-playbook="checkout-errors"][data-window="7 days"]'
        await until(lambda: _async(driver.find_elements, By.CSS_SELECTOR, row), "playbooks")
        cells = [td.text for td in driver.find_elements(By.CSS_SELECTOR, f"{row} td")]
        assert cells[1:4] == ["7 days", "1", "1"], cells  # matched once, acknowledged once
        await call(shot, driver, "console-playbooks.png", tmp_path)


def acknowledged_page(driver: Any) -> dict[str, str] | None:
    """What the incident page says, read in one script (the page swaps its content in
    every few seconds: elements found one call apart may be gone), once it says
    acknowledged."""
    page: dict[str, str] = driver.execute_script(
        "const text = (id) => (document.getElementById(id) || {}).textContent || '';"
        "return {status: text('status').trim(), said: text('said').trim(),"
        " by: text('acknowledged-by').trim(), timeline: text('timeline')};"
    )
    return page if page["status"] == "acknowledged" else None


async def _async(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)
