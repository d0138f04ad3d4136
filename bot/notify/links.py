"""Which links that arrive with an alert alertpilot passes on to people.

An alert's generator URL, its ``runbook_url`` annotation, Grafana's dashboard, panel,
silence and image URLs and the group's ``externalURL`` are whatever the sender wrote:
anyone who can reach the webhook could make the Slack message's "Prometheus graph" or
"Runbook" open a host of their choosing. So such a link is shown only when it points at
a host alertpilot was configured with: ``prometheus.url`` and ``external_url``,
``alertmanager.url`` and ``external_url``, and ``links.allowed_urls`` (the runbook wiki,
Grafana). The comparison is ``bot.playbook.allowlist``'s: scheme, host and port equal,
the path under the entry's path, nothing a browser would read as another host.

A link that is not allowed is not sent, not even as text (Slack turns a bare URL into a
link): in its place the message says that a link was hidden, so nobody wonders where it
went. Links alertpilot makes itself (Slack permalinks, PagerDuty's incident, silences it
created) and the playbooks' own links are not alert input and are not checked here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.playbook.allowlist import url_allowed
from bot.settings import Settings

HIDDEN = "link to untrusted host hidden"


@dataclass(frozen=True)
class LinkPolicy:
    """The URLs alert-supplied links may point under; empty allows none."""

    allowed: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkPolicy:
        return cls(
            (
                *settings.prometheus.bases,
                *settings.alertmanager.bases,
                *settings.links.allowed_urls,
            )
        )

    def allows(self, url: str) -> bool:
        return bool(url) and url_allowed(url.strip(), self.allowed)

    def split(self, links: Sequence[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
        """``(url, title)`` pairs that are http(s) links: the allowed ones, and the titles
        of the others (a value that is no http(s) URL at all is neither: not a link)."""
        shown: list[tuple[str, str]] = []
        hidden: list[str] = []
        for url, title in links:
            if self.allows(url):
                shown.append((url, title))
            elif is_web_link(url):
                hidden.append(title)
        return shown, hidden


NO_LINKS = LinkPolicy()  # the default where none is given: no alert-supplied link is shown


def is_web_link(url: str) -> bool:
    """Whether ``url`` looks like something a reader could open (http or https)."""
    return url.strip().lower().startswith(("http://", "https://"))
