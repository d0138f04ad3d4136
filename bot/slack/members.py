"""A list of Slack people as a setting names them: user IDs (``U…``, ``W…``) and user
groups (``S…``). A group's members are read with ``usergroups.users.list`` and cached for
``ttl`` seconds, so a busy channel does not ask Slack on every press; when Slack cannot be
reached the last answer read is used, and with none the answer is "unknown", never "yes".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiohttp
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.clock import Clock

log = logging.getLogger(__name__)


class Members:
    def __init__(
        self, ids: Sequence[str], client: AsyncWebClient, clock: Clock, *, ttl: float = 300.0
    ) -> None:
        self.users = frozenset(i for i in ids if not i.startswith("S"))
        self.groups = tuple(i for i in ids if i.startswith("S"))
        self.client = client
        self.clock = clock
        self.ttl = ttl
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    @property
    def empty(self) -> bool:
        return not self.users and not self.groups

    async def contains(self, user_id: str) -> bool | None:
        """Whether ``user_id`` is listed or in a listed group; ``None`` when it is not
        listed and a group's membership could not be read (the caller decides, and
        refuses: an unknown answer must not let anyone in)."""
        if user_id in self.users:
            return True
        unknown = False
        for group in self.groups:
            members = await self._group(group)
            if members is None:
                unknown = True
            elif user_id in members:
                return True
        return None if unknown else False

    async def _group(self, group: str) -> frozenset[str] | None:
        now = self.clock.monotonic()
        cached = self._members.get(group)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        try:
            answer = await self.client.usergroups_users_list(usergroup=group)
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("usergroups.users.list %s failed: %s", group, exc)
            return cached[1] if cached is not None else None  # stale beats nothing
        members = frozenset(str(u) for u in answer.get("users") or [])
        self._members[group] = (now, members)
        return members
