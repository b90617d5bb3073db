"""``ctl reload`` and SIGHUP: re-read the auth file, the policy and the certificate.

Each thing reloaded is a :class:`ReloadHook`: a ``read`` that opens, parses and
checks its file, and an ``apply`` that puts the result in force. Reading is
the slow part (a large policy parses in tens of milliseconds, longer than a
turn of the event loop may take), so :meth:`Reloading.reload_async` runs every
read in a worker thread, then applies the results on the loop: each apply is
an assignment, and the pass over the live sessions that follows (PROTOCOL.md
12.2) runs in bounded slices (:class:`~.hub.revocation.Revocation`). A file
that fails to read is refused with its one-line error and what was loaded
before stays in force; the others are still applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .hub.revocation import Revocation
from .security import SecurityError, load_auth, load_policy, load_tls
from .units import plural

__all__ = ["ReloadHook", "Reloading"]

log = logging.getLogger("verb_console")


@dataclass(frozen=True, slots=True)
class ReloadHook:
    """One thing a reload re-reads: ``read()`` may block (it runs in a thread) and
    raises with a one-line reason; ``apply(value)`` runs on the loop and is short."""

    name: str
    read: Callable[[], Any]
    apply: Callable[[Any], None]


def _nothing() -> None:
    return None


class Reloading:
    """The reload hooks of one server, and the last reload's pass over its sessions."""

    def __init__(self, runtime: Any) -> None:
        # The Runtime (untyped: it imports this module).
        self.runtime = runtime
        #: Run by every reload, in order; one that fails is reported, the others still run.
        self.hooks: list[ReloadHook] = []
        #: The last reload's pass over the live sessions (section 12.2), if any.
        self.revocation: Revocation | None = None
        # The users with a token, as the last auth file read said.
        self._users: frozenset[str] | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[list[str]]] = set()

    def install(self) -> None:
        """The hooks the settings call for (called once, at start)."""
        s = self.runtime.settings
        if s.auth_file:
            self.hooks.append(ReloadHook("auth file", self._read_auth, self._apply_auth))
        if s.policy:
            self.hooks.append(ReloadHook("policy", self._read_policy, self._apply_policy))
        if s.tls_cert:
            self.hooks.append(ReloadHook("certificate", self._read_tls, self._apply_tls))
        if s.auth_file or s.policy:
            # Last: what the files now say, applied to the sessions already in.
            self.hooks.append(ReloadHook("sessions", _nothing, self._revoke))

    # ----------------------------------------------------------- reloading
    def reload(self, why: str = "reload") -> list[str]:
        """Reload now, reading the files in this thread (it blocks: for embedding
        and tests; the server's own reloads use :meth:`reload_async`)."""
        hooks = list(self.hooks)
        return self._apply(why, hooks, [self._read(hook) for hook in hooks])

    async def reload_async(self, why: str = "reload") -> list[str]:
        """Reload with every file read off the loop; returns the errors (logged
        too). Reloads asked while one runs wait for it, then run in turn."""
        async with self._lock:
            hooks = list(self.hooks)
            read = await asyncio.to_thread(lambda: [self._read(hook) for hook in hooks])
            return self._apply(why, hooks, read)

    def reload_soon(self, why: str) -> None:
        """Start :meth:`reload_async` (a signal handler cannot wait for it)."""
        task = asyncio.get_running_loop().create_task(self.reload_async(why))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _read(hook: ReloadHook) -> tuple[Any, str | None]:
        try:
            return hook.read(), None
        except Exception as exc:
            return None, str(exc)

    def _apply(
        self, why: str, hooks: list[ReloadHook], read: list[tuple[Any, str | None]]
    ) -> list[str]:
        errors: list[str] = []
        for hook, (value, error) in zip(hooks, read, strict=True):
            if error is None:
                try:
                    hook.apply(value)
                except Exception as exc:
                    error = str(exc)
            if error is not None:
                errors.append(f"{hook.name}: {error}")
                log.error("reload: %s failed: %s", hook.name, error)
        outcome = f"{len(errors)} failed" if errors else "done"
        self.runtime.hub.event("server", f"{why}: reload {outcome}")
        return errors

    # ----------------------------------------------------------- the hooks
    def _read_auth(self) -> Any:
        try:
            auth = load_auth(self.runtime.settings)
        except SecurityError as exc:
            raise SecurityError(f"kept the previous auth file: {exc}") from None
        # The users with a token, for the pass: counted here, not on the loop.
        users = frozenset(name for name, _ in auth.entries) if auth is not None else None
        return auth, users

    def _apply_auth(self, value: Any) -> None:
        auth, users = value
        hub = self.runtime.hub
        hub.auth = auth
        self._users = users
        path = self.runtime.settings.auth_file
        hub.event("server", f"reload: auth file {path}: {plural(len(auth or ()), 'token')}")

    def _read_policy(self) -> Any:
        try:
            return load_policy(self.runtime.settings)
        except SecurityError as exc:
            raise SecurityError(f"kept the previous policy: {exc}") from None

    def _apply_policy(self, policy: Any) -> None:
        hub = self.runtime.hub
        hub.permissions.policy = policy
        users = len(policy.users) if policy is not None else 0
        named = plural(users, "user")
        hub.event("server", f"reload: policy {self.runtime.settings.policy}: {named} named")

    def _read_tls(self) -> Any:
        try:
            return load_tls(self.runtime.settings)
        except SecurityError as exc:
            raise SecurityError(f"kept the previous certificate: {exc}") from None

    def _apply_tls(self, context: Any) -> None:
        server = self.runtime.server
        if server is None or server.tls is None or context is None:
            return
        server.tls.context = context
        self.runtime.hub.event("server", f"reload: certificate {self.runtime.settings.tls_cert}")

    def _revoke(self, _: Any) -> None:
        """Apply the auth file and policy now in force to the live sessions, in
        slices across turns of the loop (PROTOCOL.md 12.2)."""
        hub = self.runtime.hub
        users = None
        if hub.auth is not None:
            users = self._users
            if users is None:
                users = frozenset(name for name, _ in hub.auth.entries)
        self.revocation = Revocation(hub, users, hub.permissions.policy, on_done=self._revoked)
        self.revocation.start()

    def _revoked(self, done: Revocation) -> None:
        hub = self.runtime.hub
        if done.revoked_sessions:
            names = ", ".join(sorted(done.revoked_users))
            hub.event(
                "operator",
                f"reload: revoked {plural(done.revoked_sessions, 'session')} of {names}"
                " (no token left)",
            )
        if done.rooms_left:
            left = done.rooms_left
            memberships = plural(left, "room membership")
            hub.event("operator", f"reload: {memberships} revoked by the policy")
