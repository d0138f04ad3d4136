"""Tests for bot.core.matchers: Alertmanager matcher parsing and matching, PromQL quoting."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import string
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from bot.core.matchers import (
    Matcher,
    MatcherError,
    MatcherStr,
    MatchOp,
    first_failing,
    matches_all,
    parse_matcher,
    parse_matchers,
    promql_regex_literal,
    promql_string,
)
from bot.narrative.redact import Redactor
from stack import require_binary

EQ, NE, RE, NRE = MatchOp.EQ, MatchOp.NE, MatchOp.RE, MatchOp.NRE
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]*", fullmatch=True)


# --- a reference Go strconv.Unquote, written independently of bot.core.matchers ---------------

_SIMPLE = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}


def go_unquote(literal: str) -> str:
    """Go's strconv.Unquote for a double-quoted string; ValueError where Go errs."""
    if len(literal) < 2 or literal[0] != '"' or literal[-1] != '"':
        raise ValueError(f"not a double-quoted literal: {literal!r}")
    body, out, i = literal[1:-1], bytearray(), 0
    while i < len(body):
        char = body[i]
        if char in '"\n':
            raise ValueError(f"unescaped {char!r} at {i}")
        if char != "\\":
            out += char.encode()
            i += 1
            continue
        if i + 1 == len(body):
            raise ValueError("backslash escapes the closing quote")
        esc = body[i + 1]
        if esc in _SIMPLE:
            out.append(_SIMPLE[esc])
            i += 2
        elif esc in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2 : i + 2 + size]
            if len(digits) != size or not all(d in string.hexdigits for d in digits):
                raise ValueError(f"bad \\{esc} escape at {i}")
            code = int(digits, 16)
            if esc == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError(f"invalid code point at {i}")
            else:
                out += chr(code).encode()
            i += 2 + size
        elif esc in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                raise ValueError(f"bad octal escape at {i}")
            out.append(int(digits, 8))
            i += 4
        else:
            raise ValueError(f"unknown escape \\{esc} at {i}")
    return out.decode("utf-8")


def literal_end(source: str, start: int) -> int:
    """Where a lexer that honours backslash escapes ends the literal opened at ``start``."""
    i = start + 1
    while source[i] != '"':
        i += 2 if source[i] == "\\" else 1
    return i


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"\u263a \U0001F600"', "\u263a \U0001f600"),
        (r'"\x41\101\a\b\f\n\r\t\v\\\""', 'AA\a\b\f\n\r\t\v\\"'),
        (r'"\xc3\xa9"', "é"),
        ('""', ""),
    ],
)
def test_reference_unquoter_accepts_go_literals(literal: str, value: str) -> None:
    assert go_unquote(literal) == value


@pytest.mark.parametrize(
    "literal",
    [r'"\'"', r'"\q"', '"a"b"', '"a\\"', '"a\nb"', r'"\400"', r'"\ud800"', r'"\xff"', "'a'"],
)
def test_reference_unquoter_rejects_what_go_rejects(literal: str) -> None:
    with pytest.raises(ValueError):
        go_unquote(literal)


# --- parsing single matchers ----------------------------------------------------------------

