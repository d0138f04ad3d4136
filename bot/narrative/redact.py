"""Redaction of everything that leaves for the LLM.

Built-in patterns replace e-mail addresses, bearer tokens and API keys (OpenAI ``sk-…``,
Slack ``xox?-…``/``xapp-…``, GitHub, GitLab ``glpat-``, Google ``AIza…``, AWS access
keys, JWTs, PEM private keys, credentials in URLs, and ``password=…``-style pairs, in
``key=value``, ``key: value`` and JSON ``"key": "value"`` form, for any key ending in a
secret-like word: ``db_password``, ``client_secret``, ``AWS_SECRET_ACCESS_KEY``,
``SECRET_KEY``, ``token``), IPv4 and IPv6 addresses, and card-like numbers (13-19 digits
that pass the Luhn check). Configured regexes (``llm.redact_patterns``) run after them;
their whole match is replaced. Text is NFKC-normalised first, so full-width look-alikes
of ``password=`` or an address are caught as what they fold to. Redaction is applied to every
string of the facts (not to keys), before encoding.

The configured secrets themselves (``Settings.secret_values``: API tokens, the Slack and
PagerDuty credentials, the LLM key, the store's password) are replaced wherever they
appear, whatever their shape, before any pattern runs: an alert that quotes one (a
runbook command, a copied ``curl`` line) does not hand it to the model. Facts are clipped
before they are redacted, so a value cut in the middle of a secret ends in its first
characters: those are replaced too.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

from bot.core import regex

# The longest string redacted whole; beyond it a value is cut first. Facts are clipped
# far shorter before they get here: this bounds the work whatever reaches it.
MAX_CHARS = 8192
CLIPPED = "…"  # what ends a value cut short, here and in the facts
CLIP_MARKS = (CLIPPED, unicodedata.normalize("NFKC", CLIPPED))
MIN_SECRET = 4  # shorter configured values are words, not secrets (as in the log scrubber)

# Linear on any input: a local part starts where a run of its characters starts, and is
# at most 64 long (RFC 5321), so no start is tried twice over a long run without "@".
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
    r"\.[A-Za-z]{2,24}"
)
_BEARER = re.compile(r"(?i)\b(bearer|authorization:\s*basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_PEM = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.{0,8192}?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    re.DOTALL,
)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,20}://)[^\s/@:]{1,256}:[^\s/@]{1,256}@")
_KEYS = re.compile(
    r"\b(?:"
    r"sk-[A-Za-z0-9_-]{16,}"  # OpenAI and look-alikes (sk-proj-…, sk-ant-…)
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab personal access tokens
    r"|AIza[0-9A-Za-z_-]{30,}"  # Google API keys
    r"|xox[abposre]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|xapp-[A-Za-z0-9-]{10,}"  # Slack app-level tokens
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{30,}"
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"  # JWTs
    r")"
)
# key=value, key: value, "key": "value": any key that ends in a secret-like word
_PAIRS = re.compile(
    r"(?i)(\b[\w.-]{0,40}?(?:api[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key|"
    r"token|secret|password|passwd|pwd|"
    r"credentials?)[\"']?\s*[=:]\s*)(\"[^\"]{0,512}\"|'[^']{0,512}'|[^\s,;&\"'}]{1,512})"
)
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w.]*\d)"
)
_IPV6_CANDIDATE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_CARD_CANDIDATE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _ipv6(match: re.Match[str]) -> str:
    text = match.group(0)
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return text
    return "[ip]"


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else match.group(0)


def _forms(secret: str) -> set[str]:
    """``secret`` as it may appear in redacted text: as written, NFKC-folded (the text is),
    and with its runs of white space made one space (as clipped facts are)."""
    forms = {secret, unicodedata.normalize("NFKC", secret)}
    forms |= {" ".join(form.split()) for form in forms}
    return {form for form in forms if len(form) >= MIN_SECRET}


def _cut_start(text: str, secret: str) -> int | None:
    """Where ``text`` ends in the first characters of ``secret`` (at least MIN_SECRET of
    them), the earliest such start; None if it does not."""
    head = secret[:MIN_SECRET]
    at = text.find(head, max(0, len(text) - len(secret) + 1))
    while at != -1:
        if secret.startswith(text[at:]):
            return at
        at = text.find(head, at + 1)
    return None


class Redactor:
    """Replaces secrets and personal data in text; ``patterns`` are extra regexes,
    ``secrets`` the configured secret values."""

    def __init__(self, patterns: Iterable[str] = (), secrets: Iterable[str] = ()) -> None:
        self.extra = [regex.compile(p) for p in patterns]  # operators' own: RE2, linear
        # longest first: a secret that holds another is replaced whole
        forms = {form for secret in secrets for form in _forms(secret)}
        self.secrets = sorted(forms, key=len, reverse=True)
        self._steps: list[Callable[[str], str]] = [
            lambda s: _PEM.sub("[secret]", s),
            lambda s: _URL_CREDENTIALS.sub(r"\1[secret]@", s),
            lambda s: _KEYS.sub("[secret]", s),
            lambda s: _BEARER.sub(r"\1\2[secret]", s),
            lambda s: _PAIRS.sub(r"\1[secret]", s),
            lambda s: _EMAIL.sub("[email]", s),
            lambda s: _CARD_CANDIDATE.sub(_card, s),
            lambda s: _IPV6_CANDIDATE.sub(_ipv6, s),
            lambda s: _IPV4.sub("[ip]", s),
        ]

    def text(self, value: str) -> str:
        if len(value) > MAX_CHARS:  # bounded before any pattern runs
            value = value[:MAX_CHARS] + CLIPPED
        value = unicodedata.normalize("NFKC", value)  # look-alikes, before the patterns
        if self.secrets:
            value = self._configured(value)
        for step in self._steps:
            value = step(value)
        for pattern in self.extra:
            value = pattern.sub("[redacted]", value)
        return value

    def _configured(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, "[secret]")
        # Cut short (the mark is "..." once folded): maybe in the middle of a secret.
        mark = next((m for m in CLIP_MARKS if value.endswith(m)), None)
        if mark is not None:
            kept = value[: -len(mark)]
            for secret in self.secrets:
                start = _cut_start(kept, secret)
                if start is not None:
                    return kept[:start] + "[secret]" + mark
        return value

    def data(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value (dict keys are left alone)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.data(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(item) for item in value]
        return value
