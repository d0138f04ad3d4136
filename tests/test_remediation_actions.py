"""The three action kinds through the engine and on their own: what is sent, what runs,
and what is refused before anything is sent or started."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.core.clock import ManualClock
from bot.core.incidents import EventKind
from bot.playbook import templating
from bot.playbook.model import CommandAction
from bot.remediation.actions import ActionContext, Connections
from bot.remediation.actions.command import CommandKind
from bot.remediation.actions.webhook import WebhookCall, WebhookKind
from bot.remediation.records import StepState
from bot.remediation.results import Guard, Refused, StepStatus
from remediation_kit import Harness, Receiver, playbook, start

HOSTILE = [
    "$(rm -rf /)",
    "a;touch /tmp/pwned",
    "a\nb",
    'it\'s "quoted"',
    "`id`",
    "a && b",
    "../../etc/passwd",
]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def harness(
    aiohttp_client: Any, tmp_path: Path, steps: list[dict[str, Any]], **remediation: Any
) -> Harness:
    return await start(
        aiohttp_client,
        tmp_path,
        [playbook(*steps)],
        clock=ManualClock(),
        background=False,
        remediation={"mode": "auto", **remediation},
    )


def auto(name: str, action: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "mode": "auto", "cooldown": 0, "max_runs": 100, "action": action}


# webhook ----------------------------------------------------------------------------


async def test_webhook_sends_the_templated_body(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    step = auto(
        "switch-provider",
        {
            "kind": "webhook",
            "method": "PUT",
            "url": f"{receiver.url}/llm/provider",
            "headers": {
                "Authorization": "Bearer s3cret-token",
                "X-Service": "{{ labels.service }}",
            },
            "body": {
                "service": "{{ labels.service }}",
                "provider": "secondary",
                "reason": "{{ annotations.summary }} on {{ labels.service }}",
                "weights": [1, "{{ incident.severity }}"],
            },
        },
    )
    h = await harness(aiohttp_client, tmp_path, [step], allowed_urls=[f"{receiver.url}/llm"])
    service = 'cart"}, "provider": "evil'
    incident_id = await h.fire({"alertname": "CacheDown", "service": service})
    await h.settle()
    [call] = receiver.received
    assert (call.method, call.path) == ("PUT", "/llm/provider")
    assert call.body == {
        "service": service,
        "provider": "secondary",
        "reason": f"test alert on {service}",
        "weights": [1, "P2"],
    }
    assert call.headers["Authorization"] == "Bearer s3cret-token"
    assert call.headers["X-Service"] == service  # rendered, as documented
    record = await h.step(incident_id, "switch-provider")
    assert record.state is StepState.SUCCEEDED
    assert record.result is not None and record.result.http_status == 200
    timeline = await h.incident(incident_id)
    assert "s3cret-token" not in str(timeline.to_json())  # header values are never recorded
    ran = [e for e in timeline.timeline if e.data.get("state") == "succeeded"]
    assert ran[0].data["http_status"] == 200
    assert ran[0].data["output"] == '{"ok": true}'


@pytest.mark.parametrize("value", ["a\r\nX-Admin: 1", "a\nb", "a\x00b", "a\x7fb"])
async def test_a_header_a_label_value_would_break_is_refused(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver, value: str
) -> None:
    step = auto(
        "flip",
        {
            "kind": "webhook",
            "url": f"{receiver.url}/flags/x",
            "headers": {"X-Service": "svc-{{ labels.service }}"},
        },
    )
    h = await harness(aiohttp_client, tmp_path, [step], allowed_urls=[f"{receiver.url}/flags"])
    incident_id = await h.fire({"alertname": "CacheDown", "service": value})
    await h.settle()
    record = await h.step(incident_id, "flip")
    assert (record.state, record.guard) == (StepState.SKIPPED, Guard.INVALID)
    assert record.reason == "header X-Service holds a line break or control character"
    assert receiver.received == []


async def test_webhook_failure_is_recorded_and_escalates(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    async with Receiver(status=500) as failing:
        step = auto("flip", {"kind": "webhook", "url": f"{failing.url}/flags/x"})
        h = await harness(aiohttp_client, tmp_path, [step], allowed_urls=[f"{failing.url}/flags"])
        incident_id = await h.fire({"alertname": "CacheDown", "service": "cart"})
        await h.settle()
        record = await h.step(incident_id, "flip")
        assert record.state is StepState.FAILED
        assert record.result is not None and record.result.status is StepStatus.FAILED
        assert len(failing.received) == 1  # a POST is never retried
        [escalated] = await h.events(incident_id, EventKind.ESCALATED)
        assert escalated.data["step"] == "flip"


@pytest.mark.parametrize(
    "flag", ["../admin", "..%2fadmin", "%2e%2e/admin", "x/../../admin", "a b", "x\n"]
)
async def test_webhook_url_off_the_allowlist_once_rendered_is_refused(
    aiohttp_client: Any, tmp_path: Path, receiver: Receiver, flag: str
) -> None:
    step = auto("flip", {"kind": "webhook", "url": f"{receiver.url}/flags/{{{{ labels.flag }}}}"})
    h = await harness(aiohttp_client, tmp_path, [step], allowed_urls=[f"{receiver.url}/flags"])
    incident_id = await h.fire({"alertname": "CacheDown", "flag": flag})
    await h.settle()
    record = await h.step(incident_id, "flip")
    assert (record.state, record.guard) == (StepState.SKIPPED, Guard.ALLOWLIST)
    assert receiver.received == []
    [event] = [e for e in await h.events(incident_id, EventKind.REMEDIATION)]
    assert event.data["guard"] == "allowlist"


async def test_webhook_checks_the_url_again_right_before_sending(receiver: Receiver) -> None:
    kind = WebhookKind([f"{receiver.url}/flags"])
    call = WebhookCall(method="POST", url=f"{receiver.url}/admin", timeout=2)
    async with aiohttp.ClientSession() as session:
        result = await kind.execute(call, Connections(http=session))
    assert result.status is StepStatus.ERROR
    assert "not on the allowlist" in result.summary
    assert receiver.received == []


@pytest.mark.parametrize(
    "url",
    [
        "http://flags.internal@evil.example/flags/x",
        "http://evil.example/flags/x",
        "https://flags.internal/flags/x",  # another scheme
        "http://flags.internal:8080/flags/x",  # another port
        "http://flags.internal/flagsx",  # not on a segment boundary
        "http://flags.internal/other",
        "http://flags.internal\\@evil.example/flags",
        "file:///etc/passwd",
    ],
)
def test_webhook_allowlist_refuses(url: str) -> None:
    kind = WebhookKind(["http://flags.internal/flags"])
    with pytest.raises(Refused) as refused:
        kind.check_url(url)
    assert refused.value.stop.guard in (Guard.ALLOWLIST, Guard.INVALID)


def test_webhook_allowlist_accepts_paths_below_an_entry() -> None:
    kind = WebhookKind(["http://flags.internal/flags"])
    assert kind.check_url("http://flags.internal/flags") == "http://flags.internal/flags"
    assert kind.check_url("http://FLAGS.internal:80/flags/a?x=1").endswith("/flags/a?x=1")


# command -----------------------------------------------------------------------------


def marker_step(tmp_path: Path, pattern: str = "[a-z0-9-]{1,40}") -> dict[str, Any]:
    """``touch <tmp>/mark-<target>``: a file appears if and only if the command ran."""
    return auto(
        "touch",
        {
            "kind": "command",
            "argv": [
                "/usr/bin/touch",
                {
                    "template": f"{tmp_path}/mark-{{{{ labels.target }}}}",
                    "pattern": re.escape(f"{tmp_path}/mark-") + pattern,
                },
            ],
        },
    )


async def test_hostile_label_values_never_reach_a_command(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    h = await harness(
        aiohttp_client, tmp_path, [marker_step(out)], allowed_commands=["/usr/bin/touch"]
    )
    for i, value in enumerate(HOSTILE):
        incident_id = await h.fire(
            {"alertname": "CacheDown", "n": str(i)}, labels={"target": value}
        )
        await h.settle()
        record = await h.step(incident_id, "touch")
        assert (record.state, record.guard) == (StepState.SKIPPED, Guard.PATTERN), value
        assert "does not match its pattern" in record.reason
        assert record.result is None
    assert list(out.iterdir()) == []
    benign = await h.fire({"alertname": "CacheDown", "n": "ok"}, labels={"target": "cart-1"})
    await h.settle()
    assert (await h.step(benign, "touch")).state is StepState.SUCCEEDED
    assert [p.name for p in out.iterdir()] == ["mark-cart-1"]


async def test_without_a_shell_metacharacters_are_just_text(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """Even a pattern that lets everything through cannot make a shell run."""
    pwned = tmp_path / "pwned"
    step = auto(
        "echo",
        {
            "kind": "command",
            "argv": ["/bin/echo", "value:", {"template": "{{ labels.target }}", "pattern": ".+"}],
        },
    )
    h = await harness(aiohttp_client, tmp_path, [step], allowed_commands=["/bin/echo"])
    value = f"$(touch {pwned}); touch {pwned} `touch {pwned}` | tee {pwned}"
    incident_id = await h.fire({"alertname": "CacheDown"}, labels={"target": value})
    await h.settle()
    record = await h.step(incident_id, "echo")
    assert record.state is StepState.SUCCEEDED
    assert record.result is not None
    assert record.result.output == f"value: {value}\n"
    assert record.result.exit_code == 0
    assert not pwned.exists()
    ran = [e for e in await h.events(incident_id, EventKind.REMEDIATION) if "exit_code" in e.data]
    assert ran[0].data["output"] == f"value: {value}\n"
    assert ran[0].data["exit_code"] == 0


async def test_executable_off_the_allowlist_is_refused(aiohttp_client: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    step = auto("touch", {"kind": "command", "argv": ["/usr/bin/touch", str(marker)]})
    h = await harness(aiohttp_client, tmp_path, [step], allowed_commands=["/bin/echo"])
    incident_id = await h.fire({"alertname": "CacheDown"})
    await h.settle()
    record = await h.step(incident_id, "touch")
    assert (record.state, record.guard) == (StepState.SKIPPED, Guard.ALLOWLIST)
    assert not marker.exists()


def context() -> ActionContext:
    from bot.core.incidents import Incident, Status
    from bot.settings import Severity

    incident = Incident(
        id=7,
        key="k",
        group_hash="g",
        receiver="bot",
        group_key="{}",
        status=Status.TRIGGERED,
        severity=Severity.P2,
        title="t",
        summary="s",
        group_labels={},
        common_labels={"service": "checkout"},
        common_annotations={},
        external_url="",
        opened_at=0,
        updated_at=0,
    )
    return ActionContext(templating.environment(), templating.context(incident), incident, "step")


async def run(kind: CommandKind, argv: list[Any], **extra: Any) -> Any:
    spec = CommandAction.model_validate({"kind": "command", "argv": argv, **extra})
    call = kind.prepare(spec, context())
    return await kind.execute(call, Connections())


async def test_command_output_is_captured_and_truncated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERTPILOT_TEST_SECRET", "do-not-leak")
    kind = CommandKind(["/usr/bin/seq", "/usr/bin/printenv", "/bin/echo", "false"])
    result = await run(kind, ["/usr/bin/seq", "1", "100000"], max_output=100)
    assert result.status is StepStatus.OK
    assert result.output.startswith("1\n2\n3\n")
    kept, _, rest = result.output.partition("…")
    assert len(kept.encode()) == 100
    assert re.fullmatch(r" \[\d+ more bytes\]", rest)
    env = await run(kind, ["/usr/bin/printenv"])
    names = {line.split("=", 1)[0] for line in env.output.splitlines()}
    assert names <= {"PATH", "LANG", "LC_ALL", "HOME"}
    assert "do-not-leak" not in env.output
    templated = await run(
        kind, ["/bin/echo", {"template": "svc={{ common_labels.service }}", "pattern": "svc=\\w+"}]
    )
    assert templated.output == "svc=checkout\n"
    failed = await run(kind, ["false"])  # a bare name, looked up on a fixed PATH
    assert (failed.status, failed.exit_code) == (StepStatus.FAILED, 1)


async def test_command_timeout_kills_the_process() -> None:
    kind = CommandKind(["/bin/sleep"])
    started = time.monotonic()
    result = await run(kind, ["/bin/sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert result.status is StepStatus.TIMED_OUT
    # -9 is SIGKILL; under heavy load asyncio's child watcher can lose the status and
    # report 255, which still means the process is gone
    assert result.exit_code in (-9, 255)
    assert "killed after 0.5s" in result.summary


async def test_command_that_cannot_start_is_an_error() -> None:
    kind = CommandKind(["/nonexistent/tool"])
    result = await run(kind, ["/nonexistent/tool"])
    assert result.status is StepStatus.ERROR
    assert "not found" in result.summary