GOOD = [
    ('foo="bar"', "foo", EQ, "bar"),
    ('  foo  =  "bar"  ', "foo", EQ, "bar"),
    ("foo=bar", "foo", EQ, "bar"),
    ('foo!="bar"', "foo", NE, "bar"),
    ('foo=~"a|b"', "foo", RE, "a|b"),
    ("foo=~a|b", "foo", RE, "a|b"),
    ('foo!~"ba.*"', "foo", NRE, "ba.*"),
    ('_x9="y"', "_x9", EQ, "y"),
    ('foo=""', "foo", EQ, ""),
    ("foo=", "foo", EQ, ""),  # classic parser: an empty value
    ('foo="say \\"hi\\""', "foo", EQ, 'say "hi"'),
    ('foo="back\\\\slash"', "foo", EQ, "back\\slash"),
    ('foo="line\\nbreak"', "foo", EQ, "line\nbreak"),
    ('foo="tab\\there"', "foo", EQ, "tab\there"),  # UTF-8 parser: Go escapes
    ('foo="\\u00e9\\x41"', "foo", EQ, "éA"),
    ('foo="é ☃ 😀"', "foo", EQ, "é ☃ 😀"),
    ('foo="a,b {c} =~ !="', "foo", EQ, "a,b {c} =~ !="),
    ('foo=~"host\\d+"', "foo", RE, "host\\d+"),  # \d is no Go escape: classic keeps it
    ('foo=~"a\\.b"', "foo", RE, "a\\.b"),
    ('foo=~"a\\\\.b"', "foo", RE, "a\\.b"),
    ("foo=Disk full", "foo", EQ, "Disk full"),  # classic: unquoted value with a space
    ("foo=bar\\", "foo", EQ, "bar\\"),  # classic: a trailing backslash is literal
    ("foo='x'", "foo", EQ, "'x'"),
    ('foo="a\nb"', "foo", EQ, "a\nb"),  # classic tolerates a raw newline
    ('{foo="bar"}', "foo", EQ, "bar"),
    ('{ foo = "bar" , }', "foo", EQ, "bar"),
    ('"foo"="bar"', "foo", EQ, "bar"),  # UTF-8 parser: a quoted label name
    ('foo=~"(?i)crit|page"', "foo", RE, "(?i)crit|page"),
]


@pytest.mark.parametrize(("text", "name", "op", "value"), GOOD)
def test_parse_matcher_accepts(text: str, name: str, op: MatchOp, value: str) -> None:
    assert parse_matcher(text) == Matcher(name, op, value)


BAD = [
    ("foo", 3, "expected an operator"),
    ("=bar", 0, "expected a label name"),
    ('foo=~"("', 5, "invalid regex '('"),
    ('foo!~"a)"', 5, "invalid regex 'a)'"),
    ('1abc="x"', 0, "invalid label name '1abc'"),
    ('foo:bar="x"', 0, "invalid label name 'foo:bar'"),
    ('"foo bar"="x"', 0, "invalid label name 'foo bar'"),
    ('foo="bar', 4, "unterminated quoted string"),
    ('foo="bar\\"', 4, "unterminated quoted string"),
    ('foo=~"a"b"', 9, "unterminated quoted string"),
    ('foo="a"}', 7, "unexpected '}' without '{'"),
    ('{foo="a"', 8, "expected '}'"),
    ("foo!bar", 3, "expected '=' or '~' after '!'"),
    ("foo~bar", 3, "unexpected character '~'"),
    ('a="b", c="d"', 0, "expected exactly one matcher, found 2"),
    ("", 0, "expected exactly one matcher, found 0"),
    ("{}", 0, "expected exactly one matcher, found 0"),
    ('foo=~"a(?=b)"', 5, "invalid regex"),  # Python syntax RE2 (and Alertmanager) refuse
    ('foo=~"(a)\\1"', 5, "invalid regex"),  # no backreferences either
]


@pytest.mark.parametrize(("text", "position", "reason"), BAD)
def test_parse_matcher_rejects(text: str, position: int, reason: str) -> None:
    with pytest.raises(MatcherError) as caught:
        parse_matcher(text)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.reason.startswith(reason)
    assert (error.text, error.position) == (text, position)
    assert str(error) == f"{error.reason} at position {position} in {text!r}"


@given(st.text() | st.text(alphabet='ab=!~"\\{},\n '))
def test_parsers_fail_only_with_matcher_error(text: str) -> None:
    for parse in (parse_matcher, parse_matchers):
        with contextlib.suppress(MatcherError):
            parse(text)


# --- parsing lists --------------------------------------------------------------------------

