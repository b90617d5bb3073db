"""The ``mux`` connection: many json, binary and echo sessions over one TCP connection
(PROTOCOL.md section 4).

Output is fair: every stream queues frames of at most 64 KiB, and one pump takes
them round-robin (control frames first) and writes them only while the socket is
not congested, so a ping on one stream is answered while another stream is busy.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from ..protocols import mux as m
from ..protocols.errors import ProtocolError
from ..protocols.json import is_ref
from .mux_stream import StreamOutlet
from .session import WIRE_REASON, CloseReason, Session
from .snapshot import MuxConnectionInfo, StreamInfo

if TYPE_CHECKING:
    from ..net.socket import TCPSocket

# Bytes one pump pass hands to the socket at most, so other work gets a turn.
PUMP_BUDGET = 256 * 1024
STREAM_KINDS = ("json", "binary", "echo")


class MuxSession(Session):
    """The TCP connection's session: control stream 0 and the stream sessions."""

    protocol = "mux"
    accepts_notices = False

    __slots__ = (
        "_closing_streams",
        "_feeding",
        "_pump_scheduled",
        "_ready",
        "_runs",
        "_waiting_drain",
        "control",
        "decoder",
        "held",
        "queued",
        "streams",
    )

    def setup(self) -> None:
        self.decoder = m.MuxDecoder(self.hub.settings.max_frame)
        self.streams: dict[int, StreamOutlet] = {}
        # The control stream is the connection's own: a weak reference back, so
        # that the two make no cycle and an ended connection is freed at once.
        self.control = StreamOutlet(weakref.proxy(self), 0)
        # Streams with queued frames, in round-robin order (control is served first).
        self._ready: deque[StreamOutlet] = deque()
        self.queued = 0
        self._pump_scheduled = False
        # While a read is being handled, output is pumped once at its end.
        self._feeding = False
        # While the connection's close says goodbye on each stream: those notices
        # (one a stream, all written at once next) are not a slow consumer's output.
        self._closing_streams = False
        # Runs read but not handled yet (one read's work was split), and whether
        # they wait for the output to drain before they are handled.
        self._runs: list[Any] | None = None
        self._waiting_drain = False
        # Partial frames held by the stream sessions' decoders, all streams together.
        self.held = 0

    def start(self) -> None:
        sock: TCPSocket = self.outlet  # type: ignore[assignment]
        sock.on("drain", self.pump)

    # --- output -----------------------------------------------------------
    def send_control(self, message: dict[str, Any]) -> None:
        frame = m.encode_control(message)
        self.control.frames_out += 1
        self.control.bytes_written += len(frame) - m.HEADER_SIZE
        self.msgs_out += 1
        stats = self.stats
        stats.msgs_out += 1
        # Stream sessions count their own payloads; the connection counts the rest.
        stats.bytes_out += len(frame)
        self.enqueue(self.control, [frame])

    def encode_notice(self, message: dict[str, Any]) -> bytes:
        return m.encode_control(message)

    def deliver(self, frame: bytes) -> None:
        # Only control frames reach the connection itself (e.g. its closing notice).
        if not self.closing:
            self.enqueue(self.control, [frame])

    def enqueue(self, stream: StreamOutlet, frames: list[bytes]) -> None:
        if not frames or (self.closing and stream is not self.control):
            return
        queue = stream.queue
        if not queue and stream is not self.control:
            self._ready.append(stream)
        queue.extend(frames)
        size = len(frames[0]) if len(frames) == 1 else sum(map(len, frames))
        stream.queued += size
        self.queued += size
        sock = self.outlet
        # Below the writable high-water mark the socket's own backlog is small;
        # it is only read when it is not.
        pending = self.queued + (sock.unsent if sock.congested else 0)
        if pending > self.hub.settings.max_pending and not self._closing_streams:
            self.stats.slow_consumers += 1
            self.close(CloseReason.SLOW_CONSUMER, notify=False, flush=False)
            return
        if not self._pump_scheduled and not self._feeding:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self.pump)

    def drop_queue(self, stream: StreamOutlet) -> None:
        self.queued -= stream.queued
        stream.queue.clear()
        stream.queued = 0

    def pump(self, everything: bool = False) -> None:
        """Hand queued frames to the socket, control first, then one frame per stream in turn.

        ``everything`` (when closing) writes all that is queued at once.
        """
        self._pump_scheduled = False
        sock = self.outlet
        if sock.destroyed or (self.closing and not everything):
            return
        parts: list[bytes] = []
        budget = self.queued + 1 if everything else PUMP_BUDGET
        control = self.control
        while control.queue and budget > 0:
            f = control.queue.popleft()
            control.queued -= len(f)
            parts.append(f)
            budget -= len(f)
        ready = self._ready
        while ready and budget > 0 and (everything or not sock.congested):
            st = ready.popleft()
            if not st.queue:
                continue
            f = st.queue.popleft()
            st.queued -= len(f)
            parts.append(f)
            budget -= len(f)
            if st.queue:
                ready.append(st)
        if parts:
            data = b"".join(parts)
            self.queued -= len(data)
            sock.write(data)
        if (ready or control.queue) and not sock.congested and not self._pump_scheduled:
            # More is queued and the socket can take it: continue after other work.
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self.pump)
        # When congested, the socket's "drain" event calls pump again.
        if self._waiting_drain and not sock.congested and self.queued <= PUMP_BUDGET:
            self._waiting_drain = False
            asyncio.get_running_loop().call_soon(self._resume)

    def feed(self, data: bytes) -> None:
        if self.closing:
            return
        self.hub.changes.mark(self)  # its streams' idle time moved with it (see .order)
        self.stats.bytes_in += len(data)
        decoder = self.decoder
        runs = decoder.feed_runs(data)
        total = self.held + decoder.buffered
        # The connection's own partial mux frame counts toward the server's total.
        if total != self._input and (over := self.charge_input(total, self.held)):
            self.control_error(ProtocolError("frame_too_large", over))
            self.close(CloseReason.FRAME_TOO_LARGE, detail="frame_too_large")
            return
        if self._runs is not None:
            self._runs.extend(runs)
        elif runs:
            self._run(runs)

    def _run(self, runs: list[Any]) -> None:
        pacer = self.hub.pacer
        stats = self.stats
        end = pacer.begin()
        self._feeding = True
        try:
            # Nothing when the turn's budget is spent: it all waits its turn.
            rest = self._feed(runs) if stats.msgs_in + stats.msgs_out < end else runs
        finally:
            self._feeding = False
            pacer.done()
        if self.closing:
            return
        if self._ready or self.control.queue:
            self.pump()
        if rest is not None:
            # The rest of this read waits for the run queue (see .pacer), and
            # until what it produced so far is written: what counts against
            # the unsent limit is what the socket could not take, not what
            # one read produced.
            self._runs = rest
            self.outlet.hold(self)
            sock = self.outlet
            if not sock.congested and self.queued <= PUMP_BUDGET:
                pacer.defer(self)
            else:
                self._waiting_drain = True

    def _resume(self) -> None:
        runs = self._runs
        self._runs = None
        if self.closing or runs is None:
            return
        self._run(runs)
        if self._runs is None and not self.closing:
            self.outlet.release(self)

    # The run queue's call (see .pacer): one more step of the held runs.
    take_turn = _resume

    def _feed(self, runs: list[Any]) -> list[Any] | None:
        """Handle runs until done (None) or the step's share of the turn is spent
        (the rest). The streams' sessions take theirs from the same share."""
        stats = self.stats
        pacer = self.hub.pacer
        streams = self.streams
        # Consecutive frames of one stream arrive joined: the session handles
        # (and answers) a run of pipelined messages at once, as on plain TCP.
        for i, run in enumerate(runs):
            if isinstance(run, ProtocolError):
                # The framing broke (always the last event): say why, then close.
                self.control_error(run)
                self.close(CloseReason.FRAME_TOO_LARGE, detail=run.code)
                return None
            sid, payload, count = run
            if sid == 0:
                self.msgs_in += 1
                stats.msgs_in += 1
                self.control.frames_in += 1
                self.control.bytes_read += len(payload)
                self.on_control(payload)
            else:
                st = streams.get(sid)
                if st is None or st.session is None:
                    self.control_error(
                        ProtocolError("unknown_stream", f"Stream {sid} is not open", streamId=sid)
                    )
                    continue
                st.frames_in += count
                st.bytes_read += len(payload)
                # The stream session counts its own payload bytes in.
                stats.bytes_in -= len(payload)
                session = st.session
                session.feed(payload)
                decoder: Any = getattr(session, "decoder", None)
                if decoder is not None and decoder.buffered != st.held:
                    self._held_changed(st, decoder.buffered)
            if self.closing:
                return None
            if stats.msgs_in + stats.msgs_out >= pacer.step_end and i + 1 < len(runs):
                return runs[i + 1 :]
        return None

    def _held_changed(self, st: StreamOutlet, held: int) -> None:
        """A stream's partial frame grew or shrank: past the connection's limit or
        the server's (``max_input_*``), that stream ends with ``frame_too_large``."""
        self.held += held - st.held
        st.held = held
        over = self.charge_input(self.held + self.decoder.buffered, self.held)
        if over is not None and not st.destroyed:
            self.control_error(ProtocolError("frame_too_large", over, streamId=st.stream_id))
            self.end_stream(st, announce=True, reason=CloseReason.FRAME_TOO_LARGE)

    def control_error(self, error: ProtocolError) -> None:
        """Report ``error`` on the control stream (with its ``streamId``, if any)."""
        self.send_control(error.as_message())

    def on_control(self, payload: bytes) -> None:
        sid: Any = None
        msg: dict[str, Any] = {}
        try:
            msg = m.parse_control(payload)
            sid = msg.get("streamId")
            m.validate_control(msg)
        except ProtocolError as exc:
            if (
                exc.code == "unknown_type"
                and msg.get("type") == "auth"
                and self.hub.auth is not None
            ):
                exc = ProtocolError("bad_message", "Already authenticated")
            if type(sid) is int:
                exc.extra["streamId"] = sid
            self.control_error(exc)
            return
        kind = msg["type"]
        if kind == "ping":
            pong: dict[str, Any] = {"type": "pong", "timestamp": int(time.time() * 1000)}
            ref = msg.get("ref")
            if is_ref(ref):
                pong["ref"] = ref
            self.send_control(pong)
        elif kind == "stream_create":
            self.create_stream(sid, msg["streamType"])
        else:  # stream_close
            st = self.streams.get(sid)
            if st is None:
                self.control_error(
                    ProtocolError("unknown_stream", f"Stream {sid} is not open", streamId=sid)
                )
                return
            self.end_stream(st, announce=False, reason=CloseReason.CLIENT_CLOSED)
            self.send_control({"type": "stream_closed", "streamId": sid})

    def stream_session_id(self, sid: int) -> str:
        """``<connection id>#<streamId>``, and ``@<node>`` after it in a cluster."""
        suffix = self.hub.id_suffix
        if suffix:
            return f"{self.id.removesuffix(suffix)}#{sid}{suffix}"
        return f"{self.id}#{sid}"

    def create_stream(self, sid: int, kind: str) -> None:
        if sid == 0 or sid % 2 == 0 or sid in self.streams:
            self.control_error(
                ProtocolError("bad_stream", f"Stream id {sid} is not a free odd id", streamId=sid)
            )
            return
        if kind not in STREAM_KINDS:
            self.control_error(
                ProtocolError("unknown_stream_type", f"Unknown stream type: {kind}", streamId=sid)
            )
            return
        if len(self.streams) >= (limit := self.hub.settings.max_streams):
            err = ProtocolError("too_many_streams", f"At most {limit} open streams", streamId=sid)
            return self.control_error(err)
        refused = self.hub.permissions.refusal(self.user) if self.user else None
        if refused:  # a stream is a session of the user: max_sessions counts it (12.1)
            return self.control_error(ProtocolError(*refused, streamId=sid))
        st = StreamOutlet(self, sid)
        self.streams[sid] = st
        session = self.hub.open_session(
            kind, st, self.stream_session_id(sid), self.address, self.port, self.id
        )
        st.session = session
        # The streams of an authenticated connection are sessions of its user.
        self.hub.permissions.install(session, self.user)
        self.send_control({"type": "stream_created", "streamId": sid})
        self.hub.event("connect", f"{session.id} opened ({kind} stream)")
        session.start()

    def end_stream(self, st: StreamOutlet, *, announce: bool, reason: str | None = None) -> None:
        """Forget a stream; ``announce`` sends ``stream_close`` (the server ended it)."""
        if st.destroyed:
            return
        st.destroyed = True
        self.held -= st.held
        st.held = 0
        self.charge_input(self.held + self.decoder.buffered, self.held)
        if self.streams.get(st.stream_id) is st:
            del self.streams[st.stream_id]
        if st.queue and not announce:
            self.drop_queue(st)
        session = st.session
        if announce and not self.closing:
            if st.queue:
                # After the stream's last bytes (e.g. its closing message), not before.
                frame = m.encode_control({"type": "stream_close", "streamId": st.stream_id})
                self.control.frames_out += 1
                self.enqueue(st, [frame])
            else:
                self.send_control({"type": "stream_close", "streamId": st.stream_id})
        if session is not None:
            if reason is not None and session.close_reason is None:
                session.close_reason = reason
            session.closing = True
            self.hub.end_session(session, session.close_reason or CloseReason.CLIENT_CLOSED)
            # The stream and its session refer to each other: drop one side.
            st.session = None

    # --- closing ----------------------------------------------------------
    def close(
        self, reason: str, *, notify: bool = True, flush: bool = True, detail: str = ""
    ) -> None:
        if self.closing:
            return
        if notify and flush:
            # Each stream session says goodbye in its own protocol (and gets its
            # stream_close), then the connection itself on the control stream.
            self._closing_streams = True
            try:
                for st in list(self.streams.values()):
                    if st.session is not None and not st.session.closing:
                        st.session.close(reason, detail=detail)
                wire = WIRE_REASON.get(reason)
                if wire is not None:
                    self.send_control({"type": "closing", "reason": wire})
            finally:
                self._closing_streams = False
        if flush:
            self.pump(everything=True)
        super().close(reason, notify=False, flush=flush, detail=detail)

    def notify(self, message: dict[str, Any]) -> None:
        if not self.closing:
            self.send_control(message)

    def closed(self) -> None:
        reason = self.close_reason or CloseReason.CLIENT_CLOSED
        for st in list(self.streams.values()):
            st.destroyed = True
            session = st.session
            if session is not None:
                if session.close_reason is None:
                    session.close_reason = reason
                self.hub.end_session(session, session.close_reason)
                st.session = None
            self.drop_queue(st)
        self.streams.clear()
        self._ready.clear()
        self.drop_queue(self.control)
        super().closed()

    def mux_info(self, streams: bool = True) -> MuxConnectionInfo:
        """The connection's record; with ``streams`` False (a page of them), without
        its streams' records: a page costs its rows, not their streams."""
        outlet = self.outlet
        return MuxConnectionInfo(
            id=self.id,
            connected_at=self.connected_at,
            stream_count=len(self.streams),
            bytes_in=outlet.bytes_read,
            bytes_out=outlet.bytes_written,
            streams=()
            if not streams
            else tuple(
                StreamInfo(
                    stream_id=st.stream_id,
                    kind=st.session.protocol if st.session is not None else "?",
                    session_id=st.session.id if st.session is not None else "",
                    bytes_in=st.bytes_read,
                    bytes_out=st.bytes_written,
                    frames_in=st.frames_in,
                    frames_out=st.frames_out,
                    opened_at=st.opened_at,
                )
                for st in self.streams.values()
            ),
        )
