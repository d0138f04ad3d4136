"""Who may approve or reject a remediation from Slack: ``slack.approvers`` user IDs, or
members of a listed user group (``S…``, read with ``usergroups.users.list`` and cached).
Nobody is an approver when the list is empty.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiohttp
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.clock import Clock

log = logging.getLogger(__name__)


class Approvers:
    def __init__(
        self, ids: Sequence[str], client: AsyncWebClient, clock: Clock, *, ttl: float = 300.0
    ) -> None:
        self.users = {i for i in ids if not i.startswith("S")}
        self.groups = [i for i in ids if i.startswith("S")]
        self.client = client
        self.clock = clock
        self.ttl = ttl
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    async def check(self, user_id: str) -> tuple[bool, str]:
        """(allowed, why not)."""
        if not self.users and not self.groups:
            return False, "no approvers are configured (slack.approvers)"
        if user_id in self.users:
            return True, ""
        unknown = []
        for group in self.groups:
            members = await self._group(group)
            if members is None:
                unknown.append(group)
            elif user_id in members:
                return True, ""
        if unknown:
            return False, "membership of the approver group could not be checked; try again"
        return False, "you are not an approver for remediations"

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