LISTS = [
    ('{alertname="X", severity=~"a|b"}', ['alertname="X"', 'severity=~"a|b"']),
    ('alertname="X", severity=~"a|b"', ['alertname="X"', 'severity=~"a|b"']),
    ('alertname="X",severity=~"a|b",', ['alertname="X"', 'severity=~"a|b"']),
    ('{ a = "b" , c != d , }', ['a="b"', 'c!="d"']),
    ('a="x,y", b="\\"q,\\""', ['a="x,y"', 'b="\\"q,\\""']),
    ("a=b c, d=~e\\d", ['a="b c"', 'd=~"e\\\\d"']),  # classic fallback for the whole text
    ('{a="b"', ['a="b"']),  # classic: the braces are optional on either side
    ("", []),
    ("  ", []),
    ("{}", []),
    (["a=b", 'c!~"d"'], ['a="b"', 'c!~"d"']),
    (['a="b", c="d"', "{e=f}"], ['a="b"', 'c="d"', 'e="f"']),
    ([], []),
]


@pytest.mark.parametrize(("given", "expected"), LISTS)
def test_parse_matchers(given: str | list[str], expected: list[str]) -> None:
    assert [str(m) for m in parse_matchers(given)] == expected


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ('a="b",,c="d"', "expected a label name"),
        ('a="b" c="d"', "expected ','"),
        ('{a="b" c="d"}', "expected ',' or '}'"),
        ('{,a="b"}', "expected a label name"),
        ('a="b", 1c="d"', "invalid label name '1c'"),
        (['a="b"', "oops"], "expected an operator"),
    ],
)
def test_parse_matchers_rejects(given: str | list[str], reason: str) -> None:
    with pytest.raises(MatcherError, match=re.escape(reason)):
        parse_matchers(given)


# --- matching -------------------------------------------------------------------------------

MATCHES = [
    ('foo=""', {}, True),
    ('foo=""', {"foo": "x"}, False),
    ('foo!=""', {}, False),
    ('foo!=""', {"foo": "x"}, True),
    ('foo="bar"', {}, False),
    ('foo="bar"', {"foo": "bar"}, True),
    ('foo="bar"', {"foo": "Bar"}, False),
    ('foo!="bar"', {}, True),
    ('foo!="bar"', {"foo": "bar"}, False),
    ('foo=~"a"', {"foo": "a"}, True),
    ('foo=~"a"', {"foo": "ab"}, False),
    ('foo=~"a"', {"foo": "ba"}, False),
    ('foo=~"a"', {"foo": "a\n"}, False),  # no "$ before a final newline" quirk
    ('foo=~"a|b"', {"foo": "b"}, True),
    ('foo=~"a|b"', {"foo": "ab"}, False),
    ('foo=~".*"', {}, True),
    ('foo=~".+"', {}, False),
    ('foo=~"a.b"', {"foo": "a\nb"}, False),
    ('foo=~"(?s)a.b"', {"foo": "a\nb"}, True),
    ('foo=~"(?i)crit|page"', {"foo": "PAGE"}, True),
    ('foo=~"(?i)crit|page"', {"foo": "critical"}, False),
    ('foo=~"host\\d+"', {"foo": "host12"}, True),
    ('foo=~"host\\d+"', {"foo": "hostX"}, False),
    ('foo!~"ba.*"', {"foo": "bar"}, False),
    ('foo!~"ba.*"', {"foo": "xbar"}, True),
    ('foo!~"ba.*"', {}, True),
    ('foo!~""', {}, False),
    ('foo=~"[[:alpha:]]+"', {"foo": "bar"}, True),  # RE2 syntax Python does not have
    ('foo=~"[[:alpha:]]+"', {"foo": "a1"}, False),
    ('foo=~"a\\z"', {"foo": "a"}, True),
]


def test_matching_takes_linear_time_whatever_the_value() -> None:
    """A pattern that backtracks for minutes in Python's ``re`` against a value an alert
    sender chose: RE2 answers at once (labels come from outside)."""
    matcher = parse_matcher('foo=~"(a+)+$"')
    began = time.perf_counter()
    assert not matcher.matches({"foo": "a" * 100_000 + "b"})
    assert time.perf_counter() - began < 1.0  # Python's re: beyond any test's patience


