"""Which URLs and executables playbook steps may reach.

A URL is allowed when an entry of the allowlist has the same scheme, host and port and
its path is a prefix of the URL's path on a segment boundary: ``https://flags.internal/api``
allows ``https://flags.internal/api`` and ``https://flags.internal/api/flags/x`` but not
``https://flags.internal/apix`` or ``https://flags.internal/api/../admin``. Query strings
and fragments are not compared. An entry with no path (``https://flags.internal``) allows
the whole host, which ``alertpilot check`` reports as a broad allowlist.

No URL is allowed whose host a browser could read as another host (a backslash before
the path: browsers end the host there, Python's parser does not), nor one whose path a
server could read as another path (``path_problem``): a backslash, a dot-segment (``.``,
``..``), or one hidden behind percent-encoding, however many times (``%2e%2e``,
``%252e%252e``) or behind path parameters (``..;/admin``, which Tomcat reads as ``..``).
A URL rendered from a template must also keep the template's shape (``shape_problem``):
as many path segments, and a query string or fragment only where the template has one.

An executable is allowed when ``argv[0]`` equals an entry exactly (``/usr/bin/systemctl``
allows only that path; ``kubectl`` allows only the bare name, looked up on ``PATH``).
"""

from __future__ import annotations

import re
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
    if "\\" in parts.netloc:  # a browser ends the host there: http://evil\@allowed/
        return None
    if path_problem(parts.path) is not None:
        return None
    path = unquote(parts.path) or "/"
    default = 443 if scheme == "https" else 80
    return _Url(scheme, parts.hostname.lower(), port or default, path)


# RFC 3986: what a URL carries unencoded, and a percent sign only as the start of an escape
_URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def characters_problem(url: str) -> str | None:
    """None when ``url`` holds only what a URL carries unencoded, so it can be sent
    exactly as it is (checked in the form the server receives), else why not."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "holds whitespace or control characters"
    if not _URI_CHARACTERS.fullmatch(url) or _STRAY_PERCENT.search(url):
        return (
            "holds characters a URL carries only percent-encoded (a backslash, a stray "
            "'%', non-ASCII...): print values through path_segment or urlencode"
        )
    return None


_DECODE_ROUNDS = 8  # a server may decode more than once; more rounds than that are refused


def path_problem(path: str) -> str | None:
    """None when no server could read ``path`` (a URL's path, as sent) as another path,
    else why.

    Each segment is percent-decoded until nothing changes (``%252e`` -> ``%2e`` -> ``.``),
    then split at each ``/`` it hid and stripped of path parameters (``;...``): no piece
    may be ``.`` or ``..``, and no backslash may appear, encoded or not (some servers read
    it as ``/``).
    """
    if "\\" in path:
        return "a backslash in the path (some servers read it as '/')"
    for segment in path.split("/"):
        decoded = segment
        for _ in range(_DECODE_ROUNDS):
            once = unquote(decoded)
            if once == decoded:
                break
            decoded = once
        else:
            return f"path segment {segment[:80]!r} is percent-encoded over and over"
        if "\\" in decoded:
            return f"path segment {segment[:80]!r} decodes to a backslash (read as '/' by some)"
        pieces = decoded.split("/")
        if any(piece.split(";", 1)[0] in (".", "..") for piece in pieces):
            return f"path segment {segment[:80]!r} is or decodes to a dot-segment ('.' or '..')"
    return None


@dataclass(frozen=True)
class Shape:
    """What a URL's form says about where it goes, beyond scheme, host and path."""

    segments: int  # path segments, as sent (an encoded '/' does not split one)
    query: bool
    fragment: bool

    @classmethod
    def of(cls, url: str) -> Shape:
        before_fragment = url.split("#", 1)[0]
        return cls(len(urlsplit(url).path.split("/")), "?" in before_fragment, "#" in url)


def shape_problem(url: str, intended: str) -> str | None:
    """None when ``url`` has the shape of ``intended`` (the same template rendered with
    every printed value one plain word, ``templating.render_skeleton``), else what a
    value changed."""
    got, want = Shape.of(url), Shape.of(intended)
    if got.segments != want.segments:
        return (
            f"its path has {got.segments - 1} segment(s) where the template makes "
            f"{want.segments - 1}: a value added or removed a '/'"
        )
    if got.query and not want.query:
        return "a value added a query string ('?') the template does not have"
    if got.fragment and not want.fragment:
        return "a value added a fragment ('#') the template does not have"
    return None


def url_problem(url: str, allowed: Iterable[str]) -> str | None:
    """None when ``url`` is on the allowlist, else why not (for error messages)."""
    target = _parse(url)
    if target is None:
        try:
            path = urlsplit(url).path
        except ValueError:
            path = ""
        problem = path_problem(path)
        if problem is not None:
            return f"not allowed: {problem}"
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
