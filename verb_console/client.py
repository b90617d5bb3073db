"""An asyncio client for the ``json`` protocol (PROTOCOL.md section 2), with connection recovery.

::

    async with JsonClient("127.0.0.1", 8080) as client:
        await client.join_room("lobby")
        await client.room_message("lobby", {"text": "hello"})
        async for message in client.messages():
            print(message)

Replies to the client's own requests are matched by ``ref`` and returned by
:meth:`JsonClient.request`; everything else (broadcasts, private and room
messages, notices) arrives through :meth:`JsonClient.messages` or
:meth:`JsonClient.receive`.

Connection recovery follows the seed's ``TCPConnectionRecovery``: when the
connection is lost unexpectedly the client reconnects with exponential backoff
(``base_delay * 2 ** attempt``, 1 s, 2 s, 4 s... with jitter, 5 attempts by
default) and rejoins its rooms. A deliberate close does not reconnect: the
client's own :meth:`JsonClient.close`, or the server's ``closing`` with reason
``operator``, ``shutdown`` or ``protocol_error``, or any loss after the server
announced ``server_shutdown``. An ``idle_timeout`` close, a reset or an EOF
without ``closing`` (a crash, a slow-consumer cut) do reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

import orjson

from .protocols.errors import ProtocolError, ServerError
from .protocols.json import DEFAULT_MAX_FRAME, JsonDecoder, encode

__all__ = [
    "DELIBERATE_REASONS",
    "ClientClosed",
    "JsonClient",
    "ReconnectFailed",
    "ServerError",
]

log = logging.getLogger("verb_console.client")

# ``closing`` reasons after which the client does not reconnect.
DELIBERATE_REASONS = frozenset({"operator", "shutdown", "protocol_error"})

READ_SIZE = 256 * 1024

Message = dict[str, Any]


class ClientClosed(ConnectionError):
    """The client is closed (by :meth:`JsonClient.close` or for good by the server)."""


class ReconnectFailed(ConnectionError):
    """Every reconnection attempt failed; the client is closed."""

    def __init__(self, attempts: int, last_error: BaseException | None) -> None:
        super().__init__(f"gave up reconnecting after {attempts} attempts: {last_error}")
        self.attempts = attempts
        self.last_error = last_error


class _Connection:
    """One TCP connection and what the client learned on it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: JsonDecoder,
        welcome: Message,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = decoder
        self.welcome = welcome
        self.closing_reason: str | None = None
        self.server_shutdown = False
        self.lost: BaseException | None = None


_END = object()


