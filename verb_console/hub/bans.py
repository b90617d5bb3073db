"""Bans (PROTOCOL.md section 12.3): by address, network or user, with an expiry.

:class:`BanList` answers the two questions asked on every accept and every
authentication (is this address banned? this user?) with a set lookup while
only single addresses are banned, and a walk of the banned networks only when
some are. A ban that has ended is dropped the first time it is looked at.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .auth import valid_user_name

__all__ = [
    "Ban",
    "BanChange",
    "BanError",
    "BanList",
    "format_duration",
    "parse_duration",
    "parse_target",
]

_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
USER_PREFIX = "user:"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BanError(ValueError):
    """A target, network or duration that does not parse (one line, saying which)."""


def parse_duration(text: str) -> int:
    """``30s``, ``10m``, ``2h``, ``7d`` -> seconds."""
    m = _DURATION.fullmatch(text)
    if m is None:
        raise BanError(f"bad duration {text!r}: expected a number and s, m, h or d (30s, 2h, 7d)")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def format_duration(seconds: float | None) -> str:
    """The largest whole unit: 90 -> ``90s``, 7200 -> ``2h``; None -> ``until unbanned``."""
    if seconds is None:
        return "until unbanned"
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def parse_target(text: str) -> str:
    """The canonical form of a ban target: an address as written (normalised), a
    network in CIDR form, or ``user:NAME``. Raises :class:`BanError`."""
    if text.startswith(USER_PREFIX):
        name = text[len(USER_PREFIX) :]
        if not valid_user_name(name):
            raise BanError(f"bad user {name!r}: a user name is 1 to 64 characters of A-Za-z0-9_.-")
        return text
    if "/" in text:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise BanError(
                f"bad network {text!r}: expected CIDR (203.0.113.0/24, 2001:db8::/48)"
            ) from None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise BanError(
            f"bad target {text!r}: expected an address, a network (CIDR) or user:NAME"
        ) from None


@dataclass(frozen=True, slots=True)
class Ban:
    """One ban: its canonical target, who made it, when (Unix s), and when it ends (None: never)."""

    target: str
    by: str
    created: float
    expires: float | None

    def live(self, now: float) -> bool:
        return self.expires is None or now < self.expires

    def to_wire(self) -> dict[str, Any]:
        expires = None if self.expires is None else int(self.expires)
        return {
            "target": self.target,
            "by": self.by,
            "created": int(self.created),
            "expires": expires,
        }

    @classmethod
    def from_wire(cls, data: Any) -> Ban:
        """A ban from its wire form; raises BanError (or KeyError/TypeError) if malformed."""
        if not isinstance(data, dict):
            raise BanError("a ban must be an object")
        expires = data["expires"]
        if expires is not None and (
            isinstance(expires, bool) or not isinstance(expires, (int, float))
        ):
            raise BanError("expires must be a number or null")
        created = data["created"]
        if isinstance(created, bool) or not isinstance(created, (int, float)):
            raise BanError("created must be a number")
        by = data["by"]
        if not isinstance(by, str):
            raise BanError("by must be a string")
        return cls(parse_target(str(data["target"])), by, float(created), expires)


@dataclass(frozen=True, slots=True)
class BanChange:
    """A ban made or lifted on this node (``kind`` "ban" or "unban") at ``at``
    (Unix s), kept until the cluster has it: a change made while the node's
    Redis link is down is given to the cluster when the link is back."""

    kind: str
    ban: Ban
    at: float

    def to_wire(self) -> dict[str, Any]:
        return {"o": self.kind, "b": self.ban.to_wire(), "at": self.at}

    @classmethod
    def from_wire(cls, data: Any) -> BanChange:
        """A change from its wire form; raises BanError (or KeyError/TypeError) if malformed."""
        if not isinstance(data, dict) or data.get("o") not in ("ban", "unban"):
            raise BanError("a change is an object with o: ban or unban")
        at = data["at"]
        if isinstance(at, bool) or not isinstance(at, (int, float)):
            raise BanError("at must be a number")
        return cls(data["o"], Ban.from_wire(data["b"]), float(at))


class BanList:
    """The live bans, by kind, with fast answers for accept and authentication."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.bans: dict[str, Ban] = {}
        self._addresses: set[str] = set()
        self._networks: dict[str, Network] = {}
        self._users: set[str] = set()
        # Bumped on every change, so a reader can tell when to save or re-read.
        self.version = 0

    def __len__(self) -> int:
        return len(self.bans)

    def add(self, ban: Ban) -> None:
        """Add or replace the ban of ``ban.target``."""
        self.remove(ban.target)
        target = ban.target
        self.bans[target] = ban
        if target.startswith(USER_PREFIX):
            self._users.add(target[len(USER_PREFIX) :])
        elif "/" in target:
            self._networks[target] = ipaddress.ip_network(target)
        else:
            self._addresses.add(target)
        self.version += 1

    def remove(self, target: str) -> Ban | None:
        ban = self.bans.pop(target, None)
        if ban is None:
            return None
        self._addresses.discard(target)
        self._networks.pop(target, None)
        if target.startswith(USER_PREFIX):
            self._users.discard(target[len(USER_PREFIX) :])
        self.version += 1
        return ban

    def replace(self, bans: Iterable[Ban]) -> None:
        """Hold exactly ``bans`` (a cluster's list, read whole)."""
        for target in list(self.bans):
            self.remove(target)
        for ban in bans:
            self.add(ban)

    def _still(self, target: str) -> bool:
        ban = self.bans.get(target)
        if ban is None:
            return False
        if ban.live(self._clock()):
            return True
        self.remove(target)
        return False

    def address_banned(self, ip: str) -> str | None:
        """The ban that covers ``ip`` (its target), or None."""
        if not self.bans:
            return None
        if ip in self._addresses and self._still(ip):
            return ip
        if self._networks:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return None
            for target, net in list(self._networks.items()):
                if addr.version == net.version and addr in net and self._still(target):
                    return target
        return None

    def user_banned(self, user: str) -> bool:
        return bool(self._users) and user in self._users and self._still(USER_PREFIX + user)

    def live(self) -> list[Ban]:
        """The bans that have not ended, oldest first."""
        now = self._clock()
        for target in [t for t, b in self.bans.items() if not b.live(now)]:
            self.remove(target)
        return sorted(self.bans.values(), key=lambda b: (b.created, b.target))

    def matcher(self, ban: Ban) -> Callable[[str, str | None], bool]:
        """Whether a session (address, user) falls under ``ban``."""
        target = ban.target
        if target.startswith(USER_PREFIX):
            name = target[len(USER_PREFIX) :]
            return lambda _ip, user: user == name
        if "/" in target:
            net = ipaddress.ip_network(target)

            def in_network(ip: str, _user: str | None) -> bool:
                try:
                    addr = ipaddress.ip_address(ip)
                except ValueError:
                    return False
                return addr.version == net.version and addr in net

            return in_network
        return lambda ip, _user: ip == target
