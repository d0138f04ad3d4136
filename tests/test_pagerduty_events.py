"""PagerDuty Events API v2 out, through the real app and the HTTPS fake: what is sent, once,
in order, and how 429 / 5xx / 400, the rate limit, outages and restarts are handled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot import keys
from bot.core.clock import ManualClock, SystemClock
from bot.core.incidents import EventKind, Incident, Status
from bot.store.base import IncidentChange
from fakes import FakePagerDuty
from pagerduty_kit import ROUTING_KEY, alert_group, start_bot


async def test_trigger_carries_what_the_responder_needs(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client,
        tmp_path,
        fake_pagerduty,
        ManualClock(),
        # where the alert's links point: its Prometheus and Alertmanager, the runbook wiki
        prometheus={"external_url": "http://prometheus.example:9090"},
        alertmanager={"external_url": "http://alertmanager.example:9093"},
        links={"allowed_urls": ["https://runbooks.example.com"]},
    )
    await bot.post_alert(alert_group(severity="error"))  # P1: pages after 5 minutes
    await bot.settle()
    incident = await bot.incident()
    permalink = "https://acme.slack.com/archives/C0ALERTS/p1714557600000100"
    diagnostics = [
        {"name": "db", "label": "DB pool in use", "status": "success", "passed": True,
         "value": 0.4, "text": "40%"},
        {"name": "errors", "label": "5xx share", "status": "success", "passed": False,
         "value": 0.12, "text": "12% (expected < 5%)"},
    ]  # fmt: skip
    await bot.store.update_incident(
        incident.id,
        now=bot.clock.now(),
        data={"slack": {"channel": "C0ALERTS", "permalink": permalink}, "diagnostics": diagnostics},
    )
    await bot.advance(300)

    [event] = fake_pagerduty.events
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == incident.key and len(incident.key) <= 255
    payload = event["payload"]
    assert payload["severity"] == "error"
    assert (
        payload["summary"] == "[P1] CheckoutErrors (service=checkout): CheckoutErrors on checkout"
    )
    assert (payload["source"], payload["component"], payload["group"], payload["class"]) == (
        "checkout-pod-a",
        "checkout",
        "shop",
        "CheckoutErrors",
    )
    details = payload["custom_details"]
    assert details["labels"]["service"] == "checkout"
    assert details["incident"] == f"#{incident.id}"
    assert details["why_paged"] == "not acknowledged within 5m (default for P1)"
    assert details["diagnostics"] == [
        "checks: 1 failed (errors), 1 passed",
        "FAIL 5xx share: 12% (expected < 5%)",
        "ok DB pool in use: 40%",
    ]
    hrefs = {link["text"]: link["href"] for link in event["links"]}
    assert hrefs["Slack thread"] == permalink
    assert (
        hrefs["Prometheus graph"] == "http://prometheus.example:9090/graph?g0.expr=CheckoutErrors"
    )
    assert hrefs["Runbook"] == "https://runbooks.example.com/CheckoutErrors"
    assert hrefs["Alertmanager"] == "http://alertmanager.example:9093"
    assert event["links"][0]["text"] == "Slack thread"
    assert "hidden_links" not in details

    state = (await bot.incident()).data["pagerduty"]
    assert state["dedup_key"] == incident.key
    assert (state["alert"], state["escalation"], state["last_action"]) == (
        "triggered",
        "paged",
        "trigger",
    )
    [page] = await bot.pages(incident.id)
    assert page.data["action"] == "trigger" and page.data["outcome"] == "sent"


async def test_one_trigger_whatever_the_duplicates_and_restarts(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    clock = ManualClock()
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, clock)
    for _ in range(3):  # Alertmanager retries and HA pairs deliver the same group again
        await bot.post_alert(alert_group())
    await bot.settle()
    second = alert_group(fingerprint="fp000002")  # another alert joins the group
    await bot.post_alert(second)
    await bot.settle()
    incident = await bot.incident()
    await bot.actions.escalate(incident.id, actor="ada", source="slack", reason="wake someone")
    await bot.settle()
    assert bot.actions_sent() == [("trigger", incident.key)]

    await bot.client.close()  # restart on the same store
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, clock)
    await bot.post_alert(alert_group())
    await bot.advance(3600)
    assert bot.actions_sent() == [("trigger", incident.key)]

    resolved = alert_group(status="resolved")
    resolved["alerts"] += alert_group(status="resolved", fingerprint="fp000002")["alerts"]
    await bot.post_alert(resolved)
    await bot.post_alert(resolved)
    await bot.settle()
    assert (await bot.incident()).status is Status.RESOLVED
    assert bot.actions_sent() == [("trigger", incident.key), ("resolve", incident.key)]


async def test_ack_in_slack_then_resolve_follow_in_order(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    await bot.post_alert(alert_group(severity="critical"))
    await bot.settle()
    incident = await bot.incident()
    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")
    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")  # a double click
    await bot.settle()
    await bot.post_alert(alert_group(status="resolved"))
    await bot.settle()

    key = incident.key
    assert bot.actions_sent() == [("trigger", key), ("acknowledge", key), ("resolve", key)]
    assert fake_pagerduty.alerts[key] == "resolved"
    pages = await bot.pages(incident.id)
    assert [p.data["action"] for p in pages] == ["trigger", "acknowledge", "resolve"]
    assert "acknowledged by ada in Slack" in pages[1].message
    state = (await bot.incident()).data["pagerduty"]
    assert (state["alert"], state["last_action"]) == ("resolved", "resolve")
    assert [s["action"] for s in state["sent"]] == ["trigger", "acknowledge", "resolve"]


async def test_no_ack_or_resolve_for_an_incident_never_paged(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    await bot.post_alert(alert_group(severity="warning"))  # P2: never pages
    await bot.settle()
    incident = await bot.incident()
    await bot.actions.acknowledge(incident.id, actor="ada", source="slack")
    await bot.settle()
    await bot.actions.resolve(incident.id, actor="ada", source="slack")
    await bot.advance(3600)
    assert fake_pagerduty.requests == []
    assert (await bot.incident()).data["pagerduty"]["escalation"] == "not_paged"


async def test_429_is_retried_after_the_backoff(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    fake_pagerduty.rate_limit_next(1, retry_after=1)
    await bot.post_alert(alert_group())
    await bot.settle()
    assert [r.status for r in fake_pagerduty.requests] == [429]
    await bot.advance(29)  # retry_backoff defaults to 30 s, as PagerDuty suggests for 429
    assert [r.status for r in fake_pagerduty.requests] == [429]
    await bot.advance(1)
    assert [r.status for r in fake_pagerduty.requests] == [429, 202]
    incident = await bot.incident()
    assert bot.actions_sent() == [("trigger", incident.key)]
    assert len(await bot.pages(incident.id)) == 1


async def test_5xx_is_retried_with_a_doubling_backoff(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_pagerduty, ManualClock(), pagerduty={"retry_backoff": "10s"}
    )
    fake_pagerduty.fail_next(2, status=502, match="/v2/enqueue")
    await bot.post_alert(alert_group())
    await bot.settle()
    await bot.advance(10)
    assert fake_pagerduty.sends() == [502, 502]
    await bot.advance(19)
    assert len(fake_pagerduty.sends()) == 2
    await bot.advance(1)
    assert fake_pagerduty.sends() == [502, 502, 202]
    assert len(fake_pagerduty.events) == 1
    # a 5xx may follow a trigger PagerDuty took: each retry looked for its incident first
    assert fake_pagerduty.lookups() == [200, 200]


async def test_a_trigger_whose_answer_was_lost_is_found_not_sent_again(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    """PagerDuty took the trigger, the answer never came back (a crash, a dropped
    connection): the retry asks the REST API for the dedup_key's incident, finds it, and
    records the page without a second trigger."""
    bot = await start_bot(
        aiohttp_client, tmp_path, fake_pagerduty, ManualClock(), pagerduty={"retry_backoff": "10s"}
    )
    fake_pagerduty.drop_answer_next()
    await bot.post_alert(alert_group())
    await bot.settle()
    await bot.advance(10)
    incident = await bot.incident()
    assert bot.actions_sent() == [("trigger", incident.key)]  # one trigger, not two
    assert fake_pagerduty.lookups() == [200]
    [page] = await bot.pages(incident.id)
    assert page.data["outcome"] == "found"
    assert page.message.startswith("PagerDuty already had the page (its incident 1, triggered)")
    state = incident.data["pagerduty"]
    assert (state["alert"], state["escalation"], state["triggering_since"]) == (
        "triggered",
        "paged",
        None,
    )
    assert state["pd_incident"]["id"] == fake_pagerduty.incidents()[0]["id"]
    # and what follows goes on as usual: the resolve follows the found trigger
    await bot.post_alert(alert_group(status="resolved"))
    await bot.settle()
    assert bot.actions_sent() == [("trigger", incident.key), ("resolve", incident.key)]


async def test_without_a_rest_token_a_lost_trigger_is_sent_again(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    """No ``api_token``: nothing to look with, so the trigger goes out again (at least
    once; the same dedup_key keeps PagerDuty at one incident)."""
    bot = await start_bot(
        aiohttp_client,
        tmp_path,
        fake_pagerduty,
        ManualClock(),
        pagerduty={"retry_backoff": "10s", "api_token": None},
    )
    fake_pagerduty.drop_answer_next()
    await bot.post_alert(alert_group())
    await bot.settle()
    await bot.advance(10)
    incident = await bot.incident()
    assert bot.actions_sent() == [("trigger", incident.key)] * 2
    assert fake_pagerduty.lookups() == []
    assert len(fake_pagerduty.incidents()) == 1


async def test_400_is_recorded_and_not_retried(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client,
        tmp_path,
        fake_pagerduty,
        ManualClock(),
        pagerduty={"routing_key": "too-short-a-routing-key"},
    )
    await bot.post_alert(alert_group())
    await bot.settle()
    await bot.advance(3600)
    assert [r.status for r in fake_pagerduty.requests] == [400]
    assert fake_pagerduty.events == []
    incident = await bot.incident()
    [page] = await bot.pages(incident.id)
    assert page.data["outcome"] == "rejected" and page.data["status"] == 400
    assert "routing_key" in page.message
    assert any("routing_key" in e for e in page.data["errors"])
    assert await bot.events(incident.id, EventKind.JOB_FAILED)
    assert incident.data["pagerduty"]["escalation"] == "rejected"
    # nothing to acknowledge or resolve: no trigger was accepted
    await bot.actions.resolve(incident.id, actor="ada", source="slack")
    await bot.settle()
    assert len(fake_pagerduty.requests) == 1


async def test_rate_limit_queues_beyond_the_limit_per_minute(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(
        aiohttp_client,
        tmp_path,
        fake_pagerduty,
        ManualClock(),
        pagerduty={"rate_limit_per_minute": 3},
    )
    for n in range(5):
        await bot.post_alert(alert_group(f"Alert{n}", fingerprint=f"fp{n:06d}"))
    await bot.settle()
    assert len(fake_pagerduty.events) == 3
    await bot.advance(59)
    assert len(fake_pagerduty.events) == 3
    await bot.advance(1)
    assert len(fake_pagerduty.events) == 5
    keys = [key for _, key in bot.actions_sent()]
    assert len(set(keys)) == 5
    assert all(r.status == 202 for r in fake_pagerduty.requests)  # queued here, never a 429


async def test_an_outage_delays_the_page_across_a_restart_and_loses_nothing(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    clock = ManualClock()
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, clock)
    fake_pagerduty.outage(True)
    await bot.post_alert(alert_group())
    await bot.settle()
    await bot.advance(30)
    assert fake_pagerduty.sends() == [503, 503]
    await bot.client.close()

    fake_pagerduty.outage(False)
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, clock)
    await bot.advance(59)
    assert fake_pagerduty.events == []
    await bot.advance(1)
    incident = await bot.incident()
    assert bot.actions_sent() == [("trigger", incident.key)]
    await bot.advance(3600)
    assert len(fake_pagerduty.events) == 1


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_with_the_background_workers_as_in_production(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    """Jobs of every kind run concurrently here; the page still follows the incident."""
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, SystemClock(), background=True)
    for n in range(4):
        await bot.post_alert(alert_group(f"Alert{n}", fingerprint=f"fp{n:06d}"))

    async def paged() -> bool:
        return len(fake_pagerduty.events) == 4

    await wait_for("four triggers", paged)
    for incident in await bot.store.list_incidents():
        await bot.actions.acknowledge(incident.id, actor="ada", source="slack")
        await bot.post_alert(
            alert_group(incident.common_labels["alertname"], status="resolved",
                        fingerprint=incident.alerts[0].fingerprint)
        )  # fmt: skip

    async def resolved() -> bool:
        return len(fake_pagerduty.events) == 12

    await wait_for("acknowledge and resolve of each", resolved)
    by_key: dict[str, list[str]] = {}
    for action, key in bot.actions_sent():
        by_key.setdefault(key, []).append(action)
    assert len(by_key) == 4
    assert all(actions == ["trigger", "acknowledge", "resolve"] for actions in by_key.values())


class WriterDuringSend:
    """The Events API client, but another writer changes the PagerDuty state while the
    event is in flight (another replica that took PagerDuty's incident.triggered webhook)."""

    def __init__(self, client: Any, write: Callable[[], Awaitable[None]]) -> None:
        self.client, self.write = client, write

    async def send(self, event: dict[str, Any]) -> Any:
        await self.write()
        return await self.client.send(event)


async def test_a_state_change_made_while_a_page_is_in_flight_is_kept(
    aiohttp_client: Any, tmp_path: Path, fake_pagerduty: FakePagerDuty
) -> None:
    bot = await start_bot(aiohttp_client, tmp_path, fake_pagerduty, ManualClock())
    html_url = "https://acme.pagerduty.com/incidents/PINC1"

    async def remember_pd_incident() -> None:
        incident = await bot.incident()

        def change(current: Incident) -> IncidentChange:
            state = {**current.data.get("pagerduty", {}), "html_url": html_url}
            state["pd_incident"] = {"id": "PINC1", "number": 7, "html_url": html_url}
            return IncidentChange(data={"pagerduty": state})

        await bot.store.change_incident(incident.id, change, now=bot.clock.now())

    pager = bot.app[keys.PAGERDUTY].pager
    pager.client = WriterDuringSend(pager.client, remember_pd_incident)
    await bot.post_alert(alert_group(severity="critical"))  # P0: pages at once
    await bot.settle()
    state = (await bot.incident()).data["pagerduty"]
    assert (state["alert"], state["escalation"], state["last_action"]) == (
        "triggered",
        "paged",
        "trigger",
    )
    assert state["html_url"] == html_url and state["pd_incident"]["id"] == "PINC1"
