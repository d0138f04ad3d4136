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

Runbooks are often written as a path in the repository that holds them
(``runbook_url: docs/runbooks/errors.md#triage``), which no phone can open. With
``links.runbook_base_url`` such a path is resolved against it (``resolve``): a rule's
``runbook_url`` and a playbook's links alike, and links under that base are allowed.
Without it, or for a scheme other than http(s), the value is no link at all, and
``alertpilot check`` says so (``link_problem``).

The incident's own page in the console (``console_url``) is a link alertpilot makes:
Slack messages and PagerDuty events carry it when the console is on and
``server.public_url`` says where people reach this server (a link that cannot open is
not sent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from bot.playbook.allowlist import url_allowed
from bot.settings import Settings

HIDDEN = "link to untrusted host hidden"


@dataclass(frozen=True)
class LinkPolicy:
    """The URLs alert-supplied links may point under (empty allows none), the base
    that runbook paths are resolved against, and where the console's incident pages are
    (None: no console link)."""

    allowed: tuple[str, ...] = ()
    runbook_base: str | None = None
    console_base: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkPolicy:
        base = settings.links.runbook_base_url
        return cls(
            (
                *settings.prometheus.bases,
                *settings.alertmanager.bases,
                *settings.links.allowed_urls,
                *([base] if base else []),
            ),
            runbook_base=base,
            console_base=_console_base(settings),
        )

    def console_url(self, incident_id: int) -> str | None:
        """The incident's page in the console, or None when there is none to open."""
        if self.console_base is None:
            return None
        return f"{self.console_base}/ui/incidents/{incident_id}"

    def resolve(self, url: str) -> str | None:
        """``url`` as a link people can open: an http(s) URL as it is, a path (with or
        without a leading ``/``, ``#fragment`` kept) under ``runbook_base``; None when
        it is neither (another scheme, a path with no base). Whether the result may be
        shown is ``allows``' question."""
        return resolve_link(url, self.runbook_base)

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
CONSOLE_TITLE = "Open in alertpilot"


def _console_base(settings: Settings) -> str | None:
    """``server.public_url`` when the console is on: where its pages open for people."""
    public = settings.server.public_url
    if settings.console is None or not public:
        return None
    return public.rstrip("/")


def is_web_link(url: str) -> bool:
    """Whether ``url`` looks like something a reader could open (http or https)."""
    return url.strip().lower().startswith(("http://", "https://"))


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme
    except ValueError:
        return "?"


def resolve_link(url: str, base: str | None) -> str | None:
    """See ``LinkPolicy.resolve``."""
    text = url.strip()
    if is_web_link(text):
        return text
    if not text or base is None or _scheme(text) or text.startswith("//"):
        return None
    return urljoin(base.rstrip("/") + "/", text.lstrip("/"))


def link_problem(url: str, base: str | None) -> str | None:
    """Why ``url`` cannot be opened from Slack or PagerDuty, or None when it can."""
    text = url.strip()
    if is_web_link(text):
        return None
    if not text:
        return "is empty"
    scheme = _scheme(text)
    if scheme:
        return f"is a {scheme}: link, not http(s): Slack and PagerDuty show no link"
    if text.startswith("//"):
        return "has no scheme: write it with https://"
    if base is None:
        return (
            "is a path, not a link a phone can open: set links.runbook_base_url to where "
            "it is published, or write the full https:// URL"
        )
    return None
