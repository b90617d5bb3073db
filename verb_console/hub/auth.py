"""Authentication (PROTOCOL.md section 8): the auth file of hashed tokens, and the
per-address count of wrong tokens that refuses brute force at accept."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .throttle import throttle_key

__all__ = [
    "AUTH_FAILURE_REASONS",
    "MAX_FAILURES",
    "AuthFailures",
    "AuthFile",
    "AuthFileError",
    "valid_user_name",
]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HEX = re.compile(r"[0-9a-f]{64}")
MAX_TOKEN_BYTES = 256
# Wrong tokens from one address (IPv6: per /64) within one window before it is refused.
MAX_FAILURES = 5
MAX_ENTRIES = 100_000
# Why an authentication failed: no token first, a wrong token, none in time.
AUTH_FAILURE_REASONS = ("auth_required", "auth_failed", "auth_timeout")


def valid_user_name(name: str) -> bool:
    """1 to 64 characters of ``A-Za-z0-9_.-``."""
    return _NAME.fullmatch(name) is not None


class AuthFileError(ValueError):
    """The auth file cannot be read or has a malformed line (the message names both)."""


class AuthFile:
    """The users and the SHA-256 of their tokens; a user may have several (rotation).

    Only hashes are kept. :meth:`check` hashes the token offered and compares it
    with every stored hash in constant time, whether or not one matched before.
    """

    __slots__ = ("entries", "path")

    def __init__(self, entries: list[tuple[str, bytes]], path: str = "") -> None:
        self.entries = entries
        self.path = path

    @classmethod
    def load(cls, path: str) -> AuthFile:
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except OSError as exc:
            raise AuthFileError(f"auth file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise AuthFileError(f"auth file {path}: not UTF-8 text") from None
        entries: list[tuple[str, bytes]] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, digest = line.partition(":")
            if not sep:
                why = "expected NAME:SHA256HEX"
            elif not valid_user_name(name):
                why = "the name must be 1 to 64 characters of A-Za-z0-9_.-"
            elif _HEX.fullmatch(digest) is None:
                why = "the hash must be 64 lowercase hex digits (SHA-256)"
            else:
                entries.append((name, bytes.fromhex(digest)))
                continue
            raise AuthFileError(f"auth file {path} line {number}: {why}")
        return cls(entries, path)

    def check(self, token: bytes) -> str | None:
        """The user whose token this is, or None."""
        if not token or len(token) > MAX_TOKEN_BYTES or token.split() != [token]:
            return None
        digest = hashlib.sha256(token).digest()
        found: str | None = None
        for name, stored in self.entries:
            if hmac.compare_digest(digest, stored) and found is None:
                found = name
        return found

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(slots=True)
class _Failures:
    first: float  # window start (monotonic)
    count: int


class AuthFailures:
    """Wrong tokens per address: after ``limit`` within a window that starts at the
    address's first failure, the address is refused until that window ends."""

    def __init__(
        self,
        window_s: float = 60.0,
        limit: int = MAX_FAILURES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.limit = limit
        self._clock = clock
        self._entries: dict[str, _Failures] = {}
        self.refused = 0
        #: Failed authentications since start, by one of :data:`AUTH_FAILURE_REASONS`.
        self.counts = dict.fromkeys(AUTH_FAILURE_REASONS, 0)

    def record(self, ip: str) -> None:
        """One wrong token from ``ip``."""
        key = throttle_key(ip)
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None or now - entry.first >= self.window_s:
            if entry is None and len(self._entries) >= MAX_ENTRIES:
                self.sweep()
            self._entries[key] = _Failures(now, 1)
        else:
            entry.count += 1

    def blocked(self, ip: str) -> bool:
        """Whether a new connection from ``ip`` is refused now."""
        if not self._entries:
            return False
        entry = self._entries.get(throttle_key(ip))
        if entry is None or entry.count < self.limit:
            return False
        if self._clock() - entry.first >= self.window_s:
            return False
        self.refused += 1
        return True

    def failures(self, ip: str) -> int:
        entry = self._entries.get(throttle_key(ip))
        return entry.count if entry is not None else 0

    def sweep(self) -> None:
        """Forget windows that have ended."""
        now = self._clock()
        window = self.window_s
        for key in [k for k, e in self._entries.items() if now - e.first >= window]:
            del self._entries[key]
