"""Grounding: an LLM narrative may say only what the facts it was given say.

The prompt tells the model to use the facts alone; this check, on its answer, is what
makes sure. The answer is cut into sentences, and every claim a sentence makes is
looked up in the facts (the data section of the prompt, as sent):

    number    12%, 3.2 s, 800 ms, 1,204 requests: a value of the facts, in any of the
              usual scales (a ratio of 0.123 supports 12% and 12.3%), to the precision
              written (small counts without a unit are words, not claims)
    time      04:12, 2026-05-01: written somewhere in the facts
    version   v2.3.1, 1.14.0: written in the facts
    name      `code`, hosts, pods, instances, metrics, services with a digit, an
              underscore, a dot or a dash in them, CamelCase alert names, key=value:
              written in the facts
    action    "rolled back", "switched", "failed over", "restarted", "silenced",
              "scaled", "paused", "disabled", ...: a step of that kind that ran (not one
              only suggested or waiting for approval) or an event of that kind on the
              timeline. A sentence that proposes an action (should, consider, next:) or
              says it in the imperative ("roll back") does not claim it happened.

Links left in the answer are alertpilot's own (``clean`` removes every other).

A sentence with any unsupported claim is dropped; what was dropped and why is kept. If
sentences were dropped and too little is left (fewer than ``MIN_SENTENCES`` sentences or
``MIN_WORDS`` words) the template narrative is posted instead.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ClaimKind = Literal["number", "time", "version", "name", "action"]

MIN_WORDS = 12
MIN_SENTENCES = 2

# Steps and events that count as having happened (a remediation's state, as stored).
RAN_STATES = frozenset(
    {
        "succeeded", "success", "verified", "fixed", "done", "running", "ran", "failed",
        "error", "not_fixed", "verify_failed", "timed_out", "rolled_back", "executed",
    }
)  # fmt: skip

# Action families: what a sentence may claim was done, and the words of a step or an
# event (its name, summary or message) that show one of that kind was.
ACTIONS: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {
    name: (re.compile(claim, re.IGNORECASE), re.compile(step, re.IGNORECASE))
    for name, claim, step in (
        (
            "rollback",
            r"\brolled[ -]?back\b|\breverted\b|\bthe rollback\b",
            r"roll_?back|revert|rollout undo",
        ),
        (
            "failover",
            r"\bfailed[ -]?over\b|\bswitched\b|\bre-?routed\b|\bredirected\b",
            r"fail_?over|switch|reroute",
        ),
        ("restart", r"\brestart(?:ed)?\b|\brebooted\b|\brecycled\b", r"restart|reboot|recycle"),
        ("silence", r"\bsilenced\b|\bmuted\b", r"silenc|mute"),
        ("scale", r"\bscaled\b|\badded \w* ?(?:workers|replicas|pods|capacity)\b", r"scale"),
        ("pause", r"\bpaused\b|\bhalted\b|\bstopped the\b", r"pause|halt|stop"),
        ("toggle", r"\b(?:disabled|enabled|turned off|turned on)\b", r"flag|disable|enable"),
        ("reindex", r"\breindexed\b|\brebuilt the index\b", r"reindex"),
        ("warm", r"\bwarmed\b", r"warm"),
    )
}
# A remediation event of a step that ran (bot/remediation/runner.py, verify.py).
_RAN_EVENT = re.compile(r"(?:ran|running|failed|verified|succeeded|rolled back)\b", re.I)
# A sentence with one of these proposes or conditions an action; it does not claim one.
_PROPOSES = re.compile(
    r"\b(?:should|could|would|consider|recommend(?:ed)?|suggest(?:s|ed)?|may|might|if|"
    r"try|next|propos(?:e|ed|al)|pending|awaiting|approval|approve|not|no|unless|can)\b",
    re.IGNORECASE,
)

_NUMBER = re.compile(
    r"(?<![\w.#/])(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?P<unit>\s?(?:%|percent\b|ms\b|s\b|sec\b|seconds?\b|min\b|minutes?\b|m\b|h\b|"
    r"hours?\b|x\b|\u00d7|k\b|MB\b|GB\b|KB\b|req/s\b|/s\b))?(?![\w.]*[a-zA-Z_-])"
)
_TIME = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b|\b\d{4}-\d{2}-\d{2}\b")
_VERSION = re.compile(r"\bv\d+(?:\.\d+)*\b|\b\d+\.\d+\.\d+(?:[-+.]\w+)*\b", re.IGNORECASE)
_CODE = re.compile(r"`([^`\n]{2,80})`")
_TOKEN = re.compile(r"[A-Za-z0-9][\w.:/=@-]*[A-Za-z0-9]")
_URL = re.compile(r"\bhttps?://\S+", re.IGNORECASE)
_CAMEL = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*){1,}$")
_ORDINARY = frozenset(
    {
        "on-call", "follow-up", "re-run", "read-only", "real-time", "up-to-date",
        "long-running", "built-in", "well-known", "third-party", "non-zero", "end-to-end",
        "so-called", "time-to-first-token", "e.g", "i.e", "p50", "p90", "p95", "p99",
        "5xx", "4xx", "2xx", "3xx", "http", "https", "promql", "slack", "pagerduty",
        "alertmanager", "prometheus", "alertpilot", "llm", "api", "db",
    }
)  # fmt: skip
_SEVERITY = re.compile(r"^P[0-3]$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9*`•(\"'-])")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_WORD = re.compile(r"\S+")

# A value in the facts: a number that stands alone, not a piece of a time, a date, an
# identifier or a fingerprint ("10:12" supports no "12%").
_FACT_NUMBER = re.compile(r"(?<![\w:.\-/])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w:\-/]|\.\d)")

_SCALES = (1.0, 100.0, 0.01, 1000.0, 0.001)  # as is, ratio <-> %, s <-> ms
# The scales a number written with a unit may be read in: a percentage is a ratio of the
# facts or a percentage there, never a duration (0.05 s is 50 ms, not 50%); a duration
# is seconds or milliseconds.
_PERCENT_SCALES = (1.0, 100.0)
_TIME_SCALES = (1.0, 1000.0, 0.001)
_TIME_UNITS = frozenset({"ms", "s", "sec", "second", "seconds"})


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    text: str


@dataclass(frozen=True)
class Dropped:
    sentence: str
    claims: tuple[Claim, ...]

    def reason(self) -> str:
        return ", ".join(f"{c.kind} {c.text!r}" for c in self.claims)


@dataclass(frozen=True)
class Evidence:
    sentence: str
    facts: tuple[str, ...]  # ids of the fact rows that support its claims


@dataclass(frozen=True)
class Grounded:
    text: str  # the sentences kept, in their lines
    sentences: int
    kept: int
    dropped: tuple[Dropped, ...] = ()
    evidence: tuple[Evidence, ...] = ()

    @property
    def enough(self) -> bool:
        """Whether what is left still tells the story (else: the template). An answer
        with nothing dropped is whole, however short."""
        if not self.dropped:
            return True
        words = len(_WORD.findall(self.text))
        return self.kept >= MIN_SENTENCES and words >= MIN_WORDS


@dataclass
class Facts:
    """What the narrative was given: the data section's text, and the actions that ran
    (from the remediation steps and timeline when known; from the text otherwise)."""

    text: str
    actions: frozenset[str] | None = None
    _lower: str = field(init=False, repr=False)
    _numbers: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._lower = self.text.lower()
        found = []
        for match in _FACT_NUMBER.finditer(re.sub(r"(?<=\d),(?=\d{3}\b)", "", self.text)):
            try:
                found.append(float(match.group(0)))
            except ValueError:
                continue
        self._numbers = [n for n in found if math.isfinite(n)]

    def has_text(self, text: str) -> bool:
        return text.lower().strip("`'\" ") in self._lower

    def has_token(self, text: str) -> bool:
        """``text`` written in the facts as a whole (``10m`` in a label, not in ``110m``)."""
        pattern = rf"(?<![\w.]){re.escape(text.lower())}(?![\w])"
        return re.search(pattern, self._lower) is not None

    def has_number(
        self, value: float, precision: float, scales: tuple[float, ...] = _SCALES
    ) -> bool:
        """A value of the facts, in one of ``scales``, that rounds to ``value`` at the
        precision it is written with (12% is 0.115 to 0.125; 3.2 s is 3.15 to 3.25)."""
        tolerance = precision / 2 + abs(value) * 1e-9
        return any(
            abs(fact * scale - value) <= tolerance for fact in self._numbers for scale in scales
        )

    def has_action(self, family: str) -> bool:
        if self.actions is not None:
            return family in self.actions
        return bool(ACTIONS[family][1].search(self.text))


def actions_that_ran(
    steps: Iterable[tuple[str, str, str]], events: Iterable[tuple[str, str]]
) -> frozenset[str]:
    """Action families of steps that ran (name, state, summary) and of timeline events
    (kind, message) that record one: a step only suggested or awaiting approval is not."""
    done = set()
    for name, state, summary in steps:
        if state.lower() not in RAN_STATES:
            continue
        for family, (_, step) in ACTIONS.items():
            if step.search(name) or step.search(summary):
                done.add(family)
    for kind, message in events:
        if kind == "remediation":  # "ran: ...", "failed: ..."; not "dry run", "not run"
            if not _RAN_EVENT.match(message):
                continue
        elif kind != "note" or _PROPOSES.search(message) or "suggest" in message.lower():
            continue
        for family, (claim, step) in ACTIONS.items():
            if claim.search(message) or step.search(message):
                done.add(family)
    return frozenset(done)


def _precision(number: str) -> float:
    digits = number.split(".")[1] if "." in number else ""
    return 10.0 ** -len(digits)


def claims(sentence: str) -> list[Claim]:
    """Every claim a sentence makes, as defined above."""
    found: list[Claim] = []
    taken: list[tuple[int, int]] = []

    def free(span: tuple[int, int]) -> bool:
        return all(span[1] <= a or span[0] >= b for a, b in taken)

    for match in _TIME.finditer(sentence):
        found.append(Claim("time", match.group(0)))
        taken.append(match.span())
    for match in _VERSION.finditer(sentence):
        if free(match.span()):
            found.append(Claim("version", match.group(0)))
            taken.append(match.span())
    for match in _CODE.finditer(sentence):
        found.append(Claim("name", match.group(1)))
        taken.append(match.span())
    for match in _URL.finditer(sentence):  # only alertpilot's own are left by clean()
        taken.append(match.span())
    for match in _NUMBER.finditer(sentence):
        if not free(match.span()):
            continue
        number, unit = match.group("num"), (match.group("unit") or "").strip()
        value = float(number.replace(",", ""))
        taken.append(match.span())
        if not unit and "." not in number and "," not in number and value <= 20:
            continue  # a count in words' place: "3 alerts", "2 of 9 checks"
        found.append(Claim("number", match.group(0).strip()))
    for match in _TOKEN.finditer(sentence):
        token = match.group(0)
        if not free(match.span()) or token.lower() in _ORDINARY or _SEVERITY.match(token):
            continue
        if _is_name(token):
            found.append(Claim("name", token))
            taken.append(match.span())
    if not _PROPOSES.search(sentence):
        for family, (claim, _) in ACTIONS.items():
            hit = claim.search(sentence)
            if hit:
                found.append(Claim("action", f"{family}: {hit.group(0)}"))
    return found


def _is_name(token: str) -> bool:
    if any(c in token for c in "_=@") or _CAMEL.match(token):
        return True
    has_digit, has_alpha = any(c.isdigit() for c in token), any(c.isalpha() for c in token)
    if has_digit and has_alpha:
        return True
    if "." in token.strip(".") and has_alpha and not token.endswith("."):
        return True  # a host, a metric with dots
    return "-" in token and token.count("-") >= 1 and token.islower() and len(token) > 3


def supported(claim: Claim, facts: Facts) -> bool:
    if claim.kind == "action":
        return facts.has_action(claim.text.split(":", 1)[0])
    if claim.kind == "number":
        match = _NUMBER.match(claim.text)
        if match is None:
            return facts.has_text(claim.text)
        number = match.group("num")
        value = float(number.replace(",", ""))
        scales = _scales_for((match.group("unit") or "").strip().lower())
        return facts.has_number(value, _precision(number), scales) or facts.has_token(claim.text)
    return facts.has_text(claim.text)


def _scales_for(unit: str) -> tuple[float, ...]:
    """How a number written with ``unit`` may be found among the facts' values."""
    if unit in ("%", "percent"):
        return _PERCENT_SCALES
    if unit in _TIME_UNITS:
        return _TIME_SCALES
    return _SCALES


