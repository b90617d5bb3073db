"""The policy file (PROTOCOL.md section 12.1): what each user may do.

Read with the standard library's ``tomllib``, checked whole (an unknown key, a
value of the wrong type or a negative number is an error naming the file and
the key), and compiled once: each user's ``join`` and ``publish`` patterns
become one regular expression, so a policy of a thousand patterns costs one
match per (session, room) the first time, and the caller caches the answer.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .auth import valid_user_name

__all__ = ["Policy", "PolicyError", "Rules", "compile_patterns"]

RULE_KEYS = ("join", "publish", "broadcast", "private", "max_sessions", "rate")


class PolicyError(ValueError):
    """The policy file cannot be used; the message is one line naming the file and key."""


def _always(_room: str) -> bool:
    return True


def _never(_room: str) -> bool:
    return False


_MAGIC = frozenset("*?[")


def compile_patterns(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """One matcher for a list of fnmatch patterns (``*``, ``?``, ``[..]``; case matters).

    Most patterns are a room name or a prefix and a ``*``: those are a set
    lookup and one ``startswith``, which cost nothing to build. Only the rest
    become one regular expression, built the first time it is needed, so a
    policy of many users loads (and reloads) in a moment.
    """
    if not patterns:
        return _never
    if "*" in patterns:
        return _always
    names: set[str] = set()
    prefixes: list[str] = []
    others: list[str] = []
    for p in patterns:
        if not _MAGIC.intersection(p):
            names.add(p)
        elif p.endswith("*") and not _MAGIC.intersection(p[:-1]):
            prefixes.append(p[:-1])
        else:
            others.append(p)
    literal = frozenset(names)
    starts = tuple(prefixes)
    regex: list[re.Pattern[str]] = []

    def matches(room: str) -> bool:
        if room in literal or (starts and room.startswith(starts)):
            return True
        if not others:
            return False
        if not regex:
            regex.append(re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in others)))
        return regex[0].match(room) is not None

    return matches


@dataclass(frozen=True, slots=True)
class Rules:
    """One user's rights, with its patterns compiled."""

    join: tuple[str, ...] = ("*",)
    publish: tuple[str, ...] = ("*",)
    broadcast: bool = True
    private: bool = True
    max_sessions: int = 0  # 0: no limit
    rate: float = 0.0  # messages per second; 0: no limit
    may_join: Callable[[str], bool] = _always
    may_publish: Callable[[str], bool] = _always

    @property
    def join_all(self) -> bool:
        return self.may_join is _always

    @property
    def publish_all(self) -> bool:
        return self.may_publish is _always

    @property
    def unrestricted(self) -> bool:
        """Whether nothing a session of this user sends is ever refused."""
        return (
            self.join_all
            and self.publish_all
            and self.broadcast
            and self.private
            and self.rate == 0
        )


EVERYTHING = Rules()


def _where(path: str, key: str) -> str:
    return f"policy file {path}: {key}"


def _rules(path: str, where: str, table: Any, base: Mapping[str, Any]) -> dict[str, Any]:
    """The values of one ``[default]`` or ``[users.NAME]`` table over ``base``, checked."""
    if not isinstance(table, dict):
        raise PolicyError(f"{_where(path, where)}: must be a table")
    values = dict(base)
    for key, value in table.items():
        name = f"{where}.{key}"
        if key not in RULE_KEYS:
            known = ", ".join(RULE_KEYS)
            raise PolicyError(f"{_where(path, name)}: unknown key (known: {known})")
        if key in ("join", "publish"):
            if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
                raise PolicyError(
                    f"{_where(path, name)}: must be a list of non-empty strings, got {value!r}"
                )
            values[key] = tuple(value)
        elif key in ("broadcast", "private"):
            if not isinstance(value, bool):
                raise PolicyError(f"{_where(path, name)}: must be true or false, got {value!r}")
            values[key] = value
        elif key == "max_sessions":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PolicyError(
                    f"{_where(path, name)}: must be a whole number >= 0, got {value!r}"
                )
            values[key] = value
        else:  # rate
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise PolicyError(f"{_where(path, name)}: must be a number >= 0, got {value!r}")
            if value == float("inf"):
                raise PolicyError(f"{_where(path, name)}: must be finite, got {value!r}")
            values[key] = float(value)
    return values


class _Compiler:
    """Compiles each distinct pattern list once, however many users share it."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, ...], Callable[[str], bool]] = {}

    def __call__(self, patterns: tuple[str, ...]) -> Callable[[str], bool]:
        found = self._done.get(patterns)
        if found is None:
            found = self._done[patterns] = compile_patterns(patterns)
        return found

    def rules(self, values: Mapping[str, Any]) -> Rules:
        return Rules(
            join=values["join"],
            publish=values["publish"],
            broadcast=values["broadcast"],
            private=values["private"],
            max_sessions=values["max_sessions"],
            rate=values["rate"],
            may_join=self(values["join"]),
            may_publish=self(values["publish"]),
        )


class Policy:
    """The rules of every user named, and the default for the rest."""

    __slots__ = ("default", "path", "users")

    def __init__(
        self, default: Rules = EVERYTHING, users: Mapping[str, Rules] | None = None, path: str = ""
    ) -> None:
        self.default = default
        self.users = dict(users or {})
        self.path = path

    def rules(self, user: str) -> Rules:
        """What ``user`` may do."""
        return self.users.get(user, self.default)

    @classmethod
    def parse(cls, text: str, path: str = "<policy>") -> Policy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"policy file {path}: not valid TOML: {exc}") from None
        for key in data:
            if key not in ("default", "users"):
                raise PolicyError(f"{_where(path, key)}: unknown key (known: default, users)")
        base = {f: getattr(EVERYTHING, f) for f in RULE_KEYS}
        default_values = _rules(path, "default", data.get("default", {}), base)
        compiler = _Compiler()
        users_table = data.get("users", {})
        if not isinstance(users_table, dict):
            raise PolicyError(f"{_where(path, 'users')}: must be a table of [users.NAME] tables")
        users: dict[str, Rules] = {}
        for name, table in users_table.items():
            if not valid_user_name(name):
                raise PolicyError(
                    f"{_where(path, 'users.' + name)}: a user name is 1 to 64 characters"
                    " of A-Za-z0-9_.-"
                )
            users[name] = compiler.rules(_rules(path, f"users.{name}", table, default_values))
        return cls(compiler.rules(default_values), users, path)

    @classmethod
    def load(cls, path: str) -> Policy:
        """Read and check ``path``; raises :class:`PolicyError` in one line."""
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise PolicyError(f"policy file {path}: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError(f"policy file {path}: not UTF-8 text") from None
        return cls.parse(text, path)
