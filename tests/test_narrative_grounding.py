"""An LLM narrative says only what its facts say: invented numbers, names, times and
actions are dropped before anyone reads them, and if too little is left the template
narrative stays. What was dropped is on the timeline and counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import keys
from bot.core.clock import SystemClock
from bot.core.incidents import EventKind
from bot.narrative.grounding import Facts, actions_that_ran, claims, ground
from bot.slack.render import Extras, incident_message
from conftest import API
from fakes import FakeOpenAI
from narrative_support import (
    DIAGNOSTICS,
    app_settings,
    eventually,
    group,
    metric,
    narrative_of,
    narrator_for,
    open_incident,
    post_alerts,
    running_app,
    with_diagnostics,
)
from test_not_checked import UNREACHABLE

INVENTED = (
    "Checkout errors rose to 12% because the payment provider returned 5xx. "
    "We switched traffic to the secondary provider; errors fell back under 1%."
)
DATA = (
    'incident{id:7,title:"HighErrorRate (service=checkout)",severity:P1,opened:"04:10"}\n'
    "diagnostics[2]{check,verdict,value,unit,expect}:\n"
    "  5xx share,failed,0.123,ratio,< 0.05\n"
    "  p95 latency,passed,0.8,seconds,< 3\n"
    "alerts[1]{instance,labels}:\n  pod-a,service=checkout\n"
    "remediations[1]{step,state}:\n  rollback_deploy,suggested\n"
)


def test_the_invented_answer_of_a_bad_night_is_dropped_whole() -> None:
    grounded = ground(INVENTED, Facts(DATA.replace("0.123", "n/a"), frozenset()))
    assert grounded.kept == 0 and not grounded.enough
    reasons = [d.reason() for d in grounded.dropped]
    assert reasons == ["number '12%'", "action 'failover: switched'"]


@pytest.mark.parametrize(
    "sentence",
    [
        "The 5xx share is at 12% (expected under 5%), on pod-a.",  # 0.123 as a rounded %
        "The 5xx share is 12.3% on service=checkout since 04:10.",
        "p95 latency is 800 ms, which is fine.",  # 0.8 s in another unit
        "The expectation for the 5xx share is under 5% and 50 ms.",  # 0.05 as % and as ms
        "Next: consider rolling back the deploy with `rollback_deploy` once approved.",
        "HighErrorRate fired for 3 instances.",  # a small count is not a claim
    ],
)
def test_sentences_the_facts_support_are_kept(sentence: str) -> None:
    facts = Facts(DATA, frozenset())
    unsupported = [c for c in claims(sentence) if not ground(sentence, facts).kept]
    assert ground(sentence, facts).kept == 1, unsupported


@pytest.mark.parametrize(
    ("sentence", "kind"),
    [
        ("The 5xx share reached 47% on checkout.", "number"),
        # 0.05 (the expectation) is 5% or 50 ms, never 50%
        ("The error budget burned 50% of the month in an hour.", "number"),
        ("Latency peaked at 9.4 s.", "number"),
        ("It started at 03:55 UTC.", "time"),
        ("The cause is release v2.8.1 of checkout.", "version"),
        ("Pod checkout-7f9c2 ran out of memory.", "name"),
        ("The db_connections_max metric is saturated.", "name"),
        ("We rolled back the deploy and errors recovered.", "action"),
        ("The API workers were restarted at the start of the incident.", "action"),
    ],
)
def test_invented_claims_are_caught(sentence: str, kind: str) -> None:
    grounded = ground(sentence, Facts(DATA, frozenset()))
    assert grounded.kept == 0
    assert kind in {c.kind for d in grounded.dropped for c in d.claims}


def test_an_action_is_supported_only_when_a_step_of_its_kind_ran() -> None:
    suggested = actions_that_ran([("rollback_deploy", "suggested", "")], [])
    assert suggested == frozenset()
    ran = actions_that_ran([("rollback_deploy", "verified", "kubectl rollout undo")], [])
    assert ran == {"rollback"}
    assert ground("We rolled back the deploy.", Facts(DATA, ran)).kept == 1
    silenced = actions_that_ran([], [("note", "silence created for 1h by @ada")])
    assert "silence" in silenced


async def test_the_narrator_keeps_the_template_when_the_model_invents(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = INVENTED
    async with narrator_for(tmp_path, fake_openai) as (narrator, store, clock):
        incident = await open_incident(store, clock, group())
        incident = await with_diagnostics(store, clock, incident.id, UNREACHABLE)
        result = await narrator.for_incident(incident, "engineer")
    assert result.source == "template" and result.reason == "ungrounded"
    assert "12%" not in result.text and "switched" not in result.text
    assert "Prometheus unreachable: checks not run (9 of 9)" in result.text
    assert [d.reason() for d in result.dropped] == [
        "number '12%'",
        "action 'failover: switched'",
    ]
    assert metric(narrator, "alertpilot_narrative_ungrounded_total", {"kind": "number"}) == 1
    assert metric(narrator, "alertpilot_narrative_ungrounded_total", {"kind": "action"}) == 1


async def test_unsupported_sentences_are_dropped_and_the_rest_posted(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = (
        "- HighErrorRate is firing on checkout: every diagnostic was not checked because "
        "Prometheus is unreachable.\n"
        "- The database pool on db-7 is exhausted at 98%.\n"
        "- Next: check Prometheus itself, then the checkout dashboards by hand."
    )
    async with narrator_for(tmp_path, fake_openai) as (narrator, store, clock):
        incident = await open_incident(store, clock, group())
        incident = await with_diagnostics(store, clock, incident.id, UNREACHABLE)
        result = await narrator.for_incident(incident, "engineer")
    assert result.source == "llm"
    assert "db-7" not in result.text and "98%" not in result.text
    assert "Prometheus is unreachable" in result.text and "Next: check Prometheus" in result.text
    [dropped] = result.dropped
    assert dropped.sentence == "- The database pool on db-7 is exhausted at 98%."


async def test_what_was_dropped_is_on_the_timeline_and_never_in_slack(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = INVENTED
    settings = app_settings(tmp_path, fake_openai, llm={"settle": 0.1})
    async with running_app(settings, SystemClock()) as client:
        incident_id = await post_alerts(client, group())
        store = client.app[keys.STORE]
        clock = client.app[keys.CLOCK]
        await store.update_incident(incident_id, now=clock.now(), data={"diagnostics": UNREACHABLE})
        await store.append_event(
            incident_id, actor="alertpilot", kind=EventKind.DIAGNOSTICS_DONE,
            message="diagnostics: Prometheus unreachable: checks not run (9 of 9)",
            now=clock.now(),
        )  # fmt: skip

        async def refused() -> object:
            incident = await store.get_incident(incident_id)
            return incident if narrative_of(incident).get("reason") == "ungrounded" else None

        incident = await eventually(refused, what="the ungrounded answer refused")
    assert fake_openai.completions  # asked (once per change of the facts) ...
    event = [  # ... and refused, with what and why on the timeline
        e for e in incident.timeline if e.kind == EventKind.NARRATIVE and e.data.get("dropped")
    ][-1]
    assert "the LLM's answer was not supported by the facts" in event.message
    assert [d["unsupported"] for d in event.data["dropped"]] == [
        "number '12%'",
        "action 'failover: switched'",
    ]
    shown = "\n".join(
        str(block.get("text", {}).get("text", ""))
        for block in incident_message(incident, Extras()).blocks
    )
    assert "*What happened* _(from the template)_" in shown
    assert "switched" not in shown and "12%" not in shown


async def test_each_sentence_is_traced_to_its_facts_in_the_api_and_explain(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = (
        "- The 5xx share of requests is 12.5%, above its 5% limit, worst on pod-a.\n"
        "- The database is reachable.\n"
        "- Next: check the recent deploys."
    )
    settings = app_settings(tmp_path, fake_openai, llm={"settle": 0.1})
    async with running_app(settings, SystemClock()) as client:
        incident_id = await post_alerts(client, group())
        store, clock = client.app[keys.STORE], client.app[keys.CLOCK]
        await store.update_incident(incident_id, now=clock.now(), data={"diagnostics": DIAGNOSTICS})
        await store.append_event(
            incident_id, actor="alertpilot", kind=EventKind.DIAGNOSTICS_DONE,
            message="diagnostics: 1 failed (error_share), 1 passed", now=clock.now(),
        )  # fmt: skip

        async def written() -> object:
            incident = await store.get_incident(incident_id)
            return incident if narrative_of(incident).get("source") == "llm" else None

        await eventually(written, what="the LLM narrative")
        resp = await client.get(f"/api/v1/incidents/{incident_id}", headers=API)
        assert resp.status == 200
        shown = await resp.json()
    assert (
        shown["diagnostics"]["summary"]
        == "1 failed (error_share), 1 passed, 1 not checked (no data)"
    )
    narrative = shown["narrative"]
    evidence = {e["sentence"]: e["facts"] for e in narrative["evidence"]}
    first = "- The 5xx share of requests is 12.5%, above its 5% limit, worst on pod-a."
    assert "diagnostics/5xx share of requests" in evidence[first]
    assert "0.125" in narrative["facts"]["diagnostics/5xx share of requests"]
    assert evidence["- Next: check the recent deploys."] == []  # claims nothing
    assert set(narrative["facts"]) == {key for keys in evidence.values() for key in keys}
