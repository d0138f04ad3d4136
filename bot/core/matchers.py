"""Alertmanager label matchers, and PromQL string literals for untrusted values.

Matchers are parsed the way Alertmanager (0.27+, default "fallback" mode) and amtool do:
first with the UTF-8 matchers parser (``matcher/parse``), and if that rejects the input,
with the classic parser (``pkg/labels/parse.go``). So all of these work::

    alertname="Disk full"          severity=~"critical|page"      env!=prod
    {alertname="X", team="db",}    instance=~"host\\d+"           foo=   (same as foo="")

Quoted values use Go escapes (``\\"``, ``\\\\``, ``\\n``, ``\\t``, ``\\u00e9`` ...); where the
UTF-8 parser rejects an escape, as in ``"host\\d+"``, the classic parser keeps the
backslash, so regexes written the usual way work. Differences from Alertmanager, on purpose:
label names must match ``[a-zA-Z_][a-zA-Z0-9_]*``, and a text that the UTF-8 parser reads as
several matchers is an error for :func:`parse_matcher` (Alertmanager would fall back to
reading ``a=b, c=d`` as the single matcher ``a="b, c=d"``).

Regexes match a whole label value, as Alertmanager anchors them (``^(?:re)$``), and are
RE2 (see :mod:`bot.core.regex`): the same syntax (``(?i)``, ``\\z``, ``[[:alpha:]]``; no
lookarounds or backreferences) and linear time whatever the value.
A missing label matches as the empty string: ``foo=""`` matches an absent ``foo``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, NamedTuple

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from bot.core import regex
from bot.errors import InvalidInput

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# The UTF-8 parser's lexer: punctuation, operators, quoted strings, unquoted words.
_TOKEN = re.compile(
    r"""\s*(?:(?P<punct>[{},])|(?P<op>=~|!=|!~|=)|(?P<quoted>"(?:[^"\\]|\\.)*")"""
    r"""|(?P<word>[^\s{}!=~,\\"'`]+))""",
    re.S,
)
_GO_ESCAPE = re.compile(
    r'\\(?:(?P<simple>[abfnrtv\\"])|x(?P<x>[0-9a-fA-F]{2})|(?P<oct>[0-7]{3})'
    r"|u(?P<u>[0-9a-fA-F]{4})|U(?P<U>[0-9a-fA-F]{8}))"
)
_GO_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
# The classic parser's regex; Go's \s is [\t\n\f\r ].
_CLASSIC = re.compile(
    r"[\t\n\f\r ]*([a-zA-Z_:][a-zA-Z0-9_:]*)[\t\n\f\r ]*(=~|=|!=|!~)[\t\n\f\r ]*(.*?)[\t\n\f\r ]*",
    re.S,
)
_QUOTE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n"}  # what Alertmanager prints
_GO_QUOTE_ESCAPES = {**_QUOTE_ESCAPES, **{v: f"\\{k}" for k, v in _GO_SIMPLE.items()}}
_RE2_META = re.compile(r"[\\.+*?()|\[\]{}^$]")  # the characters Go's regexp.QuoteMeta escapes


class MatcherError(InvalidInput):
    """A matcher is malformed; the message names the offending text and position."""

    def __init__(self, reason: str, text: str | None = None, position: int | None = None) -> None:
        self.reason, self.text, self.position = reason, text, position
        where = "" if position is None else f" at position {position}"
        super().__init__(reason if text is None else f"{reason}{where} in {text!r}")


class MatchOp(enum.StrEnum):
    """The four matcher operators, as written."""

    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True)
class Matcher:
    """One ``name OP value`` matcher; construct it directly or with :func:`parse_matcher`."""

    name: str
    op: MatchOp
    value: str
    _regex: regex.Regex | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _LABEL_NAME.fullmatch(self.name):
            raise MatcherError(
                f"invalid label name {self.name!r}, must match {_LABEL_NAME.pattern}"
            )
        try:
            op = MatchOp(self.op)
        except ValueError:
            raise MatcherError(f"invalid operator {self.op!r}") from None
        object.__setattr__(self, "op", op)
        if op in (MatchOp.RE, MatchOp.NRE):
            object.__setattr__(self, "_regex", _compile_regex(self.value))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set satisfies this matcher (an absent label counts as "")."""
        value = labels.get(self.name, "")
        if self._regex is not None:
            return self._regex.fullmatch(value) == (self.op is MatchOp.RE)
        return (value == self.value) == (self.op is MatchOp.EQ)

    def __str__(self) -> str:
        escaped = "".join(_QUOTE_ESCAPES.get(ch, ch) for ch in self.value)
        return f'{self.name}{self.op}"{escaped}"'

    def to_alertmanager(self) -> dict[str, str | bool]:
        """The matcher as Alertmanager's API v2 takes it (silences, alert filters)."""
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.op in (MatchOp.RE, MatchOp.NRE),
            "isEqual": self.op in (MatchOp.EQ, MatchOp.RE),
        }


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher such as ``severity=~"critical|page"`` (braces allowed)."""
    return _parse(text, single=True)[0]


def parse_matchers(text_or_list: str | Sequence[str]) -> list[Matcher]:
    """Parse ``{a="b", c!~"d"}``, ``a="b", c="d"`` or a list of such strings.

    Like Alertmanager's ``matchers:`` config, each list entry may hold several matchers.
    An empty string or ``{}`` is no matchers.
    """
    if isinstance(text_or_list, str):
        return _parse(text_or_list, single=False)
    return [m for text in text_or_list for m in _parse(text, single=False)]


def matches_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches the label set (true for no matchers)."""
    return all(m.matches(labels) for m in matchers)


