"""Shared by the policy, revocation and ban tests: users, files and a server."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient

from verb_console.runtime import Runtime

TOKENS = {"alice": "tok-alice", "bob": "tok-bob", "carol": "tok-carol"}

POLICY = """
[default]
join = ["lobby", "public-*"]
publish = ["lobby"]

[users.alice]
join = ["lobby", "team-*"]
publish = ["team-*"]
broadcast = false
max_sessions = 2

[users.bob]
private = false
rate = 5
"""


def write_auth(path: Path, tokens: dict[str, str]) -> None:
    path.write_text(
        "".join(f"{n}:{hashlib.sha256(t.encode()).hexdigest()}\n" for n, t in tokens.items())
    )


def policy_fixtures() -> tuple[Any, Any]:
    """A module's ``files`` (auth file, policy file) and ``serve`` fixtures."""

    @pytest.fixture(name="files")
    def files(tmp_path: Path) -> tuple[Path, Path]:
        auth = tmp_path / "tokens"
        write_auth(auth, TOKENS)
        policy = tmp_path / "policy.toml"
        policy.write_text(POLICY)
        return auth, policy

    @pytest.fixture(name="serve")
    async def serve(start_server: Any, tmp_path: Path, files: tuple[Path, Path]) -> Any:
        async def start(**overrides: Any) -> Runtime:
            overrides.setdefault("upload_dir", str(tmp_path / "uploads"))
            overrides.setdefault("max_per_ip", 0)
            overrides.setdefault("auth_file", str(files[0]))
            overrides.setdefault("policy", str(files[1]))
            return await start_server(**overrides)

        return start

    return files, serve


async def login(rt: Runtime, user: str) -> JsonClient:
    client = await JsonClient.connect(rt.port)
    reply = await client.request({"type": "auth", "token": TOKENS[user]})
    assert reply == {"type": "authenticated", "user": user}, reply
    return client
