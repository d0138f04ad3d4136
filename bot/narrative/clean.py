"""Cleaning of narrative text before it is posted (Slack, API, CLI).

Alert text reaches the narrative through the model's answer or the template, so
anything Slack would act on is taken out: broadcast mentions (``<!channel>``,
``<!here>``, ``<!everyone>``, ``@channel``/``@here``/``@everyone``), user, group and
channel references (``<@U…>``, ``<!subteam^…>``, ``<#C…>``), other ``<!…>`` commands,
Slack links (``<https://…|label>`` keeps only the label) and raw URLs, except those under
an allowed prefix (alertpilot's own ``server.public_url``). The text is bounded in length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_CHARS = 3000  # Slack's limit for one section block's text
MAX_PASSES = 16  # nesting deeper than this is not text anyone meant

_SPECIAL = re.compile(r"<!(?:[^<>|]*)(?:\|([^<>]*))?>")  # <!channel>, <!subteam^S1|@ops>, <!date…>
_USER = re.compile(r"<@[UWB][A-Z0-9]+(?:\|[^<>]*)?>")
_CHANNEL = re.compile(r"<#C[A-Z0-9]+(?:\|([^<>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto|ftp|slack)[^<>|\s]*)(?:\|([^<>]*))?>", re.IGNORECASE)
_BROADCAST = re.compile(r"(?<![\w@])@(?:channel|here|everyone)\b", re.IGNORECASE)
_URL = re.compile(r"\b(?:https?|ftp)://[^\s<>\"')\]]+", re.IGNORECASE)
_SPACES = re.compile(r"(?<=\S)[ \t]{2,}")
_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def clean(text: str, *, allowed_url_prefixes: Iterable[str] = (), limit: int = MAX_CHARS) -> str:
    allowed = tuple(p for p in allowed_url_prefixes if p)

    def link(match: re.Match[str]) -> str:
        url, label = match.group(1), match.group(2)
        if allowed and url.startswith(allowed):
            return f"{label} ({url})" if label else url
        return label or ""

    def url(match: re.Match[str]) -> str:
        found = match.group(0)
        return found if allowed and found.startswith(allowed) else "[link removed]"

    # Until nothing changes: removing one markup can join the text around it into
    # another ("<!ch<!a>annel>" is "<!channel>" once "<!a>" is gone).
    for _ in range(MAX_PASSES):
        before = text
        text = _SPECIAL.sub("", text)
        text = _USER.sub("", text)
        text = _CHANNEL.sub(lambda m: f"#{m.group(1)}" if m.group(1) else "", text)
        text = _LINK.sub(link, text)
        text = _BROADCAST.sub("", text)
        text = _URL.sub(url, text)
        if text == before:
            break
    else:  # still changing: whatever markup is left loses its brackets
        text = text.replace("<", "").replace(">", "")
    text = _SPACES.sub(" ", text)
    lines = [line.rstrip() for line in text.strip().splitlines()]
    text = "\n".join(lines)
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def limit_words(text: str, words: int) -> str:
    """At most ``words`` words, cut at a sentence end when one is near; line breaks kept."""
    found = list(_WORD.finditer(text))
    if len(found) <= words:
        return text
    cut = text[: found[words - 1].end()]
    ends = [m.end() for m in _SENTENCE_END.finditer(cut)]
    if ends and ends[-1] >= len(cut) // 2:
        return cut[: ends[-1]].rstrip()
    return cut.rstrip(",;:") + "…"
