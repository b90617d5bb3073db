"""Loading the auth file and the TLS certificate from the settings, and
``verb-console token NAME``."""

from __future__ import annotations

import hashlib
import secrets
import ssl
import sys
from collections.abc import Sequence

from .hub.auth import AuthFile, AuthFileError, valid_user_name
from .net.tls import make_server_context
from .settings import Settings

__all__ = ["SecurityError", "load_auth", "load_tls", "token_command"]


class SecurityError(Exception):
    """The auth file or the certificate cannot be used; the message is one line."""


def load_auth(settings: Settings) -> AuthFile | None:
    """The auth file named by ``--auth-file`` (None when authentication is off)."""
    if not settings.auth_file:
        return None
    try:
        return AuthFile.load(settings.auth_file)
    except AuthFileError as exc:
        raise SecurityError(str(exc)) from None


def load_tls(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context from ``--tls-cert``/``--tls-key``/``--tls-client-ca``."""
    if not settings.tls_cert:
        return None
    try:
        return make_server_context(
            settings.tls_cert, settings.tls_key, settings.tls_client_ca or None
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        files = f"{settings.tls_cert}, {settings.tls_key}"
        if settings.tls_client_ca:
            files += f", {settings.tls_client_ca}"
        raise SecurityError(f"TLS certificate ({files}): {why}") from None


def new_token() -> str:
    """A random token of 192 bits, URL-safe text with no whitespace."""
    return secrets.token_urlsafe(24)


TOKEN_HELP = """\
usage: verb-console token NAME

Print a new random token (192 bits) on the first line, and on the second the
line NAME:SHA256HEX to add to the auth file (--auth-file). Give the token to
the user NAME; the server keeps only its hash.

NAME is 1 to 64 characters of A-Za-z0-9_.-"""


def token_command(args: Sequence[str]) -> int:
    """``verb-console token NAME``: a new token, then the line to add to the auth file."""
    if list(args[:1]) in (["-h"], ["--help"]):
        print(TOKEN_HELP)
        return 0
    if len(args) != 1 or not valid_user_name(args[0]):
        print(
            "verb-console: error: usage: verb-console token NAME "
            "(NAME: 1 to 64 characters of A-Za-z0-9_.-)",
            file=sys.stderr,
        )
        return 2
    token = new_token()
    digest = hashlib.sha256(token.encode()).hexdigest()
    print(token)
    print(f"{args[0]}:{digest}")
    return 0
