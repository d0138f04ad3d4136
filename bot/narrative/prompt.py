"""Building the prompt: redact, encode compactly, cut to the token cap, render.

The data is encoded twice, as compact JSON and as TOON, and the one with fewer tokens
is used (TOON wins on uniform tables such as many alerts; JSON on small nested data).
The prompt (system + user message) must fit ``llm.max_prompt_tokens``: the subject keeps
its ``n`` most telling items, and the largest ``n`` that fits is found by bisection.

The data goes between ``<incident_data>`` tags; any tag of that name inside the data is
defused first, so alert text cannot close the data section and speak as the operator.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import toon_format

from bot.errors import RenderingError
from bot.narrative.redact import Redactor
from bot.narrative.templates import PromptBook
from bot.narrative.tokens import TokenCounter

Encoding = Literal["toon", "json"]
Audience = Literal["engineer", "stakeholder"]
AUDIENCES: tuple[Audience, ...] = ("engineer", "stakeholder")
STAKEHOLDER_WORDS = 300

_TAG = re.compile(r"<\s*/?\s*incident_data\b[^>]*>?", re.IGNORECASE)
# Characters a reader does not see but a model reads: zero-width and joiners, bidi
# controls, the BOM, and Unicode "tag" characters (invisible ASCII, used to smuggle
# instructions). Dropped from the data, so "<\u200b/incident_data>" is a tag like any other.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U000e0000-\U000e0fff]"
)


class PromptTooLarge(RenderingError):
    """Even the smallest form of the data does not fit ``llm.max_prompt_tokens``."""


class Subject(Protocol):
    task: str

    def __len__(self) -> int: ...

    def context(self, n: int, *, tight: bool = False) -> dict[str, Any]: ...


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def toon(value: Any) -> str:
    return str(toon_format.encode(value, default=str))


def defuse(data: str) -> str:
    """The data section's text with nothing in it that could end the section: invisible
    characters dropped, look-alikes folded (NFKC: a full-width "<" is "<"), then every
    ``<incident_data>`` tag, opening or closing, replaced."""
    return _TAG.sub("[tag removed]", _INVISIBLE.sub("", unicodedata.normalize("NFKC", data)))


@dataclass(frozen=True)
class Encoded:
    text: str
    encoding: Encoding
    json_tokens: int
    toon_tokens: int


def encode(value: Any, counter: TokenCounter) -> Encoded:
    as_json, as_toon = defuse(compact_json(value)), defuse(toon(value))
    json_tokens, toon_tokens = counter.count(as_json), counter.count(as_toon)
    if toon_tokens < json_tokens:
        return Encoded(as_toon, "toon", json_tokens, toon_tokens)
    return Encoded(as_json, "json", json_tokens, toon_tokens)


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    encoding: Encoding
    tokens: int  # system + user, by the counter
    kept: int  # facts kept
    total: int  # facts there were
    json_tokens: int  # the data section alone, per encoding
    toon_tokens: int
    data: str = ""  # the data section as sent: what the answer may claim
    context: Mapping[str, Any] = field(default_factory=dict)  # the same, before encoding

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user},
        ]

    @property
    def rendered(self) -> str:
        return f"{self.system}\n\x00\n{self.user}"


class PromptBuilder:
    def __init__(
        self, book: PromptBook, counter: TokenCounter, redactor: Redactor, max_tokens: int
    ) -> None:
        self.book = book
        self.counter = counter
        self.redactor = redactor
        self.max_tokens = max_tokens

    def _render(self, subject: Subject, audience: Audience, n: int, tight: bool) -> Prompt:
        data = self.redactor.data(subject.context(n, tight=tight))
        encoded = encode(data, self.counter)
        system = self.book.system()
        user = self.book.render(
            "user_prompt.j2",
            task=subject.task,
            audience=audience,
            max_words=STAKEHOLDER_WORDS,
            data_format=encoded.encoding.upper(),
            data=encoded.text,
        )
        tokens = self.counter.count(system) + self.counter.count(user) + 8  # message framing
        return Prompt(
            system, user, encoded.encoding, tokens, n, len(subject),
            encoded.json_tokens, encoded.toon_tokens, encoded.text, data,
        )  # fmt: skip

    def build(self, subject: Subject, audience: Audience) -> Prompt:
        """The prompt with as many facts as fit, most telling first."""
        full = self._render(subject, audience, len(subject), tight=False)
        if full.tokens <= self.max_tokens:
            return full
        low, high = 0, len(subject) - 1  # the answer is in [low, high] if low fits
        best = self._render(subject, audience, 0, tight=False)
        if best.tokens > self.max_tokens:
            best = self._render(subject, audience, 0, tight=True)
            if best.tokens > self.max_tokens:
                raise PromptTooLarge(
                    f"the prompt needs {best.tokens} tokens with no facts at all; "
                    f"llm.max_prompt_tokens is {self.max_tokens}"
                )
            return best
        while low < high:
            mid = (low + high + 1) // 2
            candidate = self._render(subject, audience, mid, tight=False)
            if candidate.tokens <= self.max_tokens:
                low, best = mid, candidate
            else:
                high = mid - 1
        return best
