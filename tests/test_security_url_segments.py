"""A label value cannot change where a webhook goes once the URL passed the allowlist.

The attacks as reported: ``service="svc?scope=all&enabled=false#frag"`` reached the
service as ``POST /v1/flags/svc?scope=all&enabled=false``; ``..;/admin``, ``%252e%252e``
and backslashes went through too. Each is fired as a real alert through the app; a bare
loopback server records the request line exactly as it came over the socket, so the
tests see what a service would be handed: the value as one encoded segment, or nothing
(and then the step's record and timeline say why).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.core.clock import ManualClock
from bot.core.incidents import EventKind
from bot.playbook import allowlist, lint
from bot.playbook.checks import Allowlists
from bot.playbook.loader import check_playbooks
from bot.playbook.templating import UnsafeValue, environment, path_segment, render_skeleton
from bot.remediation.actions import Connections
from bot.remediation.actions.webhook import WebhookCall, WebhookKind
from bot.remediation.records import StepState
from bot.remediation.results import Guard, StepStatus
from remediation_kit import Harness, RawReceiver, playbook, start

FLAGS = "/v1/flags"


@pytest.fixture
async def service() -> AsyncIterator[RawReceiver]:
    async with RawReceiver() as server:
        yield server


async def fire(
    aiohttp_client: Any, tmp_path: Path, service: RawReceiver, url: str, value: str
) -> tuple[Harness, int]:
    """A playbook whose auto step POSTs to ``url`` (a template), fired for an alert whose
    ``service`` label is ``value``; every due job has run when this returns."""
    step = {
        "name": "flip",
        "mode": "auto",
        "cooldown": 0,
        "max_runs": 100,
        "action": {"kind": "webhook", "url": url, "body": {"enabled": False}},
    }
    h = await start(
        aiohttp_client,
        tmp_path,
        [playbook(step)],
        clock=ManualClock(),
        background=False,
        remediation={"mode": "auto", "allowed_urls": [f"{service.url}{FLAGS}"]},
    )
    incident_id = await h.fire({"alertname": "CacheDown", "service": value})
    await h.settle()
    return h, incident_id


async def refusal(h: Harness, incident_id: int) -> tuple[Guard | None, str]:
    """The guard and reason the step was stopped with, checked to be on the timeline too."""
    record = await h.step(incident_id, "flip")
    assert record.state is StepState.SKIPPED, record
    [event] = await h.events(incident_id, EventKind.REMEDIATION)
    assert event.data["state"] == "skipped"
    assert event.data["guard"] == (record.guard.value if record.guard else None)
    assert event.data["reason"] == record.reason
    return record.guard, record.reason


# the filter, through the whole app -------------------------------------------------

SEGMENT = "{url}/v1/flags/{{{{ labels.service | path_segment }}}}"


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("checkout", "checkout"),
        ("svc?scope=all&enabled=false#frag", "svc%3Fscope%3Dall%26enabled%3Dfalse%23frag"),
        ("a/b", "a%2Fb"),
        ("a;b=c", "a%3Bb%3Dc"),
        ("café 1", "caf%C3%A9%201"),
        ("%41", "%2541"),  # a server decoding once gets the value back, not "A"
        ("...", "..."),  # not a dot-segment
    ],
)
async def test_a_label_value_reaches_the_service_as_one_encoded_segment(
    aiohttp_client: Any, tmp_path: Path, service: RawReceiver, value: str, sent: str
) -> None:
    h, incident_id = await fire(
        aiohttp_client, tmp_path, service, SEGMENT.format(url=service.url), value
    )
    assert service.lines == [f"POST {FLAGS}/{sent} HTTP/1.1"]
    record = await h.step(incident_id, "flip")
    assert record.state is StepState.SUCCEEDED
    assert record.call is not None and record.call["url"] == f"{service.url}{FLAGS}/{sent}"


@pytest.mark.parametrize(
    ("value", "guard", "reason"),
    [
        ("..", Guard.INVALID, "url: path_segment: '..' cannot be a URL path segment"),
        (".", Guard.INVALID, "url: path_segment: '.' cannot be a URL path segment"),
        ("", Guard.INVALID, "url: path_segment: an empty value cannot be a URL path segment"),
        ("..;/admin", Guard.ALLOWLIST, "decodes to a dot-segment"),
        ("%2e%2e", Guard.ALLOWLIST, "decodes to a dot-segment"),
        ("%252e%252e", Guard.ALLOWLIST, "decodes to a dot-segment"),
        ("..\\admin", Guard.ALLOWLIST, "decodes to a backslash"),
        ("svc\\..\\admin", Guard.ALLOWLIST, "decodes to a backslash"),
    ],
)
async def test_a_value_no_encoding_makes_safe_is_refused_and_nothing_is_sent(
    aiohttp_client: Any,
    tmp_path: Path,
    service: RawReceiver,
    value: str,
    guard: Guard,
    reason: str,
) -> None:
    h, incident_id = await fire(
        aiohttp_client, tmp_path, service, SEGMENT.format(url=service.url), value
    )
    assert service.received == []
    stopped_by, why = await refusal(h, incident_id)
    assert stopped_by is guard
    assert reason in why


async def test_a_query_value_through_urlencode_stays_one_value(
    aiohttp_client: Any, tmp_path: Path, service: RawReceiver
) -> None:
    url = f"{service.url}{FLAGS}/x?service={{{{ labels.service | urlencode }}}}"
    await fire(aiohttp_client, tmp_path, service, url, "a&enabled=true#f")
    assert service.lines == [f"POST {FLAGS}/x?service=a%26enabled%3Dtrue%23f HTTP/1.1"]


# defence in depth: a template without the filter (the lint would refuse it) -------------

RAW = "{url}/v1/flags/{{{{ labels.service }}}}"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("svc?scope=all&enabled=false#frag", "a value added a query string"),
        ("svc#frag", "a value added a fragment"),
        ("svc/admin", "its path has 4 segment(s) where the template makes 3"),
        ("..;/admin", "dot-segment"),
        ("..%3B%2Fadmin", "dot-segment"),
        ("%252e%252e", "dot-segment"),
        ("..", "dot-segment"),
        ("a\\b", "characters a URL carries only percent-encoded"),
        ("%zz", "characters a URL carries only percent-encoded"),
        ("é", "characters a URL carries only percent-encoded"),
    ],
)
async def test_without_the_filter_the_rendered_url_is_still_checked_by_its_shape(
    aiohttp_client: Any, tmp_path: Path, service: RawReceiver, value: str, reason: str
) -> None:
    h, incident_id = await fire(
        aiohttp_client, tmp_path, service, RAW.format(url=service.url), value
    )
    assert service.received == []
    guard, why = await refusal(h, incident_id)
    assert guard is Guard.ALLOWLIST
    assert reason in why


async def test_the_url_is_checked_again_right_before_sending(service: RawReceiver) -> None:
    kind = WebhookKind([f"{service.url}{FLAGS}"])
    skeleton = f"{service.url}{FLAGS}/x"
    async with aiohttp.ClientSession() as session:
        for url in (f"{service.url}{FLAGS}/a/b", f"{service.url}{FLAGS}/a?b=1"):
            call = WebhookCall(method="POST", url=url, intended=skeleton, timeout=2)
            result = await kind.execute(call, Connections(http=session))
            assert result.status is StepStatus.ERROR
            assert "does not keep its template's shape" in result.summary
        ok = WebhookCall(
            method="POST", url=f"{service.url}{FLAGS}/a%3Bb", intended=skeleton, timeout=2
        )
        assert (await kind.execute(ok, Connections(http=session))).ok
    assert service.lines == [f"POST {FLAGS}/a%3Bb HTTP/1.1"]  # sent as checked, not requoted


# the pieces ---------------------------------------------------------------------------


def test_path_segment_encodes_all_but_unreserved_characters() -> None:
    assert path_segment("AZaz09-._~") == "AZaz09-._~"
    assert path_segment("/?#[]@!$&'()*+,;=%\\ ") == (
        "%2F%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2B%2C%3B%3D%25%5C%20"
    )
    assert path_segment(42) == "42"
    assert path_segment("\ud800x") == "%EF%BF%BDx"  # a lone surrogate: U+FFFD
    for value in ("", ".", ".."):
        with pytest.raises(UnsafeValue):
            path_segment(value)


def test_the_skeleton_keeps_the_template_text_and_branches() -> None:
    env = environment()
    source = (
        "http://h/v1/{{ labels.a | path_segment }}/{% if labels.b %}b/{{ labels.b }}{% endif %}"
    )
    ctx = {"labels": {"a": "x/y/z", "b": "1/2"}}
    assert render_skeleton(env, source, ctx) == "http://h/v1/x/b/x"
    assert render_skeleton(env, source, {"labels": {"a": "q", "b": ""}}) == "http://h/v1/x/"


@pytest.mark.parametrize(
    "path",
    ["/a/..", "/a/.", "/a/%2e%2E", "/a/%252e%252e", "/a/..;x=1", "/a/..%3B", "/a/b\\c",
     "/a/%5C", "/a/x%2F..%2Fadmin", "/a/%25252525252525252e"],
)  # fmt: skip
def test_paths_a_server_could_read_as_another_are_refused(path: str) -> None:
    assert allowlist.path_problem(path) is not None
    assert not allowlist.url_allowed(f"https://h{path}", ["https://h/a"])


def test_a_host_a_browser_reads_as_another_is_refused() -> None:
    """Python's parser takes ``h`` as the host of ``https://evil\\@h/a``; a browser ends
    the host at the backslash and goes to ``evil``."""
    assert allowlist.url_allowed("https://h/a/b", ["https://h/a"])
    for url in ("https://evil\\@h/a/b", "https://evil%5C\\@h/a", "https://h\\.evil/a"):
        assert not allowlist.url_allowed(url, ["https://h/a"]), url


@pytest.mark.parametrize("path", ["/a/b", "/a/...", "/a/%2541", "/a/b%3Bc", "/a/.x", "/a/"])
def test_paths_that_stay_where_they_are(path: str) -> None:
    assert allowlist.path_problem(path) is None


# the lint -----------------------------------------------------------------------------

ALLOW = Allowlists(
    diagnostic_urls=("http://127.0.0.1:8081/v1",),
    remediation_urls=("http://127.0.0.1:8081/v1/flags",),
    commands=(),
)


def lint_problems(tmp_path: Path, url: str, *, diagnostic: bool = False) -> list[str]:
    if diagnostic:
        steps = f'diagnostics:\n  - {{name: probe, kind: http, url: "{url}"}}\n'
    else:
        steps = f'remediations:\n  - name: flip\n    action: {{kind: webhook, url: "{url}"}}\n'
    (tmp_path / "p.yaml").write_text(f"name: flags\nmatch: ['alertname=\"X\"']\n{steps}")
    return check_playbooks([tmp_path], ALLOW).problems


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://127.0.0.1:8081/v1/flags/{{ labels.service }}",
            "playbook flags, remediation flip: {{ labels.service }} printed in the URL path "
            "without the path_segment filter: write {{ labels.service | path_segment }}",
        ),
        (
            "http://127.0.0.1:8081/v1/flags/{{ labels.service | urlencode }}",
            "{{ labels.service | urlencode }} printed in the URL path without the path_segment",
        ),
        (
            "http://127.0.0.1:8081/v1/flags/{{ incident.id }}",
            "{{ incident.id }} printed in the URL path without the path_segment filter",
        ),
        (
            "http://127.0.0.1:8081/v1/flags/x?s={{ labels.service }}",
            "{{ labels.service }} printed in the URL query without the urlencode filter",
        ),
        (  # the filter applies to "b" only: the label value is printed as it is
            "http://127.0.0.1:8081/v1/flags/{{ labels.a if labels.a else 'b' | path_segment }}",
            "printed in the URL without the path_segment filter",
        ),
    ],
)
def test_a_url_template_without_the_filter_its_place_needs_is_a_lint_error(
    tmp_path: Path, url: str, message: str
) -> None:
    [problem] = lint_problems(tmp_path, url)
    assert problem.startswith(f"{tmp_path}/p.yaml:5: remediations[0].action.url: "), problem
    assert message in problem


def test_a_url_that_cannot_be_sent_as_it_is_is_a_lint_error(tmp_path: Path) -> None:
    [problem] = lint_problems(tmp_path, "http://127.0.0.1:8081/v1/flags/caf\u00e9")
    assert "holds characters a URL carries only percent-encoded" in problem


def test_an_http_diagnostic_url_needs_the_filter_too(tmp_path: Path) -> None:
    url = "http://127.0.0.1:8081/v1/status/{{ labels.service }}"
    [problem] = lint_problems(tmp_path, url, diagnostic=True)
    assert "playbook flags, diagnostic probe: {{ labels.service }} printed in the URL path" in (
        problem
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8081/v1/flags/{{ labels.service | path_segment }}",
        "http://127.0.0.1:8081/v1/flags/x?s={{ labels.service | urlencode }}"
        "&i={{ incident.id | urlencode }}",
        "http://127.0.0.1:8081/v1/flags/{{ 'x' }}",
        "http://127.0.0.1:8081/v1/flags/{{ labels.get('a', 'b') | path_segment }}",
    ],
)
def test_url_templates_with_the_right_filters_pass(tmp_path: Path, url: str) -> None:
    assert lint_problems(tmp_path, url) == []


def test_url_outputs_names_each_expression_and_its_place() -> None:
    env = environment()
    found = lint.url_outputs(
        env, "http://h/{{ labels.a }}/{{ labels.b | path_segment }}?q={{ labels.c | upper }}"
    )
    assert [(f.expression, f.part, f.wanted) for f in found] == [
        ("labels.a", "path", "path_segment"),
        ("labels.c | upper", "query", "urlencode"),
    ]
