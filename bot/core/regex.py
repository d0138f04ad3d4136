"""Regular expressions from configs and playbooks, read as Prometheus and Alertmanager
read them: RE2 syntax, matched in time linear in the text.

Python's ``re`` backtracks: ``(a+)+$`` against forty "a"s and a "b" runs for minutes.
The text matched here comes from alerts (label values, annotations), so a pattern an
operator wrote (a matcher, an argument's ``pattern``, a redaction) must never be able to
stall the event loop on what a sender puts in an alert. RE2 also refuses what Go's
regexp refuses (lookarounds, backreferences), so a matcher means here what it means to
Alertmanager.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import re2  # type: ignore[import-untyped]
from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from bot.errors import InvalidInput

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors are raised to the caller, not written to stderr


class RegexError(InvalidInput):
    """The pattern is not valid RE2 syntax."""


class Regex:
    """A compiled pattern. Text holding lone surrogates (not valid UTF-8) is matched with
    U+FFFD in their place."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str, compiled: Any) -> None:
        self.pattern = pattern
        self._compiled = compiled

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(cls)  # as a field of a matcher (never dumped)

    def fullmatch(self, text: str) -> bool:
        try:
            return self._compiled.fullmatch(text) is not None
        except UnicodeEncodeError:  # rare: only then is the text copied
            return self._compiled.fullmatch(_valid(text)) is not None

    def sub(self, replacement: str, text: str) -> str:
        """Every match replaced by ``replacement``, taken literally."""
        try:
            return str(self._compiled.sub(lambda _: replacement, text))
        except UnicodeEncodeError:
            return str(self._compiled.sub(lambda _: replacement, _valid(text)))


@functools.lru_cache(maxsize=1024)
def compile(pattern: str) -> Regex:
    try:
        return Regex(pattern, re2.compile(pattern, _OPTIONS))
    except re2.error as exc:
        raise RegexError(_message(exc)) from None


def _message(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return str(detail)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)
