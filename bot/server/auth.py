"""Inbound credentials: bearer tokens and basic auth, compared in constant time."""

from __future__ import annotations

import base64
import hmac

from aiohttp import web
from pydantic import SecretStr

from bot.errors import AuthError
from bot.settings import BasicAuth


def _same(given: str, expected: str) -> bool:
    """Constant-time equality. A header's bytes that are not UTF-8 arrive as lone
    surrogates (aiohttp decodes with ``surrogateescape``): they are encoded back to the
    bytes sent, which never equal a configured secret, rather than raising."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def check_credentials(
    request: web.Request, *, token: SecretStr | None, basic: BasicAuth | None = None
) -> None:
    """Accept a matching bearer token or basic-auth pair; nothing configured means open.

    Alertmanager's ``http_config`` sends ``Authorization: Bearer …`` (``authorization``
    or ``bearer_token``) or ``Authorization: Basic …`` (``basic_auth``).
    """
    if token is None and basic is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if token is not None and scheme.lower() == "bearer":
        if _same(value, token.get_secret_value()):
            return
        raise AuthError("wrong bearer token")
    if basic is not None and scheme.lower() == "basic":
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except ValueError:  # binascii.Error, UnicodeDecodeError, or a non-ASCII header
            raise AuthError("malformed basic auth header") from None
        ok_user = _same(user, basic.username)
        ok_password = _same(password, basic.password.get_secret_value())
        if sep and ok_user and ok_password:
            return
        raise AuthError("wrong basic auth credentials")
    raise AuthError("missing credentials")
