"""The ``json`` session of PROTOCOL.md section 2: reading length-prefixed JSON,
pacing the work of a read, batching the replies to it.

What each message type does is in :mod:`.json_handlers`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .. import __version__
from ..protocols.errors import ProtocolError
from ..protocols.json import JsonDecoder, encode, encode_error, parse_message
from .pacer import HOLD_BACKLOG, Pacer
from .resume import first_message
from .session import CloseReason, EventOutlet, Outlet, Session, SessionHost
from .shared_history import Later
from .snapshot import Stats

# Bytes of replies one step batches before they are written. Once written, if
# the socket cannot take more, the rest of the read waits for it to drain: a
# read of re-joins to a big room asks for thousands of 21 KB member lists, and
# they must not all be built before any output limit sees them.
REPLY_BATCH = 64 * 1024
# How often a session whose outlet has no drain event (a mux stream) looks
# whether its output went down, while a read waits for it.
DRAIN_POLL_S = 0.005

Handler = Callable[["JsonSession", dict[str, Any], Any], None]


class JsonSession(Session):
    """Length-prefixed JSON messages. Replies to one read go out in one write."""

    protocol = "json"

    __slots__ = (
        "_backlog",
        "_fan_at",
        "_fan_tokens",
        "_out_bytes",
        "_waiting_drain",
        "decoder",
        "detached",
        "fresh",
        "handlers",
        "mark_at",
        "marks",
        "resume_token",
        "ring",
        "ring_bytes",
        "seq",
        "seq_width",
        "transfers",
    )

    def __init__(
        self,
        hub: SessionHost,
        outlet: Outlet,
        session_id: str,
        address: str,
        port: int,
        parent: str | None = None,
        *,
        handlers: Mapping[str, Handler],
    ) -> None:
        # The message types it serves (.kinds): section 2's (.json_handlers), and
        # the upload messages when uploads are on.
        self.handlers = handlers
        super().__init__(hub, outlet, session_id, address, port, parent)

    def setup(self) -> None:
        self.decoder = JsonDecoder(self.hub.settings.max_frame)
        self.transfers: Any = None  # per-session transfer state, set by the transfer handlers
        # Messages read but not handled yet, while reading is paused (see _pace).
        self._backlog: list[Any] | None = None
        # Bytes of replies batched in ``_out``; whether the backlog waits for output to drain.
        self._out_bytes = 0
        self._waiting_drain = False
        # The fan-out rate's token bucket: one second's worth to start with.
        self._fan_tokens = float(self.hub.settings.max_fanout_rate)
        self._fan_at = time.monotonic()
        # Session resume (PROTOCOL.md 11.1, see .resume and .seq): the seq of the
        # last delivery, the deliveries kept for a replay (None: resume is off),
        # and the detached state while no connection carries the session.
        self.seq = 0
        self.seq_width = 1
        self.ring_bytes = 0
        self.detached: Any = None
        manager = self.hub.resume
        self.ring: deque[bytes] | None = None if manager is None else deque()
        # When the ring's deliveries were made, coarsely (see .seq).
        self.marks: Any = None if manager is None else deque()
        self.mark_at = float("-inf")
        self.resume_token: str | None = None if manager is None else manager.new_token()
        # Until its first message is handled: only then may it be a ``resume``.
        self.fresh = True

    def start(self) -> None:
        hub = self.hub
        hub.json_sessions[self.id] = self
        welcome: dict[str, Any] = {
            "type": "welcome",
            "id": self.id,
            "server": "verb-console",
            "version": __version__,
            "maxFrameBytes": hub.settings.max_frame,
        }
        if hub.bus is not None:
            welcome["node"] = hub.node
            hub.bus.session_started(self.id)
        if self.user is None and hub.auth is not None:
            welcome["auth"] = "required"
        if self.resume_token is not None:
            welcome["resume"] = self.resume_token
        self.deliver(encode(welcome))

    def encode_notice(self, message: dict[str, Any]) -> bytes:
        return encode(message)

    def feed(self, data: bytes) -> None:
        if self.closing:
            return
        self.hub.changes.mark(self)  # for the console's orders (see .order)
        self.stats.bytes_in += len(data)
        decoder = self.decoder
        bodies = decoder.receive(data)
        held = decoder.buffered
        if (held or self._input) and self.parent is None:
            # A mux stream's partial frames are charged by its connection.
            over = self.charge_input(held)
            if over is not None:
                # After the messages this read completed, as a framing error is.
                bodies.append(ProtocolError("frame_too_large", over))
        if bodies:
            backlog = self._backlog
            if backlog is not None:
                # Waiting (a read's work was split, or the fan-out rate is spent):
                # these wait behind the earlier ones, in order.
                backlog.extend(bodies)
                if len(backlog) > HOLD_BACKLOG:
                    self.outlet.hold(self)
            elif self.fresh:
                # Its first message may be a ``resume`` (see .resume).
                first_message(self, bodies)
            else:
                self._handle(bodies)

    def _handle(self, bodies: list[Any]) -> None:
        """Handle decoded messages until they are done, this step's share of the
        loop turn is (see .pacer), or the replies written fill the socket."""
        pacer = self.hub.pacer
        stats = self.stats
        end = pacer.begin()
        try:
            if stats.msgs_in + stats.msgs_out >= end:
                # The turn's budget is spent: all of it waits for the run queue.
                self._pace(0, bodies)
                return
            self._step(bodies, pacer, stats)
        finally:
            pacer.done()

    def _step(self, bodies: list[Any], pacer: Pacer, stats: Stats) -> None:
        start = stats.msgs_out
        # Read so far, in the step's work count as in the turn's (see .pacer).
        base = stats.msgs_in
        # Replies written early (a batch of REPLY_BATCH bytes) are not fan-out.
        replies = 0
        out: list[bytes] = []
        self._out = out
        self._out_bytes = 0
        handlers = self.handlers
        parse = parse_message
        # The tap is None unless someone watches: one read per step.
        tap = self.hub.tap
        failed: ProtocolError | None = None
        rest: list[Any] | None = None
        congested = False
        handled = 0
        for body in bodies:
            if handled and base + handled + stats.msgs_out + len(out) >= pacer.step_end:
                # This step's share of the turn is done (or its fan-out waits).
                rest = bodies[handled:]
                break
            if isinstance(body, ProtocolError):
                # A framing error is always the last event.
                failed = body
                break
            handled += 1
            try:
                msg, kind, ref = parse(body)
            except ProtocolError as exc:
                out.append(encode_error(exc))
                continue
            handler = handlers.get(kind)
            if handler is None:
                err = ProtocolError("unknown_type", f"Unknown message type: {kind}")
                out.append(encode_error(err, ref))
            else:
                try:
                    handler(self, msg, ref)
                except ProtocolError as exc:
                    out.append(encode_error(exc, ref))
                except Later:
                    # It waits for this session's room posts (see .shared_history),
                    # and is tapped when it is handled, not each time it is tried.
                    handled -= 1
                    rest = bodies[handled:]
                    break
            if tap is not None:
                room = msg.get("room")
                tap.see(self.id, "json", kind, len(body), room if type(room) is str else "")
            if handler is None:
                continue
            if self.closing:
                break
            if self._out_bytes >= REPLY_BATCH:
                # A write's worth of replies: out now, through the output limit
                # (a slow consumer is closed here, not after the whole read).
                replies += len(out)
                self.flush()
                if self.closing:
                    break
                self._out = out = []
                self._out_bytes = 0
                if handled < len(bodies) and self._output_full():
                    rest = bodies[handled:]
                    congested = True
                    break
        self.msgs_in += handled
        stats.msgs_in += handled
        used = stats.msgs_out - start - replies
        self.flush()
        if self.closing:
            return
        if failed is not None:
            self.deliver(encode_error(failed))
            reason = (
                CloseReason.FRAME_TOO_LARGE
                if failed.code == "frame_too_large"
                else CloseReason.PROTOCOL_ERROR
            )
            self.close(reason, detail=failed.code)
            return
        # A fan-out of its own waits in the pacer's FIFO: nothing more until it is out.
        blocked = pacer.step_end < 0 and pacer.blocked(self)
        if used or rest is not None or blocked:
            self._pace(used, rest, congested, blocked)

    def _output_full(self) -> bool:
        """Whether this session's output is congested: its socket is over the
        writable high-water mark, or (a mux stream, whose connection pumps the
        socket) a quarter of the unsent limit waits."""
        outlet = self.outlet
        return outlet.congested or outlet.unsent >= self.hub.settings.max_pending // 4

    def _pace(
        self,
        used: int,
        rest: list[Any] | None,
        congested: bool = False,
        blocked: bool = False,
    ) -> None:
        """Charge ``used`` deliveries to the fan-out rate; pause reading while the
        rate is spent, ``rest`` waits on the run queue (or, when ``congested``,
        for the output to drain), or (``blocked``) a fan-out of its own waits."""
        rate = self.hub.settings.max_fanout_rate
        delay = 0.0
        if rate > 0 and used:
            now = time.monotonic()
            tokens = min(float(rate), self._fan_tokens + (now - self._fan_at) * rate) - used
            self._fan_tokens = tokens
            self._fan_at = now
            if tokens < 0:
                delay = -tokens / rate
        if rest is None and delay <= 0 and not blocked:
            return
        self._backlog = backlog = rest if rest is not None else []
        if congested or delay > 0 or len(backlog) > HOLD_BACKLOG:
            self.outlet.hold(self)
        if congested:
            self._wait_drain()
        elif blocked:
            pass  # the pacer queues it once its fan-out is delivered
        elif delay > 0:
            asyncio.get_running_loop().call_later(delay, self._resume)
        else:
            self.hub.pacer.defer(self)

    def _wait_drain(self) -> None:
        outlet = self.outlet
        if isinstance(outlet, EventOutlet):
            if not self._waiting_drain:
                self._waiting_drain = True
                outlet.on("drain", self._drained)
        else:
            asyncio.get_running_loop().call_later(DRAIN_POLL_S, self._resume)

    def _drained(self) -> None:
        self._waiting_drain = False
        outlet = self.outlet
        if isinstance(outlet, EventOutlet):
            outlet.off("drain", self._drained)
        self._resume()

    def _resume(self) -> None:
        backlog = self._backlog
        if self.closing or backlog is None:
            self._backlog = None
            return
        if self.hub.pacer.blocked(self):
            return  # its fan-out is not out yet: the pacer calls again then
        if backlog and self._output_full():
            # Still more unsent than the socket's high-water mark: wait again.
            self._wait_drain()
            return
        self._backlog = None
        if backlog:
            self._handle(backlog)
        if self._backlog is None and not self.closing:
            self.outlet.release(self)

    # ----------------------------------------------------------- resume (see .resume)
    def unplug(self) -> None:
        """Let go of the present connection, keeping the session: what was read
        and not handled is dropped, and any hold on the connection released."""
        if self._waiting_drain:
            self._waiting_drain = False
            outlet = self.outlet
            if isinstance(outlet, EventOutlet):
                outlet.off("drain", self._drained)
        if self._backlog is not None:
            self._backlog = None
            self.outlet.release(self)
        self._out = None
        self.release_input()

    def take_input(self, other: JsonSession) -> None:
        """Read on where ``other`` (the connection's own session) stopped."""
        self.decoder, other.decoder = other.decoder, self.decoder
        self._input, other._input = other._input, 0
        self.fresh = False

    def overflowed(self) -> None:
        manager = self.hub.resume
        if manager is not None:
            manager.overflowed(self)

    def notify(self, message: dict[str, Any]) -> None:
        # The operator's broadcasts are deliveries because of someone else (seq).
        seq = self.hub.seq
        if seq is not None and message.get("type") in ("broadcast", "room_message"):
            self.flush()
            seq.one(self, encode(message))
            return
        super().notify(message)

    # The run queue's call (see .pacer): one more step of the backlog.
    take_turn = _resume

    def reply(self, message: dict[str, Any], ref: Any) -> None:
        """Answer this session's own message (``ref`` copied in when it had one)."""
        if ref is not None:
            message["ref"] = ref
        f = encode(message)
        out = self._out
        # While a read is handled (the usual case) replies join its write.
        if out is not None and not self.closing:
            out.append(f)
            self._out_bytes += len(f)
        else:
            self.deliver(f)

    def closed(self) -> None:
        if self._waiting_drain:
            self._waiting_drain = False
            outlet = self.outlet
            if isinstance(outlet, EventOutlet):
                outlet.off("drain", self._drained)
        if self._backlog is not None:
            self._backlog = None
            self.outlet.release(self)
        self.ring = None
        self.hub.pacer.forget(self)
        hub = self.hub
        if hub.json_sessions.pop(self.id, None) is not None and hub.bus is not None:
            hub.bus.session_ended(self.id)
        super().closed()
