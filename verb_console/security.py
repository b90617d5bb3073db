"""Loading the auth file and the TLS certificate from the settings, and
``verb-console token NAME``."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import ssl
import sys
from collections.abc import Callable, Sequence

from .hub.auth import AuthFile, AuthFileError, valid_user_name
from .hub.policy import Policy, PolicyError
from .net.tls import make_server_context
from .settings import Settings

__all__ = [
    "SecurityError",
    "load_auth",
    "load_policy",
    "load_proxy_trust",
    "load_tls",
    "token_command",
]


#: Peers whose answer the trusted-proxy check keeps (cleared whole when full).
TRUST_CACHE = 4096


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


def load_policy(settings: Settings) -> Policy | None:
    """The policy file named by ``--policy`` (None: every user may do everything)."""
    if not settings.policy:
        return None
    try:
        return Policy.load(settings.policy)
    except PolicyError as exc:
        raise SecurityError(str(exc)) from None


def load_proxy_trust(settings: Settings) -> Callable[[str], bool] | None:
    """Whether a peer is one of the load balancers of ``--proxy-protocol``
    (PROTOCOL.md 12.4); None when none is named."""
    text = settings.proxy_protocol.strip()
    if not text:
        return None
    networks = []
    for part in text.split(","):
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise SecurityError(
                f"--proxy-protocol: {part.strip()!r} is not an address or network (CIDR)"
            ) from None

    # Asked at every accept, and the balancers are few: each peer's answer is
    # kept (parsing the address cost more than the rest of reading its header).
    known: dict[str, bool] = {}

    def trusted(ip: str) -> bool:
        answer = known.get(ip)
        if answer is None:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                answer = False
            else:
                answer = any(address in net for net in networks)
            if len(known) >= TRUST_CACHE:
                known.clear()
            known[ip] = answer
        return answer

    return trusted


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
