"""Which URLs and executables playbook steps may reach.

A URL is allowed when an entry of the allowlist has the same scheme, host and port and
its path is a prefix of the URL's path on a segment boundary: ``https://flags.internal/api``
allows ``https://flags.internal/api`` and ``https://flags.internal/api/flags/x`` but not
``https://flags.internal/apix`` or ``https://flags.internal/api/../admin``. Query strings
and fragments are not compared. An entry with no path (``https://flags.internal``) allows
the whole host, which ``alertpilot check`` reports as a broad allowlist.

An executable is allowed when ``argv[0]`` equals an entry exactly (``/usr/bin/systemctl``
allows only that path; ``kubectl`` allows only the bare name, looked up on ``PATH``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SCHEMES = frozenset({"http", "https"})
INTERPRETERS = frozenset(
    {"sh", "bash", "dash", "zsh", "ksh", "fish", "csh", "tcsh", "busybox", "env", "sudo"}
    | {"python", "python3", "perl", "ruby", "node", "php", "lua", "awk", "xargs"}
)


@dataclass(frozen=True)
class _Url:
    scheme: str
    host: str
    port: int
    path: str


def _parse(url: str) -> _Url | None:
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not parts.hostname:
        return None
    path = unquote(parts.path) or "/"
    if any(segment in (".", "..") for segment in path.split("/")):
        return None
    default = 443 if scheme == "https" else 80
    return _Url(scheme, parts.hostname.lower(), port or default, path)


def url_problem(url: str, allowed: Iterable[str]) -> str | None:
    """None when ``url`` is on the allowlist, else why not (for error messages)."""
    target = _parse(url)
    if target is None:
        return (
            "not an absolute http(s) URL with a host (no whitespace, no control "
            "characters, no '.' or '..' path segments)"
        )
    for entry in allowed:
        rule = _parse(entry)
        if rule is None or (rule.scheme, rule.host, rule.port) != (
            target.scheme,
            target.host,
            target.port,
        ):
            continue
        prefix = rule.path.rstrip("/")
        if not prefix or target.path == prefix or target.path.startswith(prefix + "/"):
            return None
    return "not on the allowlist"


def url_allowed(url: str, allowed: Iterable[str]) -> bool:
    return url_problem(url, allowed) is None


def is_broad_url(entry: str) -> bool:
    """An allowlist entry that allows a whole host (no path), or that does not parse."""
    rule = _parse(entry)
    return rule is None or rule.path.rstrip("/") == ""


def command_allowed(executable: str, allowed: Iterable[str]) -> bool:
    return executable in set(allowed)


def is_interpreter(executable: str) -> bool:
    """A shell or interpreter (or a runner of other commands): allowing it allows anything."""
    return executable.rsplit("/", 1)[-1] in INTERPRETERS