def _sentences(line: str) -> list[str]:
    bullet = _BULLET.match(line)
    prefix = bullet.group(0) if bullet else ""
    body = line[len(prefix) :]
    parts = [p for p in _SENTENCE.split(body) if p.strip()]
    if prefix and parts:
        parts[0] = prefix + parts[0]
    return parts


_ROW_KEYS = ("check", "step", "name", "id")


def fact_rows(context: Mapping[str, Any]) -> dict[str, str]:
    """Every row of a prompt's data, by id: ``incident``, ``diagnostics/<check>``,
    ``remediations/<step>``, ``alerts/<n>``, ``timeline/<n>`` (1-based), as compact JSON."""
    rows: dict[str, str] = {}
    for section, value in context.items():
        if isinstance(value, list):
            for n, item in enumerate(value, 1):
                key = next(
                    (str(item[k]) for k in _ROW_KEYS if isinstance(item, Mapping) and item.get(k)),
                    str(n),
                )
                rows[f"{section}/{key}"] = json.dumps(item, ensure_ascii=False, default=str)
        else:
            rows[section] = json.dumps(value, ensure_ascii=False, default=str)
    return rows


def ground(text: str, facts: Facts, rows: Mapping[str, str] | None = None) -> Grounded:
    """Keep the sentences whose every claim the facts support; with ``rows`` (see
    ``fact_rows``), trace each one kept to the rows behind its claims."""
    by_row = {key: Facts(row) for key, row in (rows or {}).items()}
    evidence: list[Evidence] = []
    lines_out: list[str] = []
    dropped: list[Dropped] = []
    total = kept = 0
    for line in text.splitlines():
        if not line.strip():
            lines_out.append(line)
            continue
        keep = []
        for sentence in _sentences(line):
            total += 1
            found = claims(sentence)
            unsupported = tuple(c for c in found if not supported(c, facts))
            if unsupported:
                dropped.append(Dropped(sentence.strip(), unsupported))
                continue
            keep.append(sentence)
            kept += 1
            if by_row:
                behind = tuple(
                    key for key, row in by_row.items() if any(supported(c, row) for c in found)
                )
                evidence.append(Evidence(sentence.strip(), behind))
        if keep:
            lines_out.append(" ".join(keep))
    out = re.sub(r"\n{3,}", "\n\n", "\n".join(lines_out)).strip()
    return Grounded(out, total, kept, tuple(dropped), tuple(evidence))
