"""The issue's ratchet attack on a real ``--headless`` server process: one mux
connection at a time, each stream holding a partial 1 MiB frame, eight rounds.
The server's RSS must not climb with the rounds (issue 11, item 2)."""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import sys
import time

from helpers import rss

MiB = 1024 * 1024
STREAMS = 64
ROUNDS = 8
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(mux\)")


def mframe(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


def one_round(port: int) -> None:
    """Open STREAMS json streams, each with all but the last byte of a 1 MiB frame; leave."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        part = b"1048576\n" + b"x" * (MiB - 1)
        for sid in range(1, 2 * STREAMS, 2):
            create = {"type": "stream_create", "streamId": sid, "streamType": "json"}
            s.sendall(mframe(0, json.dumps(create).encode()))
            # In mux frames of at most 1 MiB.
            s.sendall(mframe(sid, part[: MiB // 2]) + mframe(sid, part[MiB // 2 :]))
        ping = json.dumps({"type": "ping", "ref": "end"}).encode()
        s.sendall(mframe(0, ping))
        got = b""
        deadline = time.monotonic() + 30
        while b'"ref":"end"' not in got and time.monotonic() < deadline:
            got += s.recv(65536)
        assert b'"ref":"end"' in got


def test_rss_does_not_ratchet_up_with_reconnects_holding_partial_frames(tmp_path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "verb_console", "--headless", "--port", "0", "--protocol", "mux"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = b""
        while (m := LISTENING.search(line)) is None:
            line = proc.stderr.readline()
            assert line, "the server exited"
        port = int(m.group(1))
        figures = []
        for _ in range(ROUNDS):
            one_round(port)
            time.sleep(0.3)
            figures.append(rss(proc.pid))
        held = STREAMS * MiB
        # A round holds 64 MiB while it lasts; after eight, the server holds no
        # more than one round's worth above where the first round left it.
        assert figures[-1] - figures[0] < held, [f // MiB for f in figures]
        print("rss MiB per round:", [f // MiB for f in figures])
    finally:
        proc.terminate()
        proc.wait(10)
