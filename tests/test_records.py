"""Every typed record of ``incident.data`` and of the key-value table: what an older
version stored (or a damaged value) is read without failing the reader, and what is
written reads back the same."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bot.core.incidents import Incident, Status
from bot.narrative.cache import PREFIX, CachedAnswer, NarrativeCache
from bot.pagerduty.state import PageState
from bot.pagerduty.state import state_of as page_state_of
from bot.pagerduty.webhooks import _seen_since
from bot.records.diagnostics import diagnostics_of
from bot.records.incident import PipelineState, Truncated, pipeline_of, truncated_of
from bot.records.narrative import (
    NarrativeRecord,
    StormRef,
    active_storm,
    narrative_of,
    storm_summary,
)
from bot.records.silences import SilenceRecord, silences_of, stored_silences
from bot.records.slack import (
    PostingIntent,
    ReplyPost,
    RollupMembers,
    SlackPost,
    StormState,
    permalink_of,
    post_of,
    posting_of,
)
from bot.records.steps import approval_views, step_views
from bot.records.targets import Escalated, TargetState, targets_of
from bot.remediation.records import (
    ApprovalRecord,
    UnreadableRecord,
    approvals_of,
    dump,
    steps_of,
)
from bot.settings import Severity
from bot.silences.service import NewSilence


def incident(**data: Any) -> Incident:
    return Incident(
        id=7,
        key="alertpilot-7",
        group_hash="0" * 20,
        receiver="bot",
        group_key="{}",
        status=Status.TRIGGERED,
        severity=Severity.P1,
        title="DiskFull",
        summary="",
        group_labels={},
        common_labels={},
        common_annotations={},
        external_url="",
        opened_at=1.0,
        updated_at=1.0,
        data=data,
    )


def stored(data: Any) -> Any:
    """What the store gives back: the record through JSON."""
    return json.loads(json.dumps(data))


# data["pipeline"] ------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["junk", {"playbooks": "disk"}, {"matched_at": "soon"}, []])
def test_an_unreadable_pipeline_state_reads_as_not_matched(
    raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert pipeline_of(incident(pipeline=raw)) == PipelineState()
    assert 'incident #7 data["pipeline"]' in caplog.text


def test_the_pipeline_state_round_trips_in_its_old_shape() -> None:
    old = {"playbooks": ["disk"], "state": "matched", "matched_at": 5.0, "note": "kept"}
    state = pipeline_of(incident(pipeline=old))
    assert (state.playbooks, state.matched_at, state.diagnosed_at) == (["disk"], 5.0, None)
    assert state.dump() == old  # no diagnosed_at: null written, the unknown key kept
    assert PipelineState(playbooks=[]).dump() == {"playbooks": [], "state": ""}
    assert pipeline_of(incident()).playbooks is None  # not matched yet


# data["truncated"] ------------------------------------------------------------------


def test_a_truncation_note_reads_back_and_a_bad_one_is_left_out() -> None:
    note = Truncated(alerts=3, at=2.0)
    assert truncated_of(incident(truncated=stored(note.dump()))) == note
    assert truncated_of(incident(truncated={"alerts": "many"})) is None
    assert truncated_of(incident()) is None


# data["narrative"] and the storm records ---------------------------------------------------


def test_a_narrative_round_trips_with_exactly_the_keys_it_was_written_with() -> None:
    written = {"text": "Disk full.", "source": "template", "audience": "engineer",
               "generated_at": 3.0, "model": None, "tokens": 0}  # fmt: skip
    record = NarrativeRecord.model_validate(written)
    assert record.dump() == written
    saved = record.with_storm(StormRef(key="4", since=1.0)).model_copy(update={"based_on": 9})
    again = narrative_of(incident(narrative=stored(saved.dump())))
    assert again is not None and again.dump() == {
        **written, "storm": {"key": "4", "since": 1.0}, "based_on": 9
    }  # fmt: skip


@pytest.mark.parametrize("raw", ["text", {"text": ["a"]}, {"storm": "yes"}])
def test_an_unreadable_narrative_reads_as_none(raw: Any) -> None:
    assert narrative_of(incident(narrative=raw)) is None


def test_storm_records_in_the_key_value_table() -> None:
    storm = StormRef(key="4", since=1.0)
    assert json.loads(storm.dumps()) == {"key": "4", "since": 1.0}  # no incidents yet
    assert active_storm(storm.dumps()) == storm
    assert active_storm('{"key": "4", "since": 1.0}') == storm  # as json.dumps wrote it
    assert active_storm("{not json") is None
    assert active_storm('{"since": 1.0}') is None
    assert active_storm(None) is None
    summary = NarrativeRecord(text="Storm.", source="llm")
    assert storm_summary(summary.dumps()) == summary
    assert storm_summary("[]") is None


# data["slack"] and data["slack_posting"] ----------------------------------------------


def test_the_slack_message_record_round_trips() -> None:
    post = SlackPost(channel="C1", ts="1.2", thread_ts="1.2", rollup_ts=None,
                     permalink="https://acme.slack.com/p1", posted_at=4.0)  # fmt: skip
    assert set(post.dump()) == {"channel", "ts", "thread_ts", "rollup_ts", "permalink",
                                "posted_at"}  # fmt: skip
    assert post_of(incident(slack=stored(post.dump()))) == post
    assert permalink_of(incident(slack=stored(post.dump()))) == "https://acme.slack.com/p1"


@pytest.mark.parametrize("raw", ["C1", {"channel": "C1"}, {"channel": 5, "ts": "1"}, {"ts": "1"}])
def test_an_unposted_or_unreadable_slack_record_means_no_message(raw: Any) -> None:
    assert post_of(incident(slack=raw)) is None


def test_the_permalink_is_read_from_a_partial_record() -> None:
    assert permalink_of(incident(slack={"permalink": "https://acme.slack.com/p"})) is not None
    assert permalink_of(incident(slack="junk")) is None
    thread = SlackPost.model_validate({"channel": "C1", "ts": "1.2"})  # before thread_ts
    assert thread.thread == "1.2"


def test_the_posting_intent_round_trips_and_a_bad_one_is_ignored() -> None:
    intent = PostingIntent(channel="C1", since=5.0)
    assert posting_of(incident(slack_posting=stored(intent.dump()))) == intent
    assert posting_of(incident(slack_posting={"channel": "C1"})) is None


# key-value records of the Slack feature -----------------------------------------------------


def test_reply_records_of_every_version_read_and_damaged_ones_do_not_fail() -> None:
    assert ReplyPost.load('{"ts": "1.2", "started": null}') == ReplyPost(ts="1.2")
    assert ReplyPost.load("posting since 12.5") == ReplyPost(started=12.5)
    assert ReplyPost.load("{broken") is None
    assert ReplyPost.load('{"started": "later"}') is None
    assert ReplyPost.load("posting since soon") is None


def test_storm_state_reads_what_the_dataclass_wrote_and_starts_over_when_damaged() -> None:
    old = '{"recent":[[3,10.5],[4,11.0]],"listed":[3,4],"threaded":[4],' \
          '"rollup_ts":"9.9","rollup_channel":"C1","last_new":11.0}'  # fmt: skip
    state = StormState.load(old)
    assert state.recent == [(3, 10.5), (4, 11.0)] and state.rollup_ts == "9.9"
    assert json.loads(state.dumps()) == json.loads(old)
    assert StormState.load("{nope") == StormState()
    assert StormState.load('{"listed": "all"}') == StormState()
    members = RollupMembers(channel="C1", listed=[3, 4])
    assert RollupMembers.load(members.dumps()) == members
    assert RollupMembers.load('{"listed": [1, "x"]}') == RollupMembers()


# data["targets"] and data["pagerduty"] ---------------------------------------------------


def test_response_targets_round_trip_and_damaged_ones_are_planned_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    escalated = Escalated(level=2, at=3.0, reason="not acknowledged")
    state = TargetState(
        severity=Severity.P1, ack_within=900.0, resolve_by=50.0, escalations=[escalated]
    )
    assert targets_of(incident(targets=stored(state.model_dump(mode="json")))) == state
    with caplog.at_level(logging.WARNING):
        assert targets_of(incident(targets={"level": "high"})) == TargetState()
    assert "unreadable response targets" in caplog.text


def test_pagerduty_state_round_trips_and_damaged_state_starts_over() -> None:
    state = PageState(dedup_key="k", alert="triggered", html_url="https://pd.example/i/1")
    assert page_state_of(incident(pagerduty=stored(state.model_dump(mode="json")))) == state
    assert page_state_of(incident(pagerduty={"alert": "lost"})) == PageState()


def test_the_pagerduty_webhook_horizon_reads_only_a_time() -> None:
    assert _seen_since("1700000000.5") == 1700000000.5
    assert _seen_since(None) is None
    assert _seen_since("yesterday") is None
    assert _seen_since("nan") is None


# data["silences"] -----------------------------------------------------------------------


def test_silence_records_keep_their_shape_and_junk_is_kept_but_not_read() -> None:
    made = NewSilence(id="s1", source="slack", expire_on_resolve=True, by="@ada",
                      matchers=["a=\"b\""]).record(now=5.0)  # fmt: skip
    assert made.dump() == {"id": "s1", "source": "slack", "expire_on_resolve": True,
                           "created_at": 5.0, "expired_at": None, "by": "@ada",
                           "matchers": ['a="b"']}  # fmt: skip
    raw = [stored(made.dump()), "junk", {"source": "slack"}, {"id": "s0", "expired": True}]
    held = incident(silences=raw)
    assert [r.id for r in silences_of(held)] == ["s1", "s0"]
    assert [r.active for r in silences_of(held)] == [True, False]  # "expired": older versions
    assert stored_silences(held) == raw
    assert silences_of(incident(silences={"s1": {}})) == []
    assert SilenceRecord.model_validate(made.dump()).dump() == made.dump()


# data["diagnostics"] ----------------------------------------------------------------------


def test_stored_diagnostics_leave_out_what_is_not_a_result() -> None:
    assert diagnostics_of(incident()) is None
    assert diagnostics_of(incident(diagnostics={"a": 1})) is None
    assert diagnostics_of(incident(diagnostics=[{"name": "a"}, "junk"])) == [{"name": "a"}]


# data["remediations"] and data["approvals"] --------------------------------------------


def test_steps_are_shown_from_every_shape_they_were_kept_in() -> None:
    shown = step_views(incident(remediations={
        "pb/restart": {"step": "restart", "state": "failed", "attempt": 2,
                       "result": {"summary": "exit 1", "output": "boom", "status": "error"}},
        "scale": {"status": "verified", "runs": 3, "result": "text of old"},
        "broken": "not a record",
        "odd": {"state": ["x"]},
    }))  # fmt: skip
    assert [(v.key, v.current) for v in shown] == [("pb/restart", "failed"), ("scale", "verified")]
    assert shown[0].result is not None and shown[0].result.summary == "exit 1"
    assert (shown[1].runs, shown[1].result) == (3, None)
    listed = approval_views(incident(approvals=[{"step": "a", "status": "pending"}, 3]))
    assert [(v.key, v.current) for v in listed] == [("a", "pending")]
    assert step_views(incident(remediations="junk")) == []


def test_the_engine_stops_on_a_step_record_it_cannot_read() -> None:
    approval = ApprovalRecord(step="restart", attempt=1, requested_at=1.0, expires_at=2.0)
    held = incident(approvals=stored(dump({"restart": approval})))
    assert approvals_of(held) == {"restart": approval}
    with pytest.raises(UnreadableRecord, match=r'data\["remediations"\]\[\'a\'\]'):
        steps_of(incident(remediations={"a": 1}))
    with pytest.raises(UnreadableRecord, match="not a map"):
        approvals_of(incident(approvals=["restart"]))


# key-value records of the narrative feature ----------------------------------------------


async def test_a_cached_answer_round_trips_and_a_damaged_one_is_a_miss() -> None:
    store = MemoryKv()
    cache = NarrativeCache(store, ttl=60.0)  # type: ignore[arg-type]
    answer = CachedAnswer("Disk full.", "gpt", 12, 3.0)
    await cache.put("k", answer, now=1.0)
    assert await cache.get("k", now=2.0) == answer
    for damaged in ("{not json", '{"text": "a"}', '{"text": 1, "model": "m", "tokens": 1, '
                    '"generated_at": 1.0}'):  # fmt: skip
        store.values[PREFIX + "k"] = damaged
        assert await cache.get("k", now=2.0) is None


class MemoryKv:
    """The key-value part of a store, in memory."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def kv_get(self, key: str, now: float) -> str | None:
        return self.values.get(key)

    async def kv_set(self, key: str, value: str, *, now: float, ttl: float | None = None) -> None:
        self.values[key] = value
