"""The one JSON client core: ref matching, rooms, closing bookkeeping, the inbox.

:class:`JsonCore` speaks the ``json`` protocol (PROTOCOL.md section 2) over any
transport that gives it bytes (:meth:`JsonCore._feed`) and takes bytes
(:meth:`JsonCore._write`). :class:`~verb_console.client.tcp.JsonClient` runs it
over TCP (with reconnection), :class:`~verb_console.client.views.JsonStream`
over one mux stream. On both, :meth:`JsonCore.request` sends a message with a
``ref`` and returns the reply carrying that ``ref`` (raising
:class:`~verb_console.client.errors.ServerError` for an ``error`` reply), and
everything else arrives through :meth:`JsonCore.receive` and
:meth:`JsonCore.messages`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import orjson

from ..protocols.errors import ProtocolError
from ..protocols.json import DEFAULT_MAX_FRAME, JsonDecoder, encode
from ._io import Mailbox
from .errors import ClientClosed, ServerError

__all__ = ["DEFAULT", "DELIBERATE_REASONS", "JsonCore", "Message", "Reply"]

log = logging.getLogger("verb_console.client")

Message = dict[str, Any]

# ``closing`` reasons after which a client does not reconnect, and ends quietly.
#: ``closing`` reasons after which a client does not come back: the server closed
#: it on purpose, and (for the credentials) a reconnection would be refused again.
DELIBERATE_REASONS = frozenset(
    {"operator", "shutdown", "protocol_error", "auth_failed", "auth_revoked"}
)

#: A timeout argument meaning "this client's default".
DEFAULT = -1.0


class Reply:
    """One awaited answer: set once with a value or an error, awaited by anyone."""

    __slots__ = ("_event", "error", "value")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def set(self, value: Any) -> None:
        if not self._event.is_set():
            self.value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self.error = error
            self._event.set()

    async def wait(self) -> Any:
        await self._event.wait()
        if self.error is not None:
            raise self.error
        return self.value


class JsonCore:
    """What every JSON client of this project shares; see the module docs.

    Subclasses provide :meth:`_write` (queue bytes, raising ``ConnectionError``
    when they cannot go out), :meth:`_drain` and :attr:`closed_error`.
    """

    #: The error class raised once the client is closed (and :meth:`receive` has nothing left).
    closed_error: type[ClientClosed] = ClientClosed
    #: Seconds :meth:`request` waits for its reply unless told otherwise.
    request_timeout: float | None = 5.0
    #: Seconds :meth:`receive` waits unless told otherwise (None: no limit).
    receive_timeout: float | None = None

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        #: Rooms the client is in (kept from ``joined`` and ``left`` replies).
        self.rooms: set[str] = set()
        #: Set when the client closed for an error (a loss it did not recover from).
        self.error: ConnectionError | None = None
        #: The ``reason`` of the server's ``closing`` on the current connection, if any.
        self.closing_reason: str | None = None
        #: True once the server announced ``server_shutdown`` on the current connection.
        self.server_shutdown = False
        #: Its ``reconnect`` (PROTOCOL.md 11.3): True come back later, False stop, None unsaid.
        self.shutdown_reconnect: bool | None = None
        #: The last ``seq`` received (PROTOCOL.md 11.1): what a resume asks to go on after.
        self.last_seq = 0
        #: Each room's position, ``(epoch, offset)`` of the last message seen (11.2).
        self.positions: dict[str, tuple[str, int]] = {}
        #: The ``auth`` message every connection starts with (PROTOCOL.md 8), if the
        #: server requires one: a reconnection sends it before its ``resume`` (11.1).
        self.auth: Message | None = None
        self._welcome: Message | None = None
        self._welcome_wanted: Reply | None = None
        self._pending: dict[int | str, Reply] = {}
        self._next_ref = 0
        self._inbox: Mailbox[Message] = Mailbox()
        self._decoder = JsonDecoder(max_frame)
        self._finished = False

    # ----------------------------------------------------------- state
    @property
    def welcome(self) -> Message:
        """The ``welcome`` of the current (or last) connection."""
        if self._welcome is None:
            raise RuntimeError("no welcome received yet")
        return self._welcome

    @property
    def id(self) -> str:
        """The session id the server gave this client."""
        return str(self.welcome["id"])

    @property
    def closed(self) -> bool:
        """True once the client is closed for good."""
        return self._finished

    @property
    def unread(self) -> int:
        """Bytes of received messages not handed out by :meth:`receive` yet."""
        return self._inbox.size

    # ----------------------------------------------------------- transport side
    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _write_now(self, data: bytes) -> None:
        """Write on the present connection, never held back (the client's own
        handshake and recovery); a transport that holds nothing back writes."""
        self._write(data)

    async def _drain(self) -> None:
        raise NotImplementedError

    async def _wait(self, ready: Callable[[], object], timeout: float | None) -> None:
        """Wait until ``ready()``, or until the input has ended.

        Here a reader task feeds the core (:meth:`_feed` wakes this); a transport
        whose data is read on demand overrides it.
        """
        await self._inbox.until(lambda: ready() or self._inbox.ended, timeout)

    def _new_connection(self) -> None:
        """A fresh connection starts: new framing state, nothing known about it yet."""
        self._decoder = JsonDecoder(self.max_frame)
        self.closing_reason = None
        self.server_shutdown = False
        self.shutdown_reconnect = None

    def _feed(self, data: bytes) -> ProtocolError | None:
        """Handle bytes from the server; returns the framing error that ends the input, if any."""
        error = None
        for body in self._decoder.receive(data):
            if isinstance(body, ProtocolError):
                error = body  # the last event: the stream cannot be trusted past it
                break
            self._dispatch(body)
        self._inbox.poke()
        return error

    def _dispatch(self, body: bytes | bytearray) -> None:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("dropped a frame that is not JSON: %r", bytes(body[:80]))
            return
        if not isinstance(message, dict):
            log.warning("dropped a frame that is not an object: %r", bytes(body[:80]))
            return
        kind = message.get("type")
        room = message.get("room")
        seq = message.get("seq")
        if type(seq) is int:
            self.last_seq = seq
        if kind == "room_message" and isinstance(room, str):
            offset = message.get("offset")
            position = self.positions.get(room)
            if type(offset) is int and position is not None:
                self.positions[room] = (position[0], offset)
        elif kind == "joined" and isinstance(room, str):
            self.rooms.add(room)
            epoch, offset = message.get("epoch"), message.get("offset")
            if type(epoch) is str and type(offset) is int:
                self.positions[room] = (epoch, offset)
        elif kind == "left" and isinstance(room, str):
            self.rooms.discard(room)
            self.positions.pop(room, None)
        elif kind == "closing":
            self.closing_reason = str(message.get("reason"))
        elif kind == "server_shutdown":
            self.server_shutdown = True
            again = message.get("reconnect")
            self.shutdown_reconnect = again if type(again) is bool else None
        wanted = self._welcome_wanted
        if wanted is not None and not wanted.done:
            # A handshake waits: the first message must be the welcome.
            if kind == "welcome":
                self._welcome = message
                wanted.set(message)
            elif kind == "error":
                wanted.fail(
                    ConnectionError(
                        f"the server refused the connection: {message.get('code')}: "
                        f"{message.get('message')}"
                    )
                )
            else:
                wanted.fail(ConnectionError(f"expected a welcome, got {message!r}"))
            return
        if kind == "welcome":
            self._welcome = message
        ref = message.get("ref")
        if ref is not None and type(ref) in (int, str):
            reply = self._pending.pop(ref, None)
            if reply is not None:
                if kind == "error":
                    reply.fail(ServerError.from_reply(message))
                else:
                    reply.set(message)
                return
        self._inbox.put(message, len(body))

    def _disconnect_reason(self) -> str:
        if self.closing_reason is not None:
            return self.closing_reason
        if self.server_shutdown:
            return "shutdown"
        return "connection_lost"

    def _connection_ended(self, why: str) -> str:
        """The connection ended: fail what waited on it; returns the disconnect reason."""
        reason = self._disconnect_reason()
        pending, self._pending = self._pending, {}
        error = self.closed_error(f"connection lost ({reason})")
        for reply in pending.values():
            reply.fail(error)
        wanted = self._welcome_wanted
        if wanted is not None:
            wanted.fail(ConnectionError(why))
        self._inbox.poke()
        return reason

    def _finish(self, error: ConnectionError | None) -> None:
        if self._finished:
            return
        self._finished = True
        self.error = error
        self._inbox.end()

    def _end_error(self) -> ConnectionError:
        return self.error or self.closed_error("the client is closed")

    # ----------------------------------------------------------- handshake
    async def _handshake(
        self, first: Message | None = None, ready: Callable[[], None] | None = None
    ) -> Message:
        """Speak first (a ping with a ref, or ``first``), then take the ``welcome``
        and the answer (for ``first``, see :attr:`first_reply`).

        An ``auto`` listener sends nothing before the client's first bytes, a pinned
        ``json`` listener sends its welcome at once: either way the welcome comes
        first, then the answer. ``ready()`` is called once the welcome is awaited
        (a transport may then hand over what it received before).
        """
        wanted = self._welcome_wanted = Reply()
        self.first_reply: Message | BaseException | None = None
        try:
            ref = self._new_ref()
            hello = self._pending[ref] = Reply()
            try:
                self._write_now(encode({**(first or {"type": "ping"}), "ref": ref}))
                if ready is not None:
                    ready()
                welcome: Message = await wanted.wait()
                try:
                    self.first_reply = await hello.wait()
                except ServerError as exc:
                    if first is None:
                        raise
                    self.first_reply = exc
            finally:
                if self._pending.get(ref) is hello:
                    del self._pending[ref]
        finally:
            self._welcome_wanted = None
        return welcome

    # ----------------------------------------------------------- sending
    async def send(self, message: Message) -> None:
        """Send one message as is (no ``ref`` added)."""
        self._write(encode(message))
        await self._drain()

    def _new_ref(self) -> int:
        self._next_ref += 1
        return self._next_ref

    def _register(self, message: Message) -> tuple[int | str, Reply]:
        ref = message.get("ref")
        if ref is None:
            ref = self._new_ref()
        elif type(ref) not in (int, str):
            raise ValueError(f"a ref is a string or an integer, not {ref!r}")
        if ref in self._pending:
            raise ValueError(f"a request with ref {ref!r} is already waiting")
        reply = self._pending[ref] = Reply()
        return ref, reply

    async def request(self, message: Message, timeout: float | None = DEFAULT) -> Message:
        """Send ``message`` with a ``ref`` and return the reply carrying that ``ref``.

        The ``ref`` is the message's own if it has one, else a fresh integer. Raises
        :class:`ServerError` for an ``error`` reply, ``ConnectionError`` if the
        connection is lost first, ``TimeoutError`` after ``timeout`` seconds.
        Messages that carry no such ``ref`` (broadcasts, notices) never answer it.
        """
        return await self._request(message, timeout, self._write)

    async def _request(
        self, message: Message, timeout: float | None, write: Callable[[bytes], None]
    ) -> Message:
        if timeout is not None and timeout < 0:
            timeout = self.request_timeout
        ref, reply = self._register(message)
        try:
            write(encode({**message, "ref": ref}))
            with anyio.fail_after(timeout):
                await self._drain()
                await self._wait(lambda: reply.done, None)
            if not reply.done:
                raise self._end_error()
            result: Message = await reply.wait()
            return result
        finally:
            if self._pending.get(ref) is reply:
                del self._pending[ref]

    async def _confirmed(self, message: Message, timeout: float | None) -> None:
        """Send a message that has no reply on success, then a ping.

        The server answers one session's messages in order, so once the ping's pong
        is back any error about ``message`` has arrived too, and is raised.
        """
        ref, failed = self._register(message)
        try:
            self._write(encode({**message, "ref": ref}))
            await self.request({"type": "ping"}, timeout)
            if failed.error is not None:
                raise failed.error
        finally:
            if self._pending.get(ref) is failed:
                del self._pending[ref]

    async def _send(self, message: Message, confirm: bool) -> None:
        if confirm:
            await self._confirmed(message, DEFAULT)
        else:
            await self.send(message)

    # ----------------------------------------------------------- the protocol's messages
    async def ping(self, timeout: float | None = DEFAULT) -> Message:
        """Send ``ping``; returns the ``pong``."""
        return await self.request({"type": "ping"}, timeout)

    async def broadcast(self, data: Any, *, confirm: bool = True) -> None:
        """Send ``data`` to every other json session.

        With ``confirm`` the call waits until the server has handled it (one extra
        round trip) and raises :class:`ServerError` if it was refused.
        """
        await self._send({"type": "broadcast", "data": data}, confirm)

    async def private(self, target: str, data: Any, *, confirm: bool = True) -> None:
        """Send ``data`` to session ``target``; confirmed, an unknown target raises
        :class:`ServerError` ``unknown_target``."""
        await self._send({"type": "private", "target": target, "data": data}, confirm)

    async def join_room(self, room: str) -> Message:
        """Join ``room``; returns the ``joined`` reply (with ``members``)."""
        return await self.request({"type": "join_room", "room": room})

    async def leave_room(self, room: str) -> Message:
        """Leave ``room``; returns the ``left`` reply."""
        return await self.request({"type": "leave_room", "room": room})

    async def room_message(self, room: str, data: Any, *, confirm: bool = True) -> None:
        """Send ``data`` to the other members of ``room``; confirmed, a room the client
        is not in raises :class:`ServerError` ``not_in_room``."""
        await self._send({"type": "room_message", "room": room, "data": data}, confirm)

    # ----------------------------------------------------------- receiving
    async def receive(self, timeout: float | None = DEFAULT) -> Message:
        """The next message that is not a reply to a request.

        Raises ``TimeoutError`` after ``timeout`` seconds, and once the client is
        closed and every message has been read, its :attr:`error` or the closed error.
        """
        if timeout is not None and timeout < 0:
            timeout = self.receive_timeout
        inbox = self._inbox
        await self._wait(inbox.__len__, timeout)
        if not inbox:
            raise self._end_error()
        return inbox.get_nowait()

    async def messages(self) -> AsyncIterator[Message]:
        """Every message that is not a reply to a request, until the client is closed.

        Ends quietly after ``close`` or a deliberate close by the server (its
        ``closing`` message is yielded first); raises the :attr:`error` if the
        connection was lost for good.
        """
        inbox = self._inbox
        while True:
            await self._wait(inbox.__len__, None)
            if not inbox:
                break
            yield inbox.get_nowait()
        if self.error is not None:
            raise self.error

    def __aiter__(self) -> AsyncIterator[Message]:
        return self.messages()
