"""Re-join amplification on a real ``--headless`` process: one 256 KiB write of
``join_room`` for a room of 1,001 members asks for thousands of 21 KB member
lists. They must be built only as fast as the socket takes them, not all at once
before any output limit applies, and every one must still arrive."""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from helpers import peak_rss

MiB = 1024 * 1024
MUX_CONNECTIONS = 4
STREAMS = 250  # per mux connection: 1,000 members, and the attacker makes 1,001
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(auto\)")


def jframe(message: object) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(body), body)


def mframe(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


def drain(sock: socket.socket, stop: threading.Event) -> None:
    """A member that keeps reading (and throws away) everything it is sent."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            if not sock.recv(1 << 20):
                return
        except TimeoutError:
            continue
        except OSError:
            return


class Frames:
    """The json frames read from one socket, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.ready: list[dict[str, Any]] = []

    def more(self) -> bytes:
        """The next bytes of the json stream."""
        data = self.sock.recv(1 << 20)
        assert data, f"closed with {len(self.ready)} frames unread"
        return data

    def read(self, want: int, timeout: float) -> list[dict[str, Any]]:
        """The next ``want`` frames (fewer if ``timeout`` passes first)."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(1.0)
        while len(self.ready) < want and time.monotonic() < deadline:
            try:
                data = self.more()
            except TimeoutError:
                continue
            buf = self.buf + data
            off = 0
            while True:
                nl = buf.find(b"\n", off)
                if nl < 0:
                    break
                need = int(buf[off:nl])
                if len(buf) < nl + 1 + need:
                    break
                self.ready.append(json.loads(buf[nl + 1 : nl + 1 + need]))
                off = nl + 1 + need
            self.buf = buf[off:]
        out, self.ready = self.ready[:want], self.ready[want:]
        return out

    def next(self) -> dict[str, Any]:
        got = self.read(1, 10)
        assert got, "no frame within 10 s"
        return got[0]


class StreamFrames(Frames):
    """The json frames of stream 1 of a mux connection (control frames skipped)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.raw = b""

    def more(self) -> bytes:
        self.raw += super().more()
        out = []
        raw = self.raw
        off = 0
        while len(raw) - off >= 8:
            sid, n = struct.unpack_from(">II", raw, off)
            if len(raw) - off - 8 < n:
                break
            if sid == 1:
                out.append(raw[off + 8 : off + 8 + n])
            off += 8 + n
        self.raw = raw[off:]
        return b"".join(out)


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, size: int) -> None:
        self.proc = proc
        self.port = port
        self.size = size  # members of room "big"


# One worker runs the module's tests, so the 1,000-member server starts once.
pytestmark = pytest.mark.xdist_group("rejoin-big-room")


@pytest.fixture(scope="module")
def big_room(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A headless server whose room "big" has 1,000 members who keep reading."""
    tmp_path = tmp_path_factory.mktemp("rejoin")
    config = tmp_path / "server.toml"
    config.write_text("max_per_ip = 0\n")
    cmd = [sys.executable, "-m", "verb_console", "--headless", "--port", "0", "--protocol"]
    proc = subprocess.Popen(
        [*cmd, "auto", "--config", str(config)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stop = threading.Event()
    members: list[socket.socket] = []
    try:
        assert proc.stderr is not None
        line = b""
        while (m := LISTENING.search(line)) is None:
            line = proc.stderr.readline()
            assert line, "the server exited"
        port = int(m.group(1))
        for _ in range(MUX_CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            members.append(s)
            threading.Thread(target=drain, args=(s, stop), daemon=True).start()
            out = []
            for sid in range(1, 2 * STREAMS, 2):
                create = {"type": "stream_create", "streamId": sid, "streamType": "json"}
                out.append(mframe(0, json.dumps(create).encode()))
                out.append(mframe(sid, jframe({"type": "join_room", "room": "big"})))
            s.sendall(b"".join(out))
        yield Server(proc, port, MUX_CONNECTIONS * STREAMS)
    finally:
        stop.set()
        for s in members:
            s.close()
        proc.kill()
        proc.wait(10)


def attack(server: Server, attacker: socket.socket, frames: Frames, wrap: Any) -> None:
    """Join "big" until all 1,000 members are in, then send 256 KiB of re-joins
    unread for 3 s, then read every reply."""
    size = 0
    deadline = time.monotonic() + 60
    while size < 1 + server.size:
        assert time.monotonic() < deadline, size
        attacker.sendall(wrap(jframe({"type": "join_room", "room": "big"})))
        reply = frames.next()
        while reply["type"] == "user_joined":
            reply = frames.next()
        assert reply["type"] == "joined", reply
        size = len(reply["members"])
        time.sleep(0.1)
    time.sleep(0.5)
    pid = server.proc.pid
    before = peak_rss(pid)
    one = jframe({"type": "join_room", "room": "big"})
    count = 256 * 1024 // len(one)
    # Sent, and not read for a while: the replies wait for the socket.
    attacker.sendall(wrap(one * count))
    time.sleep(3.0)
    during = peak_rss(pid)
    replies = frames.read(count, 120)
    after = peak_rss(pid)
    assert len(replies) == count
    assert all(r["type"] == "joined" and len(r["members"]) == size for r in replies)
    reply_size = len(jframe(replies[0]))
    grew = (after - before) / MiB
    print(
        f"{count} re-joins, {reply_size} B each ({count * reply_size / MiB:.0f} MiB):"
        f" peak RSS {before / MiB:.0f} -> {during / MiB:.0f} (unread)"
        f" -> {after / MiB:.0f} MiB (read)"
    )
    # The replies total over 100 MiB; what the server holds at once is bounded
    # by its output limit, not by how many were asked for.
    assert count * reply_size > 100 * MiB
    assert grew < 16, f"peak RSS grew by {grew:.0f} MiB"


def test_rejoins_on_a_json_connection_are_built_as_the_socket_takes_them(big_room) -> None:
    with socket.create_connection(("127.0.0.1", big_room.port), timeout=10) as attacker:
        # An auto listener knows the protocol from the first bytes: then the welcome.
        attacker.sendall(jframe({"type": "ping"}))
        frames = Frames(attacker)
        assert [f["type"] for f in frames.read(2, 10)] == ["welcome", "pong"]
        attack(big_room, attacker, frames, lambda data: data)


def test_rejoins_on_a_mux_stream_are_built_as_the_connection_takes_them(big_room) -> None:
    with socket.create_connection(("127.0.0.1", big_room.port), timeout=10) as attacker:
        create = {"type": "stream_create", "streamId": 1, "streamType": "json"}
        attacker.sendall(mframe(0, json.dumps(create).encode()))
        frames = StreamFrames(attacker)
        assert frames.next()["type"] == "welcome"
        attack(big_room, attacker, frames, lambda data: mframe(1, data))