def test_a_value_that_is_not_utf8_is_matched_with_a_replacement_character() -> None:
    """RE2 takes UTF-8; a lone surrogate (a value decoded with ``surrogateescape``) stands
    for one character that no literal matches, instead of raising."""
    assert parse_matcher('foo=~"a.b"').matches({"foo": "a\udcffb"})
    assert not parse_matcher('foo=~"a.b"').matches({"foo": "a\udcff\udcffb"})
    assert Redactor(["sec[0-9]+"]).text("x sec42 \udcff") == "x [redacted] \ufffd"


@pytest.mark.parametrize(("text", "labels", "expected"), MATCHES)
def test_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches(labels) is expected


def test_matches_all_and_first_failing() -> None:
    matchers = parse_matchers('{alertname="DiskFull", severity=~"critical|page", team!=""}')
    full = {"alertname": "DiskFull", "severity": "page", "team": "db", "extra": "x"}
    assert matches_all(matchers, full)
    assert first_failing(matchers, full) is None
    near = {**full, "severity": "warning"}
    assert not matches_all(matchers, near)
    assert first_failing(matchers, near) == matchers[1]
    assert first_failing(matchers, {"alertname": "Other"}) == matchers[0]
    assert matches_all([], {}) and first_failing([], {}) is None


# --- the Matcher value ----------------------------------------------------------------------

ROUND_TRIP = [
    (Matcher("foo", EQ, "bar"), 'foo="bar"'),
    (Matcher("foo", NE, ""), 'foo!=""'),
    (Matcher("foo", RE, "a\\d+|b"), 'foo=~"a\\\\d+|b"'),
    (Matcher("foo", NRE, ".*"), 'foo!~".*"'),
    (Matcher("foo", EQ, 'say "hi"\\\n'), 'foo="say \\"hi\\"\\\\\\n"'),
    (Matcher("foo", EQ, "tab\t é"), 'foo="tab\t é"'),
    (Matcher("foo", EQ, "a, b=c}"), 'foo="a, b=c}"'),
]


@pytest.mark.parametrize(("matcher", "text"), ROUND_TRIP)
def test_str_is_canonical_and_round_trips(matcher: Matcher, text: str) -> None:
    assert str(matcher) == text
    assert parse_matcher(text) == matcher
    assert parse_matchers("{" + ", ".join([text, text]) + "}") == [matcher, matcher]


@given(label_names, st.sampled_from([EQ, NE]), st.text())
def test_str_round_trips_any_value(name: str, op: MatchOp, value: str) -> None:
    matcher = Matcher(name, op, value)
    assert parse_matcher(str(matcher)) == matcher
    assert parse_matchers([str(matcher), str(matcher)]) == [matcher, matcher]


@given(label_names, st.sampled_from([RE, NRE]), st.text().map(re.escape))
def test_str_round_trips_any_regex(name: str, op: MatchOp, value: str) -> None:
    matcher = Matcher(name, op, value)
    assert parse_matcher(str(matcher)) == matcher


@pytest.mark.parametrize(
    ("op", "is_regex", "is_equal"),
    [(EQ, False, True), (NE, False, False), (RE, True, True), (NRE, True, False)],
)
def test_to_alertmanager(op: MatchOp, is_regex: bool, is_equal: bool) -> None:
    assert Matcher("team", op, "db").to_alertmanager() == {
        "name": "team",
        "value": "db",
        "isRegex": is_regex,
        "isEqual": is_equal,
    }