def first_failing(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> Matcher | None:
    """The first matcher the label set does not satisfy, or None if all match."""
    return next((m for m in matchers if not m.matches(labels)), None)


def _validate(value: object) -> Matcher:
    if isinstance(value, Matcher):
        return value
    if isinstance(value, str):
        return parse_matcher(value)
    raise ValueError(f'a matcher must be a string like severity="critical", not {value!r}')


MatcherStr = Annotated[
    Matcher,
    BeforeValidator(_validate),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "description": 'Alertmanager matcher, e.g. team=~"db|ops"'}),
]
"""A pydantic field type: accepts ``'team="db"'``, holds a :class:`Matcher`, dumps as a string."""


def promql_string(value: object) -> str:
    """``str(value)`` as a complete, double-quoted PromQL string literal (Go escaping).

    Backslash, quote and control characters are escaped, other non-printable characters
    become ``\\uNNNN``; a lone surrogate (not valid UTF-8) becomes ``\\ufffd``.
    """
    return '"' + "".join(_go_quote_char(ch) for ch in str(value)) + '"'


def regex_escape(value: object) -> str:
    """``str(value)`` as an RE2 pattern that matches exactly it (Go's ``regexp.QuoteMeta``)."""
    return _RE2_META.sub(r"\\\g<0>", str(value))


def promql_regex_literal(value: object) -> str:
    """A PromQL string literal for ``=~`` that matches exactly ``str(value)``."""
    return promql_string(regex_escape(value))


def _go_quote_char(ch: str) -> str:
    if ch in _GO_QUOTE_ESCAPES:
        return _GO_QUOTE_ESCAPES[ch]
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return "\\ufffd"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _compile_regex(pattern: str) -> regex.Regex:
    """The value of ``=~``/``!~``, matched against a whole label value as Alertmanager
    anchors it (``^(?:pattern)$``), with RE2's syntax and linear time."""
    try:
        return regex.compile(pattern)
    except regex.RegexError as exc:
        raise MatcherError(f"invalid regex {pattern!r}: {exc}") from None


class _Raw(NamedTuple):
    """A matcher as parsed, before the name and regex are checked."""

    name: str
    name_pos: int
    op: MatchOp
    value: str
    value_pos: int


def _parse(text: str, *, single: bool) -> list[Matcher]:
    try:
        raws = _parse_utf8(text)
    except MatcherError as error:
        return _fallback(text, single, error)
    if single and len(raws) != 1:
        raise MatcherError(f"expected exactly one matcher, found {len(raws)}", text, 0)
    try:
        return [_build(text, raw) for raw in raws]
    except MatcherError as error:
        return _fallback(text, single, error)


def _fallback(text: str, single: bool, error: MatcherError) -> list[Matcher]:
    """Retry with the classic parser; if it rejects the syntax too, report ``error``."""
    try:
        raws = [_parse_classic(text, text, 0)] if single else _parse_classic_list(text)
    except MatcherError:
        raise error from None
    return [_build(text, raw) for raw in raws]


def _build(text: str, raw: _Raw) -> Matcher:
    if not _LABEL_NAME.fullmatch(raw.name):
        reason = f"invalid label name {raw.name!r}, must match {_LABEL_NAME.pattern}"
        raise MatcherError(reason, text, raw.name_pos)
    try:
        return Matcher(raw.name, raw.op, raw.value)
    except MatcherError as exc:
        raise MatcherError(exc.reason, text, raw.value_pos) from None


