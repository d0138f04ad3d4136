"""``alertpilot check``: broken playbooks fail with file, line and field; risky configs warn."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main

GOOD = """\
playbooks:
  - name: high-error-rate
    description: 5xx share above 5%
    match: ['alertname="HighErrorRate"']
    order: 10
    severity: P1
    diagnostics:
      - name: error_rate
        kind: promql
        label: 5xx share
        unit: ratio
        expect: "< 0.05"
        query: |
          sum(rate(http_requests_total{service={{ labels.service | promql }},code=~"5.."}[5m]))
          / sum(rate(http_requests_total{service={{ labels.service | promql }}}[5m]))
      - name: related
        kind: alerts
        matchers: ['service={{ labels.service | quote }}']
    remediations:
      - name: flip-flag
        mode: approval
        action:
          kind: webhook
          url: https://flags.internal/api/flags/fallback
          body: {service: "{{ labels.service }}", enabled: true}
      - name: restart
        action:
          kind: command
          argv:
            - /usr/bin/systemctl
            - restart
            - {template: "{{ labels.service }}.service", pattern: '^[a-z0-9-]+\\.service$'}
        verify:
          query: up{job={{ labels.job | promql }}}
          expect: "== 1"
"""


def write_config(tmp_path: Path, playbooks: dict[str, str], **sections: Any) -> Path:
    folder = tmp_path / "playbooks"
    folder.mkdir(exist_ok=True)
    for name, text in playbooks.items():
        (folder / name).write_text(textwrap.dedent(text))
    config: dict[str, Any] = {
        "server": {"webhook_token": "t" * 24, "api_token": "a" * 24},
        "store": {"url": f"sqlite:///{tmp_path}/db.sqlite"},
        "playbooks": {"paths": [str(folder)]},
        "remediation": {
            "mode": "approval",
            "allowed_urls": ["https://flags.internal/api/flags"],
            "allowed_commands": ["/usr/bin/systemctl"],
        },
        **sections,
    }
    path = tmp_path / "alertpilot.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def check(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, str, str]:
    code = main(["check", "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_good_config_and_playbook_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check(capsys, write_config(tmp_path, {"errors.yaml": GOOD}))
    assert (code, err) == (0, "")
    assert "ok (1 playbook(s) in 1 file(s)" in out
    assert [line for line in out.splitlines() if line.startswith("warning")] == []
    notes = [line for line in out.splitlines() if line.startswith("note")]
    assert notes == [  # the labels its steps read beyond what its match requires
        "note: high-error-rate: steps read labels its match does not require (for an alert"
        " without them they are not applicable): error_rate, related, flip-flag need"
        " `service`; restart needs `job`, `service`"
    ]


BROKEN = {
    "bad yaml": (
        'playbooks:\n  - name: x\n    match: [alertname="X"\n',
        r"x.yaml:\d+: invalid YAML",
    ),
    "unknown key": (
        "- name: x\n  match: ['alertname=\"X\"']\n  diagnostic: []\n",
        r"x.yaml:3: \[0\]\.diagnostic: unknown key",
    ),
    "bad matcher": (
        "- name: x\n  match: ['alertname=~\"(\"']\n",
        r"x.yaml:2: \[0\]\.match\[0\]: .*invalid regex",
    ),
    "promql syntax error": (
        """\
        - name: x
          match: ['alertname="X"']
          diagnostics:
            - name: q
              kind: promql
              query: sum(rate(http_requests_total[5m])
        """,
        r"x.yaml:6: \[0\]\.diagnostics\[0\]\.query: not valid PromQL once rendered",
    ),
    "promql syntax error only the parser sees": (
        """\
        - name: x
          match: ['alertname="X"']
          diagnostics:
            - name: q
              kind: promql
              query: sum(rate(http_requests_total[5m])) by
        """,
        r"x.yaml:6: \[0\]\.diagnostics\[0\]\.query: not valid PromQL once rendered \(.*parse",
    ),
    "unfiltered label in promql": (
        """\
        - name: x
          match: ['alertname="X"']
          diagnostics:
            - name: q
              kind: promql
              query: up{service="{{ labels.service }}"}
        """,
        r"x.yaml:6: \[0\]\.diagnostics\[0\]\.query: \{\{ labels\.service \}\} printed without "
        r"the promql filter",
    ),
    "unfiltered label in a verify query": (
        """\
        - name: x
          match: ['alertname="X"']
          remediations:
            - name: r
              action: {kind: silence, matchers: ['service={{ labels.service | quote }}']}
              verify:
                query: 'up{job="{{ annotations.job }}"}'
                expect: "== 1"
        """,
        r"x.yaml:7: \[0\]\.remediations\[0\]\.verify\.query: \{\{ annotations\.job \}\}",
    ),
    "unknown filter": (
        """\
        - name: x
          match: ['alertname="X"']
          diagnostics:
            - {name: q, kind: promql, query: 'up{job={{ labels.job | shellquote }}}'}
        """,
        r"x.yaml:4: \[0\]\.diagnostics\[0\]\.query: template syntax error: No filter named",
    ),
    "command not on the allowlist": (
        """\
        - name: x
          match: ['alertname="X"']
          remediations:
            - name: wipe
              action:
                kind: command
                argv: [/bin/rm, -rf, /var/cache/app]
        """,
        r"x.yaml:7: \[0\]\.remediations\[0\]\.action\.argv\[0\]: executable '/bin/rm' is not "
        r"on remediation\.allowed_commands",
    ),
    "webhook URL not on the allowlist": (
        """\
        - name: x
          match: ['alertname="X"']
          remediations:
            - name: hook
              action:
                kind: webhook
                url: https://flags.internal/admin/reset
        """,
        r"x.yaml:7: \[0\]\.remediations\[0\]\.action\.url: URL 'https://flags\.internal/admin/"
        r"reset' is not on the allowlist \(remediation\.allowed_urls\)",
    ),
    "webhook host from a label": (
        """\
        - name: x
          match: ['alertname="X"']
          remediations:
            - name: hook
              action: {kind: webhook, url: "https://{{ labels.host }}/api/flags/x"}
        """,
        r"x.yaml:5: \[0\]\.remediations\[0\]\.action\.url: scheme and host must be literal",
    ),
    "webhook path from a label without path_segment": (
        """\
        - name: x
          match: ['alertname="X"']
          remediations:
            - name: hook
              action: {kind: webhook, url: "https://flags.internal/api/flags/{{ labels.svc }}"}
        """,
        r"x.yaml:5: \[0\]\.remediations\[0\]\.action\.url: playbook x, remediation hook: "
        r"\{\{ labels\.svc \}\} printed in the URL path without the path_segment filter",
    ),
    "webhook query value from a label without urlencode": (
        """\
        - name: x
          match: ['alertname="X"']
          remediations:
            - name: hook
              action: {kind: webhook, url: "https://flags.internal/api/flags/x?s={{ labels.s }}"}
        """,
        r"x.yaml:5: \[0\]\.remediations\[0\]\.action\.url: playbook x, remediation hook: "
        r"\{\{ labels\.s \}\} printed in the URL query without the urlencode filter",
    ),
    "matcher template that is not quoted": (
        """\
        - name: x
          match: ['alertname="X"']
          diagnostics:
            - name: related
              kind: alerts
              matchers: ['service="{{ labels.service }}"']
        """,
        r"x.yaml:6: \[0\]\.diagnostics\[0\]\.matchers\[0\]: .*without the quote filter",
    ),
    "a label value as a PromQL regex": (
        """\
        - name: x
          match: ['alertname="X"']
          diagnostics:
            - {name: q, kind: promql, query: 'up{instance=~{{ labels.instance | promql }}}'}
        """,
        r"x.yaml:4: \[0\]\.diagnostics\[0\]\.query: \{\{ labels\.instance \| promql \}\} "
        r"after a regex operator \(=~ or !~\) needs the promql_re filter",
    ),
    "a label value as a matcher regex": (
        """\
        - name: x
          match: ['alertname="X"']
          remediations:
            - name: mute
              action:
                kind: silence
                matchers: ['alertname="X"', 'instance=~{{ labels.instance | quote }}']
        """,
        r"x.yaml:7: \[0\]\.remediations\[0\]\.action\.matchers\[1\]: .*needs the quote_re "
        r"filter",
    ),
    "a YAML tag that is not plain data": (
        "- name: x\n  match: [!foo 'alertname=\"X\"']\n",
        r"x.yaml:2: \[0\]\.match\[0\]: unsupported YAML tag !foo",
    ),
    "a Python object tag": (
        "- name: x\n  match: ['alertname=\"X\"']\n"
        "  description: !!python/object/apply:os.system ['id']\n",
        r"x.yaml:3: \[0\]\.description: unsupported YAML tag .*python/object/apply:os\.system",
    ),
    "a value its tag cannot read": (
        "- name: x\n  match: ['alertname=\"X\"']\n  order: !!int ten\n",
        r"x.yaml:3: \[0\]\.order: not a valid int: 'ten'",
    ),
    "a merge key on a scalar": (
        "- name: x\n  match: ['alertname=\"X\"']\n  <<: 5\n",
        r"x.yaml:1: \[0\]: expected a mapping or list of mappings for merging",
    ),
    "an alias inside itself": (
        "- &p\n  name: x\n  match: ['alertname=\"X\"']\n  continue: *p\n",
        r"x.yaml:1: \[0\]\.continue: an alias refers to the value that contains it",
    ),
    "aliases that expand without end": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
            for p, n in zip("abcdefg", "bcdefgh", strict=True)
        ),
        r"x.yaml:1: .*more than 100,000 values \(aliases expanded\)",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_playbook_fails_with_file_line_and_field(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    text, pattern = BROKEN[case]
    code, _, err = check(capsys, write_config(tmp_path, {"x.yaml": text}))
    assert code == 2
    lines = err.splitlines()
    assert any(re.search(pattern, line) for line in lines), err
    assert all(line.startswith(str(tmp_path)) for line in lines[:-1]), err
    assert lines[-1].endswith("problem(s) found")


def test_duplicate_names_across_files_name_both_places(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dup = "- name: high-error-rate\n  match: ['alertname=\"Other\"']\n"
    code, _, err = check(capsys, write_config(tmp_path, {"a.yaml": GOOD, "b.yaml": dup}))
    assert code == 2
    folder = tmp_path / "playbooks"
    assert (
        f"{folder}/b.yaml:1: [0].name: playbook name 'high-error-rate' is already used at "
        f"{folder}/a.yaml:2" in err
    )


def test_every_problem_is_printed_not_just_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {
        "a.yaml": BROKEN["unknown key"][0],
        "b.yaml": BROKEN["command not on the allowlist"][0],
        "c.yaml": BROKEN["unfiltered label in promql"][0].replace("name: x", "name: y"),
    }
    code, _, err = check(capsys, write_config(tmp_path, files))
    assert code == 2
    assert "3 problem(s) found" in err
    for name in files:
        assert f"{name}:" in err


def test_a_missing_playbook_path_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {})
    settings = yaml.safe_load(config.read_text())
    settings["playbooks"]["paths"].append(str(tmp_path / "nowhere"))
    config.write_text(yaml.safe_dump(settings))
    code, _, err = check(capsys, config)
    assert code == 2
    assert f"{tmp_path}/nowhere: playbooks.paths: no such file or directory" in err


def test_a_broken_config_still_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "alertpilot.yaml"
    config.write_text("server:\n  listen: 127.0.0.1:8080\nremediation:\n  mode: yolo\n")
    code, _, err = check(capsys, config)
    assert code == 2
    assert f"{config}:4: remediation.mode:" in err


def test_a_broken_prompt_template_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "user_prompt.j2").write_text("line one\n{{ facts }}\nthree {{ x | }}\n")
    config = write_config(tmp_path, {"ok.yaml": GOOD}, llm={"prompts_dir": str(prompts)})
    code, _, err = check(capsys, config)
    assert code == 2
    assert f"{prompts}/user_prompt.j2:3: template syntax error" in err


def test_risky_settings_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path,
        {"ok.yaml": GOOD},
        remediation={
            "mode": "auto",
            "allowed_urls": ["https://flags.internal/api/flags", "https://flags.internal"],
            "allowed_commands": ["/usr/bin/systemctl", "/bin/bash"],
        },
        slack={"bot_token": "xoxb-1", "signing_secret": "s", "default_channel": "#ops"},
    )
    code, out, _ = check(capsys, config)
    assert code == 0
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert any("allows whole hosts (https://flags.internal)" in w for w in warnings)
    assert any("interpreter (/bin/bash)" in w for w in warnings)
    assert any("slack.approvers is empty" in w for w in warnings)


def test_a_minimal_config_is_told_why_the_shipped_playbooks_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # where playbooks/ is
    path = tmp_path / "mine.yaml"
    path.write_text(f"store:\n  url: sqlite:///{tmp_path}/a.db\n")
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is not on the allowlist (remediation.allowed_urls)" in err
    assert "the config has no playbooks section, so playbooks.paths is its default" in err
    assert "Set playbooks.paths to your own, or [] for none" in err
