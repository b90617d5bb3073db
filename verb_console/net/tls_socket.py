"""The server side of TLS in :class:`~verb_console.net.socket.TCPSocket`: deciding on
the first byte, feeding the :class:`~verb_console.net.tls.TLSLayer` from the shared read
buffer, the handshake timeout and the ``secure`` event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .tls import TLS_RECORD_HANDSHAKE, TLSCounters, TLSError, TLSLayer, TLSOptions, failure_kind


class TLSSocketMixin:
    """The TLS state and methods of ``TCPSocket``."""

    # ``wire`` is TCPSocket's (see there); here because TLS switches it off.
    __slots__ = ("_tls", "_tls_counters", "_tls_options", "_tls_timer", "tls_error", "wire")

    _tls: TLSLayer | None
    _tls_counters: TLSCounters | None
    _tls_options: TLSOptions | None
    _tls_timer: asyncio.TimerHandle | None
    tls_error: str | None  # why TLS ended the connection, if it did
    wire: Callable[[bytes], object] | None

    if TYPE_CHECKING:  # provided by TCPSocket
        transport: asyncio.Transport | None
        destroyed: bool
        allow_half_open: bool
        last_received: float
        _rbuf: memoryview

        def _deliver(self, data: bytes) -> None: ...
        def _emit(self, event: str, *args: Any) -> None: ...
        def eof_received(self) -> bool | None: ...
        def end(self, data: bytes | str | None = None) -> None: ...

    def _init_tls(self) -> None:
        # TLS (server side): the layer once TLS is spoken; the options while the
        # first byte is awaited.
        self._tls = None
        self._tls_options = None
        self._tls_timer = None
        self._tls_counters = None
        self.tls_error = None

    def use_tls(self, options: TLSOptions) -> None:
        """Speak TLS on this accepted connection (from its first byte, or, with
        ``options.detect``, if its first byte starts a TLS handshake)."""
        # Bytes go through the TLS layer now: no writing past it to the transport.
        self.wire = None
        self._tls_counters = options.counters
        if options.detect:
            self._tls_options = options
        else:
            self._tls = TLSLayer(options.context)
        if options.handshake_timeout > 0:
            loop = asyncio.get_running_loop()
            self._tls_timer = loop.call_later(options.handshake_timeout, self._tls_expired)

    @property
    def tls(self) -> TLSLayer | None:
        """The connection's TLS layer, once it speaks TLS."""
        return self._tls

    @property
    def securing(self) -> bool:
        """True while a TLS handshake is awaited or under way (``secure`` fires after)."""
        tls = self._tls
        return tls is not None and not tls.established

    def _tls_expired(self) -> None:
        self._tls_timer = None
        if self._tls is None or not self._tls.established:
            self._tls_abort("handshake_timeout")

    def _tls_abort(self, why: str) -> None:
        self.tls_error = why
        counters = self._tls_counters
        if counters is not None and (self._tls is None or not self._tls.established):
            counters.failures[failure_kind(why)] += 1
        self._tls_options = None
        if self._tls_timer is not None:
            self._tls_timer.cancel()
            self._tls_timer = None
        t = self.transport
        if t is not None and not self.destroyed:
            tls = self._tls
            if tls is not None:
                alert = tls.outgoing()  # the alert OpenSSL made, if any
                if alert:
                    t.write(alert)
                t.close()
            else:
                t.abort()

    def _tls_received(self, nbytes: int) -> None:
        rbuf = self._rbuf
        tls = self._tls
        if tls is None:
            # A detecting listener: the first byte decides.
            options = self._tls_options
            assert options is not None
            self._tls_options = None
            if rbuf[0] != TLS_RECORD_HANDSHAKE:
                if options.required:
                    self._tls_abort("plaintext")
                    return
                if self._tls_timer is not None:
                    self._tls_timer.cancel()
                    self._tls_timer = None
                if self.transport is not None and not self.destroyed:
                    self.wire = self.transport.write  # plaintext: as if TLS were off
                self._deliver(bytes(rbuf[:nbytes]))
                return
            self._tls = tls = TLSLayer(options.context)
        was_established = tls.established
        data: memoryview | bytes = rbuf[:nbytes]
        while True:
            try:
                got = tls.receive(data, rbuf)
            except TLSError as exc:
                self._tls_abort(str(exc))
                return
            data = b""
            out = tls.outgoing()
            if out and self.transport is not None and not self.destroyed:
                self.transport.write(out)
            if tls.established and not was_established:
                was_established = True
                if self._tls_counters is not None:
                    self._tls_counters.handshakes += 1
                if self._tls_timer is not None:
                    self._tls_timer.cancel()
                    self._tls_timer = None
                self._emit("secure")
            t = self.transport
            if got == 0 or self.destroyed or t is None or t.is_closing():
                if tls.peer_closed and t is not None and not t.is_closing():
                    # close_notify is TLS's end of stream: as a FIN is in plaintext.
                    self.eof_received()
                    if not self.allow_half_open:
                        self.end()
                return
            self._deliver(bytes(rbuf[: len(rbuf) if got < 0 else got]))
            if got > 0:
                return

    def _tls_lost(self) -> None:
        """The connection is gone: stop the timer; a handshake cut short is a failure."""
        if self._tls_timer is not None:
            self._tls_timer.cancel()
            self._tls_timer = None
        tls = self._tls
        counters = self._tls_counters
        if tls is not None and counters is not None and not tls.established and not self.tls_error:
            counters.failures["closed"] += 1
