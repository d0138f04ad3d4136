"""Who can reach what: the checks every request passes first, and the summary of what is
open that ``serve`` logs and ``check`` prints.

A server bound to 127.0.0.1 is not out of a browser's reach: any page the on-call opens
can send requests to it, and through DNS rebinding (a name of the attacker's that
resolves to 127.0.0.1 once the page has loaded) even read the answers. Three checks,
before any handler runs, close that:

- **Host.** Only requests addressed by a name this server answers to: loopback names
  and addresses, the ``server.listen`` host, the ``server.public_url`` host and
  ``server.allowed_hosts``. A rebinding page addresses it by the attacker's name.
  (``allowed_hosts: ["*"]`` turns this off, for a proxy that checks the Host itself.)
- **Origin.** A browser says where a request comes from (``Origin``,
  ``Sec-Fetch-Site``); one from another site is refused. Alertmanager, Grafana,
  PagerDuty and Slack send neither.
- **Content-Type.** The JSON endpoints take ``application/json`` only. A page can send
  a ``text/plain`` or form POST anywhere without asking first; a JSON one needs the
  server's consent (a CORS preflight), which alertpilot never gives.

And what is open is said plainly, endpoint by endpoint: ``exposure`` lists each
endpoint with what protects it, and ``refusal`` names the configuration ``serve``
refuses to start with (a non-loopback ``listen`` with an open webhook).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from bot.core.durations import format_duration
from bot.errors import RequestRefused
from bot.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
ANY_HOST = "*"
WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - addresses to listen on, not hosts
# POSTs that are not JSON: Slack signs its form-encoded requests, and a browser cannot.
NOT_JSON = frozenset({"/slack/events"})


def hostname(value: str) -> str:
    """The host of a ``Host`` header or of a URL's netloc, lower case, without the port,
    the brackets of an IPv6 address or a trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def is_loopback(host: str) -> bool:
    host = hostname(host)
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def not_json(request: web.Request) -> str | None:
    """What is wrong with the request's Content-Type for a JSON endpoint, or None."""
    given = request.headers.get("Content-Type", "")
    if given == "application/json":  # what Alertmanager sends: nothing to take apart
        return None
    kind = given.partition(";")[0].strip().lower()
    if kind == "application/json":
        return None
    return f"expected Content-Type: application/json, got {kind or 'none'!r}"


def listens_everywhere(settings: Settings) -> bool:
    return settings.server.host in WILDCARDS


class Guard:
    """The Host, Origin and Content-Type checks, with what they accept worked out once."""

    def __init__(self, settings: Settings) -> None:
        server = settings.server
        self.any_host = ANY_HOST in server.allowed_hosts
        names = {hostname(name) for name in server.allowed_hosts if name != ANY_HOST}
        if not listens_everywhere(settings):  # a wildcard names no host
            names.add(hostname(server.host))
        self.public_origin = _origin(server.public_url) if server.public_url else None
        if server.public_url:
            names.add(hostname(urlsplit(server.public_url).netloc))
        self.hosts = frozenset(names)
        self._answers: dict[str, bool] = {}  # Host header -> allowed, worked out once
        # And endpoints that answer a wrong type in a shape of their own, or that are off.
        self.not_json = set(NOT_JSON)

    def host_allowed(self, host: str) -> bool:
        known = self._answers.get(host)
        if known is None:
            known = self.any_host or is_loopback(host) or hostname(host) in self.hosts
            if len(self._answers) < 256:  # the few names real clients use, not every one tried
                self._answers[host] = known
        return known

    def check(self, request: web.Request) -> None:
        """Raise ``RequestRefused`` for a request a browser may have been made to send."""
        headers = request.headers
        host = headers.get("Host")
        if host is not None and not self.host_allowed(host):
            raise RequestRefused(
                421,
                "host_not_allowed",
                f"this server does not answer to {hostname(host)!r}: add it to "
                "server.allowed_hosts (or set server.public_url)",
            )
        origin = headers.get("Origin")
        if origin is not None and not self._same_origin(origin.lower(), host):
            raise RequestRefused(403, "cross_origin", f"requests from {origin!r} are refused")
        if headers.get("Sec-Fetch-Site") == "cross-site":
            raise RequestRefused(403, "cross_origin", "cross-site requests are refused")
        if (
            request.method == "POST"
            and request.path not in self.not_json
            and request.match_info.http_exception is None
        ):
            problem = not_json(request)
            if problem is not None:
                raise RequestRefused(415, "unsupported_media_type", problem)

    def _same_origin(self, origin: str, host: str | None) -> bool:
        """The page that sent it was served by this server: under the Host the request
        was addressed to (http, or https through a proxy), or under ``public_url``."""
        if origin == self.public_origin:
            return True
        if host is None:
            return False
        host = host.strip().lower()
        return origin in (f"http://{host}", f"https://{host}")


