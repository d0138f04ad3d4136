"""The narrative cache: SHA-256 of (provider, model, rendered prompt) -> the answer, in the store.

An identical prompt (same facts after redaction and cutting, same templates, same model)
is answered from the store for ``llm.cache_ttl`` seconds, with no provider call.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass

from pydantic import TypeAdapter, ValidationError

from bot.store.base import Store

log = logging.getLogger(__name__)

PREFIX = "narrative:cache:"


@dataclass(frozen=True)
class CachedAnswer:
    text: str
    model: str
    tokens: int
    generated_at: float


_STORED = TypeAdapter(CachedAnswer)  # checks each field's type as it is read


def cache_key(provider: str, model: str, rendered_prompt: str) -> str:
    material = "\x00".join((provider, model, rendered_prompt)).encode()
    return hashlib.sha256(material).hexdigest()


class NarrativeCache:
    def __init__(self, store: Store, ttl: float) -> None:
        self.store = store
        self.ttl = ttl

    async def get(self, key: str, now: float) -> CachedAnswer | None:
        raw = await self.store.kv_get(PREFIX + key, now)
        if raw is None:
            return None
        try:
            return _STORED.validate_json(raw)
        except ValidationError:
            log.warning("narrative cache entry %s is unreadable; ignoring it", key[:12])
            return None

    async def put(self, key: str, answer: CachedAnswer, now: float) -> None:
        if self.ttl <= 0:
            return
        await self.store.kv_set(PREFIX + key, json.dumps(asdict(answer)), now=now, ttl=self.ttl)
