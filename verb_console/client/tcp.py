"""The json client over TCP, with connection recovery.

::

    async with JsonClient("127.0.0.1", 8080) as client:
        await client.join_room("lobby")
        await client.room_message("lobby", {"text": "hello"})
        async for message in client.messages():
            print(message)

It runs on anyio, so on asyncio and on trio alike. The client speaks first: its
first bytes are a ``ping``, so an ``auto`` listener (which waits for the client)
and a pinned ``json`` listener (which greets at once) both work.

Connection recovery follows the seed's ``TCPConnectionRecovery``: when the
connection is lost unexpectedly the client reconnects as its :class:`Backoff`
says (``base_delay * 2 ** attempt``, 1 s, 2 s, 4 s... with jitter, 5 attempts by
default). It first resumes its session (PROTOCOL.md 11.1: its token and last
``seq``; the server replays what it missed); when that fails it is a new
session, and it rejoins its rooms asking for what it missed since its last
message in each (11.2). :attr:`JsonClient.last_recovery` and ``on_recovery``
say what came back (a :class:`~.recovery.Recovery`). What the application
sends meanwhile is held (up to ``send_buffer`` bytes) and sent once back.

A deliberate close does not reconnect: the client's own
:meth:`JsonClient.close`, or the server's ``closing`` with reason
``operator``, ``shutdown`` or ``protocol_error``, or any loss after the server
announced ``server_shutdown``, unless that said ``"reconnect": true`` (a
restart: come back with a randomised backoff). An ``idle_timeout`` close, a
reset or an EOF without ``closing`` (a crash, a slow-consumer cut) do reconnect.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from ..protocols.json import DEFAULT_MAX_FRAME
from ._io import Background, Outbox, spawn
from .backoff import Backoff
from .core import DEFAULT, DELIBERATE_REASONS, Message, Reply
from .dial import dial
from .errors import ClientClosed, ReconnectFailed, ServerError
from .recovery import Recovery
from .resuming import SEND_BUFFER, Resuming

__all__ = ["JsonClient", "dial"]

log = logging.getLogger("verb_console.client")

READ_SIZE = 256 * 1024


class _Connection:
    """One TCP connection: its stream, its writer, and how it ended."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.outbox = Outbox(stream)
        self.ready = False
        self.lost: BaseException | None = None


