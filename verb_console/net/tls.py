"""TLS as one more sans-IO layer: an ``ssl.SSLObject`` between two ``ssl.MemoryBIO``.

asyncio's own TLS transport keeps a 256 KiB buffer per connection, and
upgrading a connection with ``start_tls`` loses buffered data on some loops.
Here the socket stays a plain TCP transport on every loop: ciphertext read
into the server's shared read buffer is handed to the connection's
:class:`TLSLayer`, and what it decrypts is read back into that same buffer, so
an idle TLS connection holds only OpenSSL's own state.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "HANDSHAKE_FAILURES",
    "TLS_RECORD_HANDSHAKE",
    "TLSCounters",
    "TLSError",
    "TLSLayer",
    "TLSOptions",
    "failure_kind",
    "make_server_context",
    "peer_common_name",
]

# The first byte of a TLS handshake record (a ClientHello starts with it).
TLS_RECORD_HANDSHAKE = 0x16


# Why handshakes fail, in few enough words to be a metric's label: no handshake in
# time, plaintext where TLS was required, a client certificate refused, the peer
# gone halfway, any other TLS protocol error.
HANDSHAKE_FAILURES = ("timeout", "plaintext", "certificate", "closed", "protocol")
_PLAINTEXT_REASONS = ("plaintext", "http_request", "https_proxy_request")


def failure_kind(why: str) -> str:
    """Which of :data:`HANDSHAKE_FAILURES` a TLS error's reason (OpenSSL's word) is."""
    if why == "handshake_timeout":
        return "timeout"
    if why in _PLAINTEXT_REASONS:
        return "plaintext"
    if "cert" in why or "unknown_ca" in why:
        return "certificate"
    return "protocol"


class TLSCounters:
    """A listener's TLS handshakes, counted by its connections (read by the metrics)."""

    __slots__ = ("failures", "handshakes")

    def __init__(self) -> None:
        self.handshakes = 0  # completed
        self.failures = dict.fromkeys(HANDSHAKE_FAILURES, 0)


class TLSError(Exception):
    """The TLS layer failed (a bad handshake, a bad record); the connection must end."""


@dataclass(slots=True)
class TLSOptions:
    """How a server's connections speak TLS.

    ``detect``: the first byte decides (``0x16`` starts TLS, anything else is
    plaintext unless ``required``); otherwise TLS from the first byte.
    ``context`` may be replaced at any time (a reload): new connections use it.
    """

    context: ssl.SSLContext
    detect: bool = False
    required: bool = False
    handshake_timeout: float = 10.0  # seconds; 0: none
    # Kept across reloads (the context is replaced, the options are not).
    counters: TLSCounters = field(default_factory=TLSCounters)


def make_server_context(
    cert_file: str, key_file: str, client_ca: str | None = None
) -> ssl.SSLContext:
    """A server context serving TLS 1.2 and 1.3 only; ``client_ca`` requires client
    certificates signed by that CA. Raises ``OSError``/``ssl.SSLError`` on bad files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca is not None:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_common_name(obj: ssl.SSLObject) -> str | None:
    """The subject's common name of a verified peer certificate, if there is one."""
    cert = obj.getpeercert()
    if not cert:
        return None
    subject: Any = cert.get("subject", ())
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class TLSLayer:
    """One server-side connection's TLS state, with no I/O of its own.

    :meth:`receive` takes ciphertext and decrypts what it can into a caller's
    buffer; :meth:`send` encrypts; :meth:`outgoing` gives the ciphertext to put
    on the wire (handshake messages and alerts included). Plaintext sent before
    the handshake has finished is kept and encrypted as soon as it has.
    """

    __slots__ = (
        "_early",
        "_in",
        "_obj",
        "_out",
        "established",
        "peer_closed",
        "peer_name",
        "version",
    )

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self.established = False
        self.peer_closed = False  # the peer sent close_notify
        self._early: list[bytes] | None = None
        self.peer_name: str | None = None  # the client certificate's common name
        self.version: str | None = None

    def receive(self, data: memoryview | bytes, into: memoryview) -> int:
        """Feed ciphertext; decrypt into ``into`` and return how many bytes were written.

        Returns -1 when ``into`` filled up and more plaintext is waiting (call
        again with empty ``data`` after using it). Raises :class:`TLSError`.
        """
        if data:
            self._in.write(data)
        obj = self._obj
        try:
            if not self.established:
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    return 0
                self._established()
            size = len(into)
            got = 0
            while got < size:
                try:
                    n: int = obj.read(size - got, into[got:])  # type: ignore[assignment]
                except ssl.SSLWantReadError:
                    return got
                except ssl.SSLZeroReturnError:
                    # The peer's close_notify: no more data will come.
                    self.peer_closed = True
                    return got
                if n == 0:  # Python reports the peer's close_notify this way too
                    self.peer_closed = True
                    return got
                got += n
            return -1 if self._in.pending or obj.pending() else got
        except ssl.SSLError as exc:
            raise TLSError(_describe(exc)) from None

    def _established(self) -> None:
        self.established = True
        self.version = self._obj.version()
        self.peer_name = peer_common_name(self._obj)
        early, self._early = self._early, None
        if early:
            for chunk in early:
                self._obj.write(chunk)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` (kept until the handshake is done if it is not yet)."""
        if not self.established:
            if self._early is None:
                self._early = []
            self._early.append(bytes(data))
            return
        try:
            self._obj.write(data)
        except ssl.SSLError as exc:
            raise TLSError(_describe(exc)) from None

    def outgoing(self) -> bytes:
        """Ciphertext waiting to be written to the socket (b"" when none)."""
        out = self._out
        return out.read() if out.pending else b""

    def close(self) -> None:
        """Queue a close_notify alert (best effort: the connection is ending anyway)."""
        if not self.established:
            return
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._obj.unwrap()


def _describe(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason).lower()
    return str(exc) or type(exc).__name__