@dataclass(frozen=True)
class Endpoint:
    path: str
    state: str  # what protects it, or that it is off

    def line(self) -> str:
        return f"{self.path}: {self.state}"


def exposure(settings: Settings) -> list[Endpoint]:
    """Every endpoint group and what it takes to use it, as configured."""
    server = settings.server
    if server.webhook_token is not None and server.webhook_basic_auth is not None:
        webhook = "bearer token (server.webhook_token) or basic auth"
    elif server.webhook_token is not None:
        webhook = "bearer token (server.webhook_token)"
    elif server.webhook_basic_auth is not None:
        webhook = "basic auth (server.webhook_basic_auth)"
    else:
        webhook = (
            f"OPEN: no credentials; anyone who can connect to {server.listen} can open "
            "incidents (set server.webhook_token)"
        )
    if server.api_token is not None:
        api = "bearer token (server.api_token)"
    else:
        api = "off (set server.api_token to turn it on)"
    out = [
        Endpoint("POST /alertmanager", webhook),
        Endpoint(
            "/api/v1 (incidents, approvals, narratives, rca_analyze, oncall)",
            api,
        ),
    ]
    out.append(Endpoint("POST /slack/events", _slack(settings)))
    pagerduty = settings.pagerduty
    if pagerduty is None:
        out.append(Endpoint("POST /pagerduty", "off (no pagerduty section)"))
    elif pagerduty.webhook_secret is None:
        out.append(Endpoint("POST /pagerduty", "refuses every request (no webhook_secret)"))
    else:
        out.append(Endpoint("POST /pagerduty", "PagerDuty webhook signature"))
    out.append(Endpoint("/ui (console)", _console(settings)))
    out.append(Endpoint("GET /healthz, /readyz, /metrics", "open, read only"))
    if ANY_HOST in server.allowed_hosts:
        hosts = "any Host (server.allowed_hosts has '*')"
    else:
        names = sorted(Guard(settings).hosts)
        hosts = "loopback" + "".join(f", {name}" for name in names)
    out.append(Endpoint("Host names answered", hosts))
    return out


def _people(count: int, one: str, many: str = "") -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def _slack(settings: Settings) -> str:
    """The signature, then who may do what once it is checked (``bot.slack.access``)."""
    slack = settings.slack
    if slack is None:
        return "off (no slack section)"
    socket = " (and Socket Mode: slack.app_token)" if slack.app_token is not None else ""
    responders = _people(len(slack.responders), "user or group", "users or groups")
    anywhere = f"; slack.responders ({responders}) from anywhere" if slack.responders else ""
    if slack.query_users or slack.query_channels:
        query = (
            f"query for {_people(len(slack.query_users), 'user')} and in "
            f"{_people(len(slack.query_channels), 'channel')}"
        )
    else:
        query = "query off"
    approvers = (
        f"approvals by {_people(len(slack.approvers), 'approver')}"
        if slack.approvers
        else "approvals by nobody"
    )
    return (
        f"Slack request signature{socket}; an incident is acted on from its own channel"
        f"{anywhere}; {query}; {approvers}; silences up to {format_duration(slack.max_silence)}"
    )


def _console(settings: Settings) -> str:
    console = settings.console
    if console is None:
        return "off (no console section)"
    ways = []
    if console.users:
        count = len(console.users)
        ways.append(
            f"sign-in with a token per person ({count} {'person' if count == 1 else 'people'})"
        )
    if console.trusted_proxies:
        ways.append(f"{console.user_header} from trusted_proxies")
    approvers = (
        f"approvals by {_people(len(console.approvers), 'approver')}"
        if console.approvers
        else "approvals by nobody"
    )
    return f"{' or '.join(ways)}; {approvers}"


def host_warnings(settings: Settings) -> list[str]:
    """A server listening on every address but answering loopback names only: whoever
    reaches it from elsewhere (Alertmanager on another machine, a proxy) gets 421."""
    server = settings.server
    if not listens_everywhere(settings) or ANY_HOST in server.allowed_hosts:
        return []
    if server.allowed_hosts or server.public_url:
        return []
    return [
        f"server.listen is {server.listen} but only loopback names are answered: a client "
        "that addresses this server by any other name or address gets 421 (list them in "
        "server.allowed_hosts, or set server.public_url)"
    ]


def refusal(settings: Settings) -> str | None:
    """Why ``serve`` will not start with these settings, or None.

    Off loopback, an open webhook lets anyone on the network open incidents and page
    people: the tokens are required there."""
    server = settings.server
    if is_loopback(server.host):
        return None
    if server.webhook_token is None and server.webhook_basic_auth is None:
        return (
            f"server.listen is {server.listen}, not a loopback address, and POST "
            "/alertmanager has no credentials: set server.webhook_token (or "
            "webhook_basic_auth), or listen on 127.0.0.1"
        )
    return None
