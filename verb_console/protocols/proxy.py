"""The PROXY protocol, versions 1 (text) and 2 (binary), as a sans-IO decoder
(PROTOCOL.md section 12.4).

A load balancer starts each connection it forwards with one header naming the
client's address. :class:`ProxyDecoder` takes bytes as they arrive, in any
split, and gives back the header and the bytes after it once the header is
whole; anything that cannot be a header, or a header longer than the limits
(v1: 107 bytes, v2: 536), raises :class:`ProxyHeaderError` as soon as it shows.
It never touches a socket or a clock: whoever reads the connection decides
what a failure costs (closing with no reply) and how long to wait.

Only what the server needs is kept: the source address and port, or None for
a header that names none (v1 ``UNKNOWN``, v2 ``LOCAL``, a v2 family other than
TCP or UDP over IPv4 or IPv6), where the connection keeps the proxy's own
address. v2 TLVs are skipped.
"""

from __future__ import annotations

import struct
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import NamedTuple

__all__ = [
    "V1_MAX",
    "V2_MAX",
    "V2_SIGNATURE",
    "ProxyDecoder",
    "ProxyHeader",
    "ProxyHeaderError",
    "encode_v1",
    "encode_v2",
]

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the whole line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version and command, family, length
V2_MAX = 536  # 16 + 520: the largest header the spec allows a receiver to expect
_V2_HEAD = struct.Struct("!12sBBH")
_V4 = struct.Struct("!4s4sHH")
_V6 = struct.Struct("!16s16sHH")
_V4_MAPPED = bytes(10) + b"\xff\xff"
_V1_FAMILIES = {b"TCP4": AF_INET, b"TCP6": AF_INET6}


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY header (the message says why, in one line)."""


class ProxyHeader(NamedTuple):
    """What a header says: the client's address and port, or None for both when
    the connection keeps the proxy's own address (a health check, ``UNKNOWN``)."""

    version: int
    address: str | None
    port: int | None


def _port(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5 or (len(raw) > 1 and raw[:1] == b"0"):
        raise ProxyHeaderError(f"v1: bad port {raw[:8]!r}")
    value = int(raw)
    if value > 65535:
        raise ProxyHeaderError(f"v1: port {value} out of range")
    return value


def _v1(line: bytes) -> ProxyHeader:
    """One v1 line, CRLF removed."""
    parts = line.split(b" ")
    if parts[1:2] == [b"UNKNOWN"]:
        # The rest of the line is to be ignored (the spec): the proxy's address stays.
        return ProxyHeader(1, None, None)
    if len(parts) != 6:
        raise ProxyHeaderError(f"v1: expected 6 fields, got {len(parts)}")
    family = parts[1]
    af = _V1_FAMILIES.get(family)
    if af is None:
        raise ProxyHeaderError(f"v1: unknown protocol {family[:8]!r}")
    try:
        # inet_pton checks the text (a leading zero, a v6 address for TCP4...);
        # inet_ntop gives the canonical form (IPv6 compressed, lower case).
        source = inet_ntop(af, inet_pton(af, parts[2].decode("ascii")))
        inet_pton(af, parts[3].decode("ascii"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"v1: bad {family.decode()} address") from None
    sport = _port(parts[4])
    _port(parts[5])
    return ProxyHeader(1, source, sport)


def _v2(command: int, family: int, body: bytes) -> ProxyHeader:
    if command >> 4 != 2:
        raise ProxyHeaderError(f"v2: version {command >> 4}, expected 2")
    cmd = command & 0x0F
    if cmd == 0x0:  # LOCAL: the proxy's own connection (a health check)
        return ProxyHeader(2, None, None)
    if cmd != 0x1:
        raise ProxyHeaderError(f"v2: unknown command {cmd}")
    fam, transport = family >> 4, family & 0x0F
    if transport > 2 or fam > 3:
        raise ProxyHeaderError(f"v2: unknown family 0x{family:02x}")
    if fam == 1 and transport:
        if len(body) < _V4.size:
            raise ProxyHeaderError("v2: IPv4 addresses need 12 bytes")
        src, _dst, sport, _dport = _V4.unpack_from(body)
        return ProxyHeader(2, inet_ntop(AF_INET, src), sport)
    if fam == 2 and transport:
        if len(body) < _V6.size:
            raise ProxyHeaderError("v2: IPv6 addresses need 36 bytes")
        src, _dst, sport, _dport = _V6.unpack_from(body)
        if src[:12] == _V4_MAPPED:
            return ProxyHeader(2, inet_ntop(AF_INET, src[12:]), sport)
        return ProxyHeader(2, inet_ntop(AF_INET6, src), sport)
    # UNSPEC, or a Unix socket: no address to use, the proxy's stays.
    return ProxyHeader(2, None, None)


class ProxyDecoder:
    """Reads one PROXY header from the start of a byte stream."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def receive(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """Add ``data``; the header and the bytes after it once it is whole, else
        None (more is needed). Raises :class:`ProxyHeaderError`."""
        buf = self._buf + data if self._buf else bytes(data)
        n = len(buf)
        if buf[:1] == b"\r":
            head = min(n, 12)
            if buf[:head] != V2_SIGNATURE[:head]:
                raise ProxyHeaderError("not a PROXY header")
            if n < V2_FIXED:
                self._buf = buf
                return None
            _sig, command, family, length = _V2_HEAD.unpack_from(buf)
            end = V2_FIXED + length
            if end > V2_MAX:
                raise ProxyHeaderError(f"v2: a header of {end} bytes is over {V2_MAX}")
            if command >> 4 != 2:
                raise ProxyHeaderError(f"v2: version {command >> 4}, expected 2")
            if n < end:
                self._buf = buf
                return None
            self._buf = b""
            return _v2(command, family, buf[V2_FIXED:end]), buf[end:]
        head = min(n, len(V1_PREFIX))
        if buf[:head] != V1_PREFIX[:head]:
            raise ProxyHeaderError("not a PROXY header")
        nl = buf.find(b"\r\n", 0, V1_MAX)
        if nl < 0:
            if n >= V1_MAX:
                raise ProxyHeaderError(f"v1: no CRLF within {V1_MAX} bytes")
            if b"\n" in buf:
                raise ProxyHeaderError("v1: a line must end in CRLF")
            self._buf = buf
            return None
        self._buf = b""
        return _v1(buf[:nl]), buf[nl + 2 :]

    @property
    def buffered(self) -> int:
        return len(self._buf)


def encode_v1(source: tuple[str, int], dest: tuple[str, int]) -> bytes:
    """A v1 header (what a load balancer sends; for tests and benchmarks)."""
    family = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {family} {source[0]} {dest[0]} {source[1]} {dest[1]}\r\n".encode()


def encode_v2(
    source: tuple[str, int] | None, dest: tuple[str, int] | None = None, tlv: bytes = b""
) -> bytes:
    """A v2 header: PROXY with ``source``, or LOCAL when it is None."""
    if source is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tlv)) + tlv
    if dest is None:
        dest = ("::", 0) if ":" in source[0] else ("0.0.0.0", 0)
    # inet_pton, not ipaddress: a load generator encodes one per connection.
    if ":" in source[0]:
        src, dst = inet_pton(AF_INET6, source[0]), inet_pton(AF_INET6, dest[0])
        body = _V6.pack(src, dst, source[1], dest[1])
        family = 0x21
    else:
        src, dst = inet_pton(AF_INET, source[0]), inet_pton(AF_INET, dest[0])
        body = _V4.pack(src, dst, source[1], dest[1])
        family = 0x11
    body += tlv
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body
