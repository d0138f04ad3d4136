"""Who may approve or reject a remediation from Slack: ``slack.approvers`` user IDs, or
members of a listed user group (``S…``, read with ``usergroups.users.list`` and cached).
Nobody is an approver when the list is empty.
"""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.clock import Clock
from bot.slack.members import Members


class Approvers:
    def __init__(
        self, ids: Sequence[str], client: AsyncWebClient, clock: Clock, *, ttl: float = 300.0
    ) -> None:
        self.members = Members(ids, client, clock, ttl=ttl)

    async def check(self, user_id: str) -> tuple[bool, str]:
        """(allowed, why not)."""
        if self.members.empty:
            return False, "no approvers are configured (slack.approvers)"
        found = await self.members.contains(user_id)
        if found is None:
            return False, "membership of the approver group could not be checked; try again"
        if not found:
            return False, "you are not an approver for remediations"
        return True, ""
