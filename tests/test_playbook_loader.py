"""Loading playbooks: file shapes, order, lint of templates, allowlists, problems with lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.playbook import allowlist, lint
from bot.playbook.checks import Allowlists
from bot.playbook.loader import check_playbooks, load_playbooks
from bot.playbook.templating import environment
from bot.settings import Settings

ALLOW = Allowlists(
    diagnostic_urls=("http://127.0.0.1:8500/health",),
    remediation_urls=("https://flags.internal/api/flags",),
    commands=("/usr/bin/systemctl",),
)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def playbook(name: str, alertname: str, order: int = 100, extra: str = "") -> str:
    return f"- name: {name}\n  match: ['alertname=\"{alertname}\"']\n  order: {order}\n{extra}"


def test_three_file_shapes_and_documents_load_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path, "b/two.yml", "name: two\nmatch: ['alertname=\"B\"']\n")
    write(tmp_path, "a.yaml", playbook("one", "A") + playbook("one-b", "A2"))
    write(
        tmp_path,
        "c.yaml",
        "playbooks:\n  - name: three\n    match: ['alertname=\"C\"']\n"
        "---\n- name: four\n  match: ['alertname=\"D\"']\n",
    )
    write(tmp_path, ".hidden/skip.yaml", "not: [a playbook")
    write(tmp_path, "notes.txt", "ignored")
    report = check_playbooks([tmp_path], ALLOW)
    assert report.problems == []
    assert [p.name for p in report.playbooks] == ["one", "one-b", "two", "three", "four"]
    assert [f.name for f in report.files] == ["a.yaml", "two.yml", "c.yaml"]


def test_order_then_load_order_decides_and_continue_lets_later_ones_run(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", playbook("late", "X", 50) + playbook("first", "X", 10))
    write(
        tmp_path,
        "b.yaml",
        playbook("tie", "X", 50) + playbook("wide", "X", 5, "  continue: true\n"),
    )
    settings = Settings.model_validate({"playbooks": {"paths": [str(tmp_path)]}})
    found = load_playbooks(settings)
    assert [p.name for p in found] == ["wide", "first", "late", "tie"]
    assert [p.name for p in found.matching({"alertname": "X"})] == ["wide", "first"]
    misses = found.near_misses({"alertname": "Y"})
    assert ("first", 'alertname="X"') in [(p.name, m) for p, m in misses]


def test_load_playbooks_raises_with_every_problem(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "- name: Bad Name\n  match: []\n")
    write(tmp_path, "b.yaml", "- {name: ok, match: ['a=b'], order: soon}\n")
    settings = Settings.model_validate({"playbooks": {"paths": [str(tmp_path)]}})
    with pytest.raises(ConfigError) as caught:
        load_playbooks(settings)
    problems = caught.value.problems
    assert problems[0].startswith(f"{tmp_path}/a.yaml:1: [0].name: String should match pattern")
    assert problems[1].startswith(f"{tmp_path}/a.yaml:2: [0].match: List should have at least 1")
    assert problems[2].startswith(f"{tmp_path}/b.yaml:1: [0].order: Input should be a valid int")


def test_playbooks_are_not_environment_substituted(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", playbook("x", "X", extra="  runbook: costs $5 ${HOME}\n"))
    report = check_playbooks([tmp_path], ALLOW)
    assert report.playbooks[0].runbook == "costs $5 ${HOME}"


def test_wrapper_with_extra_keys_and_non_mapping_items(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "playbooks:\n  - just a string\nversion: 2\n")
    write(tmp_path, "b.yaml", "42\n")
    problems = check_playbooks([tmp_path], ALLOW).problems
    assert problems == [
        f"{tmp_path}/a.yaml:2: playbooks[0]: expected a playbook mapping, got str",
        f"{tmp_path}/a.yaml:3: version: unknown key",
        f"{tmp_path}/b.yaml:1: expected a playbook mapping, a list of playbooks "
        "or {playbooks: [...]}",
    ]


@pytest.mark.parametrize(
    ("template", "flagged"),
    [
        ("up{job={{ labels.job | promql }}}", []),
        ("up{job=~{{ labels.job | promql_re }}}", []),
        ("up{job={{ labels.job | lower | promql }}}", []),
        ("rate(x[{{ 60 * 5 }}s])", []),
        ('up{job="{{ labels.job }}"}', ["labels.job"]),
        (
            'up{job={{ labels.job | promql | replace("a", "b") }}}',
            ["labels.job | promql | replace"],
        ),
        ('{% set j = labels.job %}up{job="{{ j }}"}', ["j"]),
        ('{% for a in alerts %}up{i="{{ a.labels.instance }}"}{% endfor %}', ["a.labels.instance"]),
        ('up{t="{{ incident.title }}"}', ["incident.title"]),
        ('up{t="{{ labels }}"}', ["labels"]),
        ('up{job="{{ labels["job"] }}"}', ["labels['job']"]),
    ],
)
def test_promql_lint_walks_the_template(template: str, flagged: list[str]) -> None:
    assert lint.unquoted_outputs(environment(), template, lint.PROMQL_FILTERS) == flagged


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ('sum(rate(x{a="b"}[5m]))', None),
        ('x{a="(["} # a comment with ( unbalanced', None),
        ('x{a=`raw " ( string`}', None),
        ('x{a="\\"still inside"}', None),
        ("sum(rate(x[5m])", "'(' at offset 3 is never closed"),
        ('x{a="b}', "string literal at offset 4 is not terminated"),
        ("x{a='b\n'}", "string literal at offset 4 runs past the end of the line"),
        ("x[5m)", "unexpected ')' at offset 4"),
        ("  ", "the query is empty"),
    ],
)
def test_light_promql_check(query: str, problem: str | None) -> None:
    assert lint.promql_problem(query) == problem


def test_promtool_checks_many_queries_at_once() -> None:
    found = lint.promtool_problems(
        ["up", "sum(x) by", 'rate(x{a="b"}[5m])', "x +"], "/usr/bin/promtool"
    )
    assert sorted(found) == [1, 3]
    assert "parse error" in found[1]


def test_promtool_that_cannot_run_changes_nothing(tmp_path: Path) -> None:
    assert lint.promtool_problems(["sum(x) by"], str(tmp_path / "no-promtool")) == {}


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://flags.internal/api/flags", True),
        ("https://flags.internal/api/flags/x?y=1#z", True),
        ("https://FLAGS.internal:443/api/flags/x", True),
        ("https://flags.internal/api/flagsx", False),
        ("https://flags.internal/api/flags/../admin", False),
        ("https://flags.internal/api/flags/%2e%2e/admin", False),
        ("http://flags.internal/api/flags/x", False),
        ("https://flags.internal:8443/api/flags/x", False),
        ("https://flags.internal@evil.example/api/flags/x", False),
        ("https://flags.internal.evil.example/api/flags/x", False),
        ("https://flags.internal/api/flags/x\r\nHost: evil", False),
        ("file:///etc/passwd", False),
        ("/api/flags", False),
    ],
)
def test_url_allowlist(url: str, allowed: bool) -> None:
    assert allowlist.url_allowed(url, ["https://flags.internal/api/flags"]) is allowed


def test_whole_host_entries_and_interpreters_are_broad() -> None:
    assert allowlist.url_allowed("https://h.example/anything", ["https://h.example"])
    assert allowlist.is_broad_url("https://h.example/")
    assert not allowlist.is_broad_url("https://h.example/api")
    assert allowlist.is_interpreter("/bin/bash") and allowlist.is_interpreter("python3")
    assert not allowlist.is_interpreter("/usr/bin/systemctl")
    assert allowlist.command_allowed("/usr/bin/systemctl", ["/usr/bin/systemctl"])
    assert not allowlist.command_allowed("systemctl", ["/usr/bin/systemctl"])


def test_templates_in_every_place_are_rendered_at_load(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """\
        - name: x
          match: ['alertname="X"']
          diagnostics:
            - {name: h, kind: http, url: "http://127.0.0.1:8500/h/{{ labels.a | path_segment }}"}
            - {name: r, kind: promql_range, query: 'up{a={{ labels.a | promql }}', window: 1h}
          remediations:
            - name: s
              action: {kind: silence, matchers: []}
              when: 'up{a={{ labels.a | promql }}} > {{ "x" + 1 }}'
            - name: w
              action:
                kind: webhook
                url: https://flags.internal/api/flags/x
                body: {nested: [{deep: "{{ labels.a | bogus }}"}]}
                headers: {X-Id: "{% if %}"}
              rollback:
                kind: command
                argv: [/usr/bin/systemctl, {template: "{{ labels.a | foo }}", pattern: ".*"}]
        """,
    )
    problems = check_playbooks([tmp_path], ALLOW).problems
    where = f"{tmp_path}/a.yaml"
    expected = [
        f"{where}:4: [0].diagnostics[0].url: URL 'http://127.0.0.1:8500/h/example' is not",
        f"{where}:5: [0].diagnostics[1].query: not valid PromQL once rendered ('{{' at",
        f"{where}:8: [0].remediations[0].action.matchers: a silence needs at least one matcher",
        f"{where}:9: [0].remediations[0].when: template error: TypeError",
        f"{where}:14: [0].remediations[1].action.body.nested[0].deep: template syntax error: "
        "No filter named 'bogus'",
        f"{where}:15: [0].remediations[1].action.headers.X-Id: template syntax error",
        f"{where}:18: [0].remediations[1].rollback.argv[1].template: template syntax error",
    ]
    assert len(problems) == len(expected), problems
    for line, start in zip(problems, expected, strict=True):
        assert line.startswith(start), (line, start)


def test_a_diagnostic_url_off_the_allowlist_names_the_diagnostics_setting(
    tmp_path: Path,
) -> None:
    """With no diagnostics.allowed_urls, the diagnostic's allowlist equals remediation's:
    the problem must still name the setting a diagnostic URL belongs on."""
    from bot.playbook.checks import Allowlists
    from bot.playbook.loader import check_playbooks

    (tmp_path / "p.yaml").write_text(
        "- name: x\n  match: ['alertname=\"X\"']\n  diagnostics:\n"
        "    - name: status\n      kind: http\n      url: http://10.0.0.9/status\n"
    )
    report = check_playbooks([str(tmp_path)], Allowlists(), promtool=None)
    [problem] = report.problems
    assert problem.endswith(
        "diagnostics[0].url: URL 'http://10.0.0.9/status' is not on the allowlist"
        " (diagnostics.allowed_urls or remediation.allowed_urls)"
    ), problem


def test_an_unknown_key_of_a_step_is_reported_on_its_own_line(tmp_path: Path) -> None:
    from bot.playbook.checks import Allowlists
    from bot.playbook.loader import check_playbooks

    (tmp_path / "p.yaml").write_text(
        "- name: x\n"
        "  match: ['alertname=\"X\"']\n"
        "  diagnostics:\n"
        "    - name: q\n"
        "      kind: promql\n"
        "      label: L\n"
        "      querry: up\n"
    )
    problems = check_playbooks([str(tmp_path)], Allowlists(), promtool=None).problems
    assert f"{tmp_path}/p.yaml:7: [0].diagnostics[0].querry: unknown key" in problems
    assert f"{tmp_path}/p.yaml:4: [0].diagnostics[0].query: Field required" in problems
