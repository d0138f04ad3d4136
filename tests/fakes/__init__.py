"""Loopback fake servers speaking the real Slack, PagerDuty and OpenAI wire protocols."""

from ._base import FakeServer, Fault, RecordedRequest
from .openai import FakeOpenAI
from .pagerduty import FakePagerDuty, oncall_entry, send_webhook_v3, sign_v3, webhook_v3_event
from .pagerduty_webhooks import pd_ref
from .slack import FakeFile, FakeSlack

__all__ = [
    "FakeFile",
    "FakeOpenAI",
    "FakePagerDuty",
    "FakeServer",
    "FakeSlack",
    "Fault",
    "RecordedRequest",
    "oncall_entry",
    "pd_ref",
    "send_webhook_v3",
    "sign_v3",
    "webhook_v3_event",
]