def test_matcher_construction_validates() -> None:
    with pytest.raises(MatcherError, match="invalid label name '1a'"):
        Matcher("1a", EQ, "x")
    with pytest.raises(MatcherError, match="invalid regex"):
        Matcher("a", RE, "(")
    with pytest.raises(MatcherError, match="invalid operator"):
        Matcher("a", "==", "x")  # type: ignore[arg-type]
    plain = Matcher("a", "=~", "x|y")  # type: ignore[arg-type]
    assert plain.op is RE and plain.matches({"a": "y"})
    assert plain == Matcher("a", RE, "x|y") and hash(plain) == hash(Matcher("a", RE, "x|y"))
    assert repr(plain) == "Matcher(name='a', op=<MatchOp.RE: '=~'>, value='x|y')"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.value = "z"  # type: ignore[misc]
    changed = dataclasses.replace(plain, value="z")
    assert changed.matches({"a": "z"}) and not changed.matches({"a": "y"})


# --- pydantic -------------------------------------------------------------------------------


class Playbook(BaseModel):
    match: list[MatcherStr]


def test_matcher_str_in_a_model() -> None:
    book = Playbook.model_validate({"match": ['alertname="X"', "team=~db|ops"]})
    assert book.match == [Matcher("alertname", EQ, "X"), Matcher("team", RE, "db|ops")]
    assert book.model_dump() == {"match": ['alertname="X"', 'team=~"db|ops"']}
    assert Playbook.model_validate_json(book.model_dump_json()) == book
    assert Playbook(match=[Matcher("a", NE, "b")]).match == [Matcher("a", NE, "b")]
    schema = Playbook.model_json_schema()["properties"]["match"]["items"]
    assert schema["type"] == "string"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ('severity=~"("', "invalid regex '(': missing ): ( at position 10"),
        ("severity", "expected an operator"),
        (3, "a matcher must be a string"),
    ],
)
def test_matcher_str_errors_carry_the_parser_message(item: object, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Playbook.model_validate({"match": ['a="b"', item]})
    [error] = caught.value.errors()
    assert error["loc"] == ("match", 1)
    assert message in error["msg"]


# --- PromQL string literals -----------------------------------------------------------------

NASTY = [
    '"}) or vector(1) #',
    '\\"',
    "trailing backslash\\",
    "\\",
    '"',
    "line\nbreak\r\n",
    "{{ .Labels.x }}",
    "$(rm -rf /)",
    "`backticks` and 'single'",
    "\x00\x07\x1b[31m\x7f",
    "\u2028\u2029\u00a0\u200b\ufeff",
    "ünïcödé ☃ 😀",
    "",
]


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", '"plain"'),
        ('a"b', '"a\\"b"'),
        ("a\\", '"a\\\\"'),
        ("x\ny\rz\tw", '"x\\ny\\rz\\tw"'),
        ("\a\b\f\v", '"\\a\\b\\f\\v"'),
        ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),
        ("é☃😀", '"é☃😀"'),
        ("\u00a0\u2028\U000e0001", '"\\u00a0\\u2028\\U000e0001"'),
        ("\ud800", '"\\ufffd"'),
        (42, '"42"'),
        (None, '"None"'),
    ],
)
def test_promql_string(value: object, literal: str) -> None:
    assert promql_string(value) == literal


@pytest.mark.parametrize("value", NASTY)
def test_promql_string_cannot_be_broken_out_of(value: str) -> None:
    literal = promql_string(value)
    query = f"up{{job={literal}}} == 1"
    assert literal_end(query, query.index('"')) == query.index('"') + len(literal) - 1
    assert go_unquote(literal) == value
    assert "\n" not in literal


@given(st.text())
def test_promql_string_round_trips(value: str) -> None:
    literal = promql_string(value)
    assert go_unquote(literal) == value
    assert literal_end(literal, 0) == len(literal) - 1
    assert "\n" not in literal and "\r" not in literal


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("a.b*(c)", '"a\\\\.b\\\\*\\\\(c\\\\)"'),
        ("x|y", '"x\\\\|y"'),
        ('"}', '"\\"\\\\}"'),
        ("plain-text_1", '"plain-text_1"'),
    ],
)
def test_promql_regex_literal(value: str, literal: str) -> None:
    assert promql_regex_literal(value) == literal