class JsonClient(Resuming):
    """A json-protocol client over TCP: requests matched by ``ref``, a message stream, recovery.

    :param host: server address.
    :param port: server port.
    :param reconnect: reconnect after an unexpected loss (see the module docs).
    :param backoff: the reconnection policy; else one is made of ``max_attempts``,
        ``base_delay``, ``max_delay``, ``jitter`` and ``rng`` (see :class:`Backoff`).
    :param connect_timeout: seconds for the TCP connect, and again for the ``welcome``.
    :param local_host: the local address to connect from (None: the system's choice).
    :param on_disconnect: called with the reason (a ``closing`` reason, or
        ``"connection_lost"``) whenever the connection ends, before any reconnection.
    :param on_reconnect: called with the new ``welcome`` once reconnected and back in the rooms.
    :param on_give_up: called with the :class:`ReconnectFailed` when recovery gives up.
    :param on_recovery: called with the :class:`~.recovery.Recovery` of each reconnection.
    :param send_buffer: bytes of messages held while reconnecting; past them a
        send raises :class:`~.errors.SendBufferFull`.
    :param token: the token to authenticate with, for a server that requires it
        (PROTOCOL.md section 8): the client's first message on every connection,
        so :meth:`connect` returns once authenticated (a wrong token raises
        :class:`ServerError` ``auth_failed``), and a reconnection authenticates
        again before it resumes. A token refused on a reconnection (revoked
        meanwhile) ends the client.

    Callbacks may be plain functions or coroutine functions.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        max_attempts: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
        connect_timeout: float = 5.0,
        local_host: str | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        on_disconnect: Callable[[str], Any] | None = None,
        on_reconnect: Callable[[Message], Any] | None = None,
        on_give_up: Callable[[ReconnectFailed], Any] | None = None,
        on_recovery: Callable[[Recovery], Any] | None = None,
        send_buffer: int = SEND_BUFFER,
        token: str | None = None,
    ) -> None:
        super().__init__(
            max_frame,
            on_disconnect=on_disconnect,
            on_reconnect=on_reconnect,
            on_give_up=on_give_up,
            on_recovery=on_recovery,
            send_buffer=send_buffer,
        )
        if backoff is None:
            backoff = Backoff(max_attempts, base_delay, max_delay, jitter, rng or random.Random())
        self.host = host
        self.port = port
        self.reconnect = reconnect
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.local_host = local_host
        #: Delays (seconds) slept before each reconnection attempt, for inspection.
        self.backoff_history: list[float] = []
        self._conn: _Connection | None = None
        self._runner: Background | None = None
        self._closing = False
        self._done: anyio.Event | None = None
        if token is not None:
            self.auth = {"type": "auth", "token": token}

    # ----------------------------------------------------------- state
    @property
    def max_attempts(self) -> int:
        return self.backoff.max_attempts

    @property
    def base_delay(self) -> float:
        return self.backoff.base_delay

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before reconnection attempt ``attempt`` (0-based), jitter included."""
        return self.backoff.delay(attempt)

    # ----------------------------------------------------------- connecting
    async def connect(self) -> Message:
        """Connect, speak first and wait for the server's ``welcome``, which is returned.

        The first connection is not retried: a refused connect raises ``OSError``
        (``ConnectionRefusedError``), a server that never answers ``TimeoutError``,
        one that refuses or hangs up ``ConnectionError``; each says why.
        """
        if self._runner is not None:
            raise RuntimeError("already connected")
        if self._finished:
            raise ClientClosed("the client is closed")
        if self._done is None:
            self._done = anyio.Event()
        stream = await dial(self.host, self.port, self.connect_timeout, self.local_host)
        started = Reply()
        self._runner = spawn(functools.partial(self._run, _Connection(stream), started))
        try:
            welcome: Message = await started.wait()
        except BaseException:
            self._runner = None
            raise
        return welcome

    async def _run(self, conn: _Connection, started: Reply) -> None:
        """The client's life: serve a connection, then recover or finish."""
        error: ConnectionError | None = None
        try:
            await self._serve(conn, started)
            attempt = 0
            last: BaseException | None = None
            while started.done and not self._closing:
                if conn.ready:
                    attempt, last = 0, None
                    reason = self.disconnect_reason or "connection_lost"
                    if reason in DELIBERATE_REASONS and not self._come_back:
                        log.info("server closed the connection (%s): not reconnecting", reason)
                        break
                    if not self.reconnect:
                        error = ConnectionError(f"connection lost ({reason})")
                        break
                else:  # a reconnection that got no welcome: a failed attempt
                    last = conn.lost
                try:
                    next_conn, attempt, last = await self._reconnect(attempt, last)
                except ReconnectFailed as exc:
                    error = exc
                    self._call(self.on_give_up, exc)
                    break
                if next_conn is None:
                    break
                conn = next_conn
                await self._serve(conn, started)
        finally:
            if not started.done:  # the first connection never got going
                started.fail(conn.lost or ClientClosed("the client was closed while connecting"))
            else:
                self._finish(error)

    async def _serve(self, conn: _Connection, started: Reply) -> None:
        """Run one connection until it ends: the handshake, then reading and writing."""
        self._conn = conn
        resume_seq = self.last_seq
        self._new_connection()
        self.last_seq = 0
        resume = self._resume_message(resume_seq) if started.done else None
        # With authentication on, every connection authenticates first, and a
        # reconnection resumes after (PROTOCOL.md 11.1).
        auth = self.auth
        first = auth if auth is not None else resume
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(conn.outbox.run)
                tg.start_soon(self._read, conn, tg.cancel_scope)
                try:
                    with anyio.fail_after(self.connect_timeout):
                        welcome = await self._handshake(first)
                except TimeoutError:
                    conn.lost = TimeoutError(
                        f"no welcome from the server within {self.connect_timeout:g}s"
                    )
                    tg.cancel_scope.cancel()
                    return
                except (ConnectionError, ServerError) as exc:
                    conn.lost = conn.lost or exc
                    tg.cancel_scope.cancel()
                    return
                refused = self.first_reply if auth is not None else None
                if isinstance(refused, ServerError) and (
                    not started.done or refused.code == "auth_failed"
                ):
                    if not started.done:
                        conn.lost = refused  # connect() raises it: a wrong token
                    else:
                        # Refused on a reconnection (the token revoked meanwhile):
                        # the server closes with closing auth_failed, after which
                        # the client does not come back (DELIBERATE_REASONS).
                        await self._wait(lambda: self.closing_reason is not None, 2.0)
                        self.closing_reason = self.closing_reason or "auth_failed"
                        conn.ready = True
                    tg.cancel_scope.cancel()
                    return
                # Authenticated again: now the resume.
                if auth is not None and resume is not None:
                    try:
                        self.first_reply = await self._request(resume, DEFAULT, self._write_now)
                    except ServerError as exc:
                        self.first_reply = exc
                conn.ready = True
                self.disconnect_reason = None
                if not started.done:
                    self._adopt(welcome)
                    self._set_connected(True)
                    started.set(welcome)
                else:
                    recovery = await self._recover(welcome, resume is not None)
                    if recovery is not None:
                        self.reconnects += 1
                        self.last_recovery = recovery
                        self._set_connected(True)
                        self._send_held(conn)
                        self._call(self.on_reconnect, self.welcome)
                        self._call(self.on_recovery, recovery)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(conn.stream)
            if self._conn is conn:
                self._conn = None
            if conn.ready:
                self._ended(conn)
            else:
                why = self._why(conn)
                if conn.lost is None or not str(conn.lost):
                    conn.lost = ConnectionError(why)
                self._connection_ended(why)

    def _why(self, conn: _Connection) -> str:
        if conn.lost is not None and str(conn.lost):
            return str(conn.lost)
        if self.closing_reason is not None:
            return f"the server closed the connection ({self.closing_reason})"
        return "the server closed the connection before its welcome"

    async def _read(self, conn: _Connection, scope: anyio.CancelScope) -> None:
        """Read until the connection ends; never raises."""
        try:
            while True:
                error = self._feed(await conn.stream.receive(READ_SIZE))
                if error is not None:
                    conn.lost = ConnectionError(f"bad frame from the server: {error}")
                    break
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            pass
        except (OSError, anyio.BrokenResourceError) as exc:
            conn.lost = exc
        finally:
            conn.outbox.close()
            scope.cancel()

    def _ended(self, conn: _Connection) -> None:
        """A connection that got going ended: fail what waited on it."""
        self._set_connected(False)
        # A server going down for a restart asks to be come back to (PROTOCOL.md 11.3).
        self._come_back = self.server_shutdown and self.shutdown_reconnect is True
        reason = self._connection_ended(self._why(conn))
        self.disconnect_reason = reason
        if not self._closing:
            self._call(self.on_disconnect, reason)

    # ----------------------------------------------------------- recovery
    async def _reconnect(
        self, attempt: int, last: BaseException | None
    ) -> tuple[_Connection | None, int, BaseException | None]:
        """Dial again after the policy's delay; returns the connection and the attempts made."""
        attempts = self.backoff.max_attempts
        while attempt < attempts:
            delay = self.backoff.delay(attempt)
            self.backoff_history.append(delay)
            attempt += 1
            log.info(
                "reconnecting to %s:%s in %.2fs (attempt %d of %d)",
                *(self.host, self.port, delay, attempt, attempts),
            )
            await anyio.sleep(delay)
            if self._closing:
                return None, attempt, last
            try:
                stream = await dial(self.host, self.port, self.connect_timeout, self.local_host)
            except OSError as exc:  # TimeoutError and ConnectionRefusedError among them
                last = exc
                log.info("reconnection attempt %d failed: %s", attempt, exc)
            else:
                return _Connection(stream), attempt, last
        raise ReconnectFailed(attempts, last)

    def _back(self) -> bool:
        return self._conn is not None

    def _send_held(self, conn: _Connection) -> None:
        for data in self._take_held():
            conn.outbox.write(data)

    def _finish(self, error: ConnectionError | None) -> None:
        if self._finished:
            return
        super()._finish(error)
        if self._done is not None:
            self._done.set()

    async def wait_closed(self) -> None:
        """Wait until the client is closed for good (see :attr:`error` for why)."""
        if self._done is None:
            self._done = anyio.Event()
        await self._done.wait()

    # ----------------------------------------------------------- sending
    def _write(self, data: bytes) -> None:
        if self._finished or self._closing:
            raise ClientClosed("the client is closed")
        conn = self._conn
        if self._connected and conn is not None and not conn.outbox.closed:
            conn.outbox.write(data)
            return
        if not self.reconnect or self._runner is None:
            raise ConnectionError("not connected")
        # Reconnecting: held, and sent once the session is back.
        self._hold(data)

    def _write_now(self, data: bytes) -> None:
        if self._finished or self._closing:
            raise ClientClosed("the client is closed")
        conn = self._conn
        if conn is None or conn.outbox.closed:
            raise ConnectionError("not connected")
        conn.outbox.write(data)

    async def _drain(self) -> None:
        conn = self._conn
        if conn is not None:
            await conn.outbox.drain()

    # ----------------------------------------------------------- closing
    async def close(self) -> None:
        """Close the connection for good; pending requests fail with ``ConnectionError``."""
        conn = self._conn
        if conn is not None and not self._closing and not conn.outbox.closed:
            with anyio.move_on_after(1.0):  # what was written goes out first
                await conn.outbox.drain()
        self._closing = True
        runner = self._runner
        if runner is not None:
            runner.cancel()
            await runner.wait()
        self._finish(None)

    async def __aenter__(self) -> JsonClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