def _parse_utf8(text: str) -> list[_Raw]:
    """Alertmanager's UTF-8 matchers grammar: ``[{] [m (, m)* [,]] [}]``."""
    tokens = _tokenize(text)
    braced = tokens[0].kind == "{"
    i, raws, need_comma = int(braced), [], False
    while tokens[i].kind not in ("}", "end"):
        if need_comma:
            if tokens[i].kind != ",":
                raise MatcherError(
                    "expected ',' or '}'" if braced else "expected ','", text, tokens[i].pos
                )
            i, need_comma = i + 1, False
            continue
        name, op, value = tokens[i], tokens[i + 1], tokens[min(i + 2, len(tokens) - 1)]
        if name.kind not in ("quoted", "word"):
            raise MatcherError("expected a label name", text, name.pos)
        if op.kind != "op":
            raise MatcherError("expected an operator: =, !=, =~ or !~", text, op.pos)
        if value.kind not in ("quoted", "word"):
            raise MatcherError("expected a label value", text, value.pos)
        name_text, value_text = _unquote_token(text, name), _unquote_token(text, value)
        raws.append(_Raw(name_text, name.pos, MatchOp(op.text), value_text, value.pos))
        i, need_comma = i + 3, True
    if braced and tokens[i].kind != "}":
        raise MatcherError("expected '}'", text, tokens[i].pos)
    if not braced and tokens[i].kind == "}":
        raise MatcherError("unexpected '}' without '{'", text, tokens[i].pos)
    end = tokens[i + 1] if braced else tokens[i]
    if end.kind != "end":
        raise MatcherError("expected end of input", text, end.pos)
    return raws


class _Token(NamedTuple):
    kind: str  # "{", "}", ",", "op", "quoted", "word" or "end"
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens, pos = [], 0
    while (match := _TOKEN.match(text, pos)) is not None:
        kind = match.lastgroup
        assert kind is not None
        token = match.group(kind)
        tokens.append(_Token(token if kind == "punct" else kind, token, match.start(kind)))
        pos = match.end()
    pos = len(text) - len(text[pos:].lstrip())
    if pos < len(text):
        char = text[pos]
        if char == '"':
            raise MatcherError("unterminated quoted string", text, pos)
        if char == "!":
            raise MatcherError("expected '=' or '~' after '!'", text, pos)
        raise MatcherError(f"unexpected character {char!r}", text, pos)
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _unquote_token(text: str, token: _Token) -> str:
    if token.kind != "quoted":
        return token.text
    return _go_unquote(text, token.pos + 1, token.text[1:-1])


def _go_unquote(text: str, offset: int, body: str) -> str:
    """Decode the inside of a Go double-quoted string as ``strconv.Unquote`` does."""
    out, i = bytearray(), 0
    while i < len(body):
        if body[i] == "\n":
            raise MatcherError("newline in quoted string", text, offset + i)
        if body[i] != "\\":
            out += body[i].encode("utf-8", "surrogatepass")
            i += 1
            continue
        esc = _GO_ESCAPE.match(body, i)
        if esc is None:
            raise MatcherError("invalid escape sequence", text, offset + i)
        if esc["simple"]:
            out += _GO_SIMPLE.get(esc["simple"], esc["simple"]).encode()
        elif esc["x"] or esc["oct"]:
            byte = int(esc["x"], 16) if esc["x"] else int(esc["oct"], 8)
            if byte > 0xFF:
                raise MatcherError("octal escape out of range", text, offset + i)
            out.append(byte)
        else:
            code = int(esc["u"] or esc["U"], 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise MatcherError("invalid Unicode escape", text, offset + i)
            out += chr(code).encode()
        i = esc.end()
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise MatcherError("quoted string is not valid UTF-8", text, offset) from None


def _parse_classic_list(text: str) -> list[_Raw]:
    """Alertmanager's classic ``ParseMatchers``: strip one ``{`` and ``}``, split on commas
    outside double quotes."""
    body, base = text, 0
    if body.startswith("{"):
        body, base = body[1:], 1
    body = body.removesuffix("}")
    parts, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(body):
        if char == ",":
            if not quoted:
                parts.append((body[start:i], base + start))
                start = i + 1
        elif char == '"':
            if not escaped:
                quoted = not quoted
            escaped = False
        elif char == "\\":
            escaped = not escaped
        else:
            escaped = False
    last = body[start:]
    if last.strip():
        parts.append((last.strip(), base + start + len(last) - len(last.lstrip())))
    return [_parse_classic(text, part, pos) for part, pos in parts]


def _parse_classic(text: str, part: str, pos: int) -> _Raw:
    """Alertmanager's classic ``ParseMatcher`` for ``part``, found at ``pos`` in ``text``."""
    match = _CLASSIC.fullmatch(part)
    if match is None:
        raise MatcherError("bad matcher format", text, pos)
    raw, value_pos = match.group(3), pos + match.start(3)
    quoted = raw.startswith('"')
    chars, escaped, closed = [], False, not quoted
    for i, char in enumerate(raw[1:] if quoted else raw, start=int(quoted)):
        if escaped:
            chars.append({"n": "\n", '"': '"', "\\": "\\"}.get(char, "\\" + char))
            escaped = False
        elif char == "\\" and i < len(raw) - 1:
            escaped = True
        elif char == '"':
            if closed or i < len(raw) - 1:
                raise MatcherError("unescaped double quote in value", text, value_pos + i)
            closed = True
        else:
            chars.append(char)
    if not closed:
        raise MatcherError("unterminated quoted value", text, value_pos)
    op = MatchOp(match.group(2))
    return _Raw(match.group(1), pos + match.start(1), op, "".join(chars), value_pos)