@given(st.text(), st.text())
def test_promql_regex_literal_matches_only_its_value(value: str, other: str) -> None:
    literal = promql_regex_literal(value)
    assert literal_end(literal, 0) == len(literal) - 1
    pattern = re.compile(go_unquote(literal))
    assert pattern.fullmatch(value)
    assert bool(pattern.fullmatch(other)) == (other == value)
    assert Matcher("v", RE, go_unquote(literal)).matches({"v": value})


# --- against the real binaries --------------------------------------------------------------

AMTOOL = Path("/usr/bin/amtool")
PROMTOOL = Path("/usr/bin/promtool")

# Inputs where amtool 0.25 (classic parser only) and the fallback parser agree.
AM_MATCHERS = [
    'foo="bar"',
    'foo!="bar"',
    'foo=""',
    'foo!=""',
    "foo=",
    'foo=~"a"',
    'foo=~"a|b"',
    'foo=~"host\\d+"',
    'foo!~"ba.*"',
    'foo=~".+"',
    "foo=Disk full",
    'foo="q\\"uote"',
    'foo="back\\\\slash"',
    'foo="line\\nbreak"',
    'foo=~"(?i)crit"',
    'foo=~"a.b"',
    "foo = bar",
    'foo=~"[[:alpha:]]+"',
    'foo=~"a\\z"',
]
AM_LABELS = [
    {},
    {"foo": "bar"},
    {"foo": "a"},
    {"foo": "ab"},
    {"foo": "b"},
    {"foo": "host12"},
    {"foo": "hostX"},
    {"foo": "baz"},
    {"foo": "Disk full"},
    {"foo": 'q"uote'},
    {"foo": "back\\slash"},
    {"foo": "line\nbreak"},
    {"foo": "CRIT"},
    {"foo": "a\nb"},
    {"foo": "axb"},
    {"foo": "a1"},
]


@pytest.mark.integration
def test_matching_agrees_with_amtool(tmp_path: Path) -> None:
    require_binary(AMTOOL)
    routes = [
        {"receiver": f"r{i}", "continue": True, "matchers": [text]}
        for i, text in enumerate(AM_MATCHERS)
    ]
    receivers = [{"name": "none"}] + [{"name": f"r{i}"} for i in range(len(AM_MATCHERS))]
    config = {"route": {"receiver": "none", "routes": routes}, "receivers": receivers}
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    matchers = [parse_matcher(text) for text in AM_MATCHERS]
    for labels in AM_LABELS:
        args = [str(Matcher(k, EQ, v)) for k, v in {**labels, "zz": "1"}.items()]
        done = subprocess.run(
            [AMTOOL, "config", "routes", "test", f"--config.file={tmp_path / 'am.yml'}", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        expected = {f"r{i}" for i, m in enumerate(matchers) if m.matches(labels)} or {"none"}
        assert set(done.stdout.strip().split(",")) == expected, labels


@pytest.mark.integration
def test_promql_literals_agree_with_promtool(tmp_path: Path) -> None:
    require_binary(PROMTOOL)
    values = [v for v in NASTY if v] + ["a.b", "(x|y)*", "[a-z]+$", "^"]
    rules, series, tests = [], [], []
    for i, value in enumerate(values):
        exact, regex = promql_string(value), promql_regex_literal(value)
        rules.append({"alert": f"Exact{i}", "expr": f'm{{i="{i}", v={exact}}}'})
        rules.append({"alert": f"Regex{i}", "expr": f'm{{i="{i}", v=~{regex}}}'})
        decoys = dict.fromkeys([value, value + "x", "x" + value, value[:-1], value.upper()])
        for decoy in filter(None, decoys):  # only ``value`` itself may match
            series.append({"series": f'm{{i="{i}", v={promql_string(decoy)}}}', "values": "1"})
        for name in (f"Exact{i}", f"Regex{i}"):
            alert = {"exp_labels": {"i": str(i), "v": value}}
            tests.append({"eval_time": "0m", "alertname": name, "exp_alerts": [alert]})
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": rules}]}))
    test = {
        "rule_files": ["rules.yml"],
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": tests}],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