class JsonClient:
    """A json-protocol client: requests matched by ``ref``, a message stream, recovery.

    :param host: server address.
    :param port: server port.
    :param reconnect: reconnect after an unexpected loss (see the module docs).
    :param max_attempts: reconnection attempts before giving up.
    :param base_delay: seconds before the first attempt; each next one waits twice as long.
    :param max_delay: upper bound of one backoff delay, in seconds.
    :param jitter: each delay is multiplied by a random factor in ``[1 - jitter, 1 + jitter]``.
    :param connect_timeout: seconds for the TCP connect plus the ``welcome``.
    :param on_disconnect: called with the reason (a ``closing`` reason, or
        ``"connection_lost"``) whenever the connection ends, before any reconnection.
    :param on_reconnect: called with the new ``welcome`` once reconnected and back in the rooms.
    :param on_give_up: called with the :class:`ReconnectFailed` when recovery gives up.
    :param rng: the random source of the jitter.

    Callbacks may be plain functions or coroutine functions.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        reconnect: bool = True,
        max_attempts: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        jitter: float = 0.2,
        connect_timeout: float = 5.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        on_disconnect: Callable[[str], Any] | None = None,
        on_reconnect: Callable[[Message], Any] | None = None,
        on_give_up: Callable[[ReconnectFailed], Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 0:
            raise ValueError("max_attempts must be >= 0")
        if base_delay < 0 or max_delay < 0:
            raise ValueError("delays must be >= 0")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.host = host
        self.port = port
        self.reconnect = reconnect
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.jitter = jitter
        self.connect_timeout = connect_timeout
        self.max_frame = max_frame
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self.on_give_up = on_give_up
        self._rng = rng or random.Random()
        #: Rooms the client is in; rejoined after a reconnection.
        self.rooms: set[str] = set()
        #: Successful reconnections so far.
        self.reconnects = 0
        #: Why the last connection ended (a ``closing`` reason or ``"connection_lost"``).
        self.disconnect_reason: str | None = None
        #: Set when the client closed for an error (a loss it did not recover from).
        self.error: ConnectionError | None = None
        #: Delays (seconds) slept before each reconnection attempt, for inspection.
        self.backoff_history: list[float] = []
        self._conn: _Connection | None = None
        self._welcome: Message | None = None
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._next_ref = 0
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._closing = False
        self._finished = False
        self._connected = asyncio.Event()
        self._done = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Task[Any]] = set()

    # ----------------------------------------------------------- state
    @property
    def welcome(self) -> Message:
        """The ``welcome`` of the current (or last) connection."""
        if self._welcome is None:
            raise RuntimeError("not connected yet")
        return self._welcome

    @property
    def id(self) -> str:
        """The session id the server gave this connection."""
        return str(self.welcome["id"])

    @property
    def connected(self) -> bool:
        """True while a connection is up (and, after a reconnection, rooms are rejoined)."""
        return self._connected.is_set()

    @property
    def closed(self) -> bool:
        """True once the client is closed for good."""
        return self._finished

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before reconnection attempt ``attempt`` (0-based), jitter included."""
        delay = min(self.base_delay * (2**attempt), self.max_delay)
        if self.jitter:
            delay *= 1 + self._rng.uniform(-self.jitter, self.jitter)
        return max(delay, 0.0)

    # ----------------------------------------------------------- connecting
    async def connect(self) -> Message:
        """Connect and wait for the server's ``welcome``, which is returned.

        The first connection is not retried: a refused connect raises ``OSError``.
        """
        if self._conn is not None or self._supervisor is not None:
            raise RuntimeError("already connected")
        if self._finished:
            raise ClientClosed("the client is closed")
        conn = await self._open()
        self._start(conn)
        self._connected.set()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        return conn.welcome

    async def _open(self) -> _Connection:
        """Open one TCP connection and read its ``welcome``."""
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                decoder = JsonDecoder(self.max_frame)
                bodies: list[bytearray] = []
                while not bodies:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        raise ConnectionError("the server closed the connection before welcome")
                    for body in decoder.receive(data):
                        if isinstance(body, ProtocolError):
                            raise ConnectionError(f"bad frame from the server: {body}")
                        bodies.append(body)
                welcome = orjson.loads(bodies[0])
                if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
                    raise ConnectionError(f"expected a welcome, got {welcome!r}")
            except BaseException:
                writer.close()
                raise
        conn = _Connection(reader, writer, decoder, welcome)
        for body in bodies[1:]:
            self._dispatch(conn, body)
        return conn

    def _start(self, conn: _Connection) -> None:
        self._conn = conn
        self._welcome = conn.welcome
        self.disconnect_reason = None
        self._reader_task = asyncio.get_running_loop().create_task(self._read(conn))

    async def _read(self, conn: _Connection) -> None:
        """Read frames until the connection ends; never raises."""
        decoder = conn.decoder
        try:
            while True:
                data = await conn.reader.read(READ_SIZE)
                if not data:
                    break
                for body in decoder.receive(data):
                    if isinstance(body, ProtocolError):
                        conn.lost = body
                        return
                    self._dispatch(conn, body)
        except (OSError, asyncio.IncompleteReadError) as exc:
            conn.lost = exc
        except Exception as exc:  # a bug must end this connection, not the client
            log.exception("reading from the server failed")
            conn.lost = exc
        finally:
            conn.writer.close()
            self._lost(conn)

    def _dispatch(self, conn: _Connection, body: bytes | bytearray) -> None:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("dropped a frame that is not JSON: %r", body[:80])
            return
        if not isinstance(message, dict):
            log.warning("dropped a frame that is not an object: %r", body[:80])
            return
        kind = message.get("type")
        if kind == "joined" and isinstance(message.get("room"), str):
            self.rooms.add(message["room"])
        elif kind == "left" and isinstance(message.get("room"), str):
            self.rooms.discard(message["room"])
        elif kind == "closing":
            conn.closing_reason = str(message.get("reason"))
        elif kind == "server_shutdown":
            conn.server_shutdown = True
        ref = message.get("ref")
        if type(ref) is int:
            future = self._pending.pop(ref, None)
            if future is not None:
                if not future.done():
                    if kind == "error":
                        future.set_exception(ServerError.from_reply(message))
                    else:
                        future.set_result(message)
                return
        self._inbox.put_nowait(message)

    def _lost(self, conn: _Connection) -> None:
        """The connection ended: fail what waited on it."""
        if self._conn is conn:
            self._conn = None
        self._connected.clear()
        if conn.closing_reason is not None:
            reason = conn.closing_reason
        elif conn.server_shutdown:
            reason = "shutdown"
        else:
            reason = "connection_lost"
        self.disconnect_reason = reason
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"connection lost ({reason})"))
                # Nobody may be awaiting it any more (a timed-out request).
                future.exception()
        if not self._closing:
            self._call(self.on_disconnect, reason)

    # ----------------------------------------------------------- recovery
    async def _supervise(self) -> None:
        error: ConnectionError | None = None
        try:
            while True:
                assert self._reader_task is not None
                await self._reader_task
                if self._closing:
                    break
                reason = self.disconnect_reason or "connection_lost"
                if reason in DELIBERATE_REASONS:
                    log.info("server closed the connection (%s): not reconnecting", reason)
                    break
                if not self.reconnect:
                    error = ConnectionError(f"connection lost ({reason})")
                    break
                try:
                    conn = await self._reconnect()
                except ReconnectFailed as exc:
                    error = exc
                    self._call(self.on_give_up, exc)
                    break
                if conn is None:  # closed while waiting
                    break
                self._start(conn)
                if await self._rejoin():
                    self.reconnects += 1
                    self._connected.set()
                    self._call(self.on_reconnect, conn.welcome)
        finally:
            self._finish(error)

    async def _reconnect(self) -> _Connection | None:
        last: BaseException | None = None
        for attempt in range(self.max_attempts):
            delay = self.backoff_delay(attempt)
            self.backoff_history.append(delay)
            log.info(
                "reconnecting to %s:%s in %.2fs (attempt %d of %d)",
                self.host,
                self.port,
                delay,
                attempt + 1,
                self.max_attempts,
            )
            await asyncio.sleep(delay)
            if self._closing:
                return None
            try:
                return await self._open()
            except (OSError, TimeoutError, ValueError) as exc:
                last = exc
                log.info("reconnection attempt %d failed: %s", attempt + 1, exc)
        raise ReconnectFailed(self.max_attempts, last)

    async def _rejoin(self) -> bool:
        """Join the rooms again; False if the new connection was lost meanwhile."""
        for room in sorted(self.rooms):
            try:
                await self.request({"type": "join_room", "room": room})
            except ServerError as exc:
                log.warning("could not rejoin room %r: %s", room, exc)
                self.rooms.discard(room)
            except (ConnectionError, TimeoutError):
                return False
        return self._conn is not None

    def _finish(self, error: ConnectionError | None) -> None:
        if self._finished:
            return
        self._finished = True
        self.error = error
        self._connected.clear()
        self._inbox.put_nowait(_END)
        self._done.set()

    def _call(self, callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(*args)
        except Exception:
            log.exception("client callback %r failed", callback)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (after a reconnection: rooms rejoined).

        Raises the client's error (or :class:`ClientClosed`) if it closes first, and
        ``TimeoutError`` after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while not self._connected.is_set():
                if self._finished:
                    raise self.error or ClientClosed("the client is closed")
                connected = asyncio.ensure_future(self._connected.wait())
                done = asyncio.ensure_future(self._done.wait())
                try:
                    await asyncio.wait({connected, done}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    connected.cancel()
                    done.cancel()

    async def wait_closed(self) -> None:
        """Wait until the client is closed for good (see :attr:`error` for why)."""
        await self._done.wait()

    # ----------------------------------------------------------- sending
    def _writer(self) -> asyncio.StreamWriter:
        if self._finished or self._closing:
            raise ClientClosed("the client is closed")
        conn = self._conn
        if conn is None or conn.writer.is_closing():
            raise ConnectionError("not connected")
        return conn.writer

    async def send(self, message: Message) -> None:
        """Send one message as is (no ``ref`` added).

        Raises ``ConnectionError`` if not connected (while reconnecting, say).
        """
        writer = self._writer()
        writer.write(encode(message))
        await writer.drain()

    def _new_ref(self) -> int:
        self._next_ref += 1
        return self._next_ref

    async def request(self, message: Message, timeout: float | None = 5.0) -> Message:
        """Send ``message`` with a fresh integer ``ref`` and return the reply carrying it.

        Raises :class:`ServerError` for an ``error`` reply, ``ConnectionError`` if the
        connection is lost first, ``TimeoutError`` after ``timeout`` seconds.
        """
        writer = self._writer()
        ref = self._new_ref()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            writer.write(encode({**message, "ref": ref}))
            async with asyncio.timeout(timeout):
                await writer.drain()
                return await future
        finally:
            if self._pending.get(ref) is future:
                del self._pending[ref]

    async def _confirmed(self, message: Message, timeout: float | None) -> None:
        """Send a message that has no reply on success, then a ping.

        The server answers one session's messages in order, so once the ping's pong
        is back any error about ``message`` has arrived too, and is raised.
        """
        writer = self._writer()
        loop = asyncio.get_running_loop()
        ref = self._new_ref()
        failed: asyncio.Future[Message] = loop.create_future()
        self._pending[ref] = failed
        try:
            writer.write(encode({**message, "ref": ref}))
            await self.request({"type": "ping"}, timeout)
            if failed.done():
                failed.result()  # raises the ServerError
        finally:
            if self._pending.get(ref) is failed:
                del self._pending[ref]
            if failed.done() and not failed.cancelled():
                failed.exception()  # retrieved: no "never retrieved" warning
            failed.cancel()

    # ----------------------------------------------------------- the protocol's messages
    async def ping(self, timeout: float | None = 5.0) -> Message:
        """Send ``ping``; returns the ``pong``."""
        return await self.request({"type": "ping"}, timeout)

    async def broadcast(self, data: Any, *, confirm: bool = True) -> None:
        """Send ``data`` to every other json session.

        With ``confirm`` the call waits until the server has handled it (one extra
        round trip) and raises :class:`ServerError` if it was refused.
        """
        message = {"type": "broadcast", "data": data}
        if confirm:
            await self._confirmed(message, 5.0)
        else:
            await self.send(message)

    async def private(self, target: str, data: Any, *, confirm: bool = True) -> None:
        """Send ``data`` to session ``target``; confirmed, an unknown target raises
        :class:`ServerError` ``unknown_target``."""
        message = {"type": "private", "target": target, "data": data}
        if confirm:
            await self._confirmed(message, 5.0)
        else:
            await self.send(message)

    async def join_room(self, room: str) -> Message:
        """Join ``room``; returns the ``joined`` reply (with ``members``)."""
        return await self.request({"type": "join_room", "room": room})

    async def leave_room(self, room: str) -> Message:
        """Leave ``room``; returns the ``left`` reply."""
        return await self.request({"type": "leave_room", "room": room})

    async def room_message(self, room: str, data: Any, *, confirm: bool = True) -> None:
        """Send ``data`` to the other members of ``room``; confirmed, a room the client
        is not in raises :class:`ServerError` ``not_in_room``."""
        message = {"type": "room_message", "room": room, "data": data}
        if confirm:
            await self._confirmed(message, 5.0)
        else:
            await self.send(message)

    # ----------------------------------------------------------- receiving
    async def receive(self, timeout: float | None = None) -> Message:
        """The next message that is not a reply to a request.

        Raises ``TimeoutError`` after ``timeout`` seconds, and once the client is
        closed and every message has been read, its :attr:`error` or :class:`ClientClosed`.
        """
        async with asyncio.timeout(timeout):
            item = await self._inbox.get()
        if item is _END:
            self._inbox.put_nowait(_END)  # every later reader sees the end too
            raise self.error or ClientClosed("the client is closed")
        return item  # type: ignore[no-any-return]

    async def messages(self) -> AsyncIterator[Message]:
        """Every message that is not a reply to a request, until the client is closed.

        Ends quietly after :meth:`close` or a deliberate close by the server (its
        ``closing`` message is yielded first); raises the :attr:`error` (a
        :class:`ReconnectFailed`, say) if the connection was lost for good.
        """
        while True:
            item = await self._inbox.get()
            if item is _END:
                self._inbox.put_nowait(_END)
                if self.error is not None:
                    raise self.error
                return
            yield item

    # ----------------------------------------------------------- closing
    async def close(self) -> None:
        """Close the connection for good; pending requests fail with ``ConnectionError``."""
        self._closing = True
        conn = self._conn
        if conn is not None:
            conn.writer.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not asyncio.current_task():
            if not supervisor.done():
                # Wakes a backoff sleep at once; a reader still running ends on EOF.
                supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        if self._reader_task is not None and not self._reader_task.done():
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._conn is not None:
            self._lost(self._conn)
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
