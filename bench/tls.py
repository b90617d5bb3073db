"""TLS and authentication costs, each as a ratio measured side by side in one run.

- server CPU per json ping over TLS / in plaintext (target at most 1.3x);
- server CPU per json ping with authentication on / off (at most 1.02x: after the
  first message authentication adds nothing);
- binary upload throughput over TLS / in plaintext (at least 0.5x);
- server memory per idle TLS connection with 10,000 held (at most 50 KB);
- TLS handshakes per second and server CPU per handshake, verb-console against a
  plain ``asyncio.start_server(ssl=...)`` on the same loop (uvloop).

The servers run pinned to one core, the load to the other (as bench/compare.py).
The load is Python: its own TLS costs it, not the server, whose CPU is read from
/proc. Certificates are made for the run by trustme (the test extra).

    .venv/bin/python bench/tls.py [--rounds 3] [--seconds 4] [--idle 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    Server,
    Servers,
    exit_on_signals,
    machine,
    median,
    pin_load,
    raise_nofile,
    result_path,
    table,
    verb_console_cmd,
    write_json,
)

READY = re.compile(r"listening on \S+:(\d+) \(\w+(?:, tls)?\)")
PEER_READY = re.compile(r"asyncio tls peer listening on (\d+)")
TOKEN = "bench-token"
WELCOME = b"Welcome to TCP server!\n"


# --------------------------------------------------------------- servers


def verb_server(name: str, protocol: str, certs: dict[str, str] | None, *extra: str) -> Server:
    argv = [*verb_console_cmd(), "--headless", "--port", "0", "--protocol", protocol]
    argv += ["--max-per-ip", "0", "--max-connections", "30000", "--idle-timeout", "0"]
    if certs is not None:
        argv += ["--tls-cert", certs["cert"], "--tls-key", certs["key"]]
    return Server(
        name,
        [*argv, *extra],
        READY,
        env={"VERB_CONSOLE_LOOP": "uvloop"},
        cwd=Path(certs["dir"] if certs else tempfile.gettempdir()),
        nofile=30000,
    )


def peer_server(certs: dict[str, str]) -> Server:
    """The smallest TLS server asyncio has: start_server(ssl=...) on uvloop, same greeting."""
    return Server(
        "asyncio start_server(ssl)",
        [sys.executable, __file__, "peer", certs["cert"], certs["key"]],
        PEER_READY,
        nofile=30000,
    )


async def _peer_main(cert: str, key: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(WELCOME)
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, ssl.SSLError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, backlog=511)
    print(f"asyncio tls peer listening on {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def make_certs(directory: Path) -> dict[str, str]:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    paths = {"dir": str(directory)}
    for name, pem in (("cert", leaf.cert_chain_pems[0]), ("key", leaf.private_key_pem)):
        paths[name] = str(directory / f"server.{name}")
        pem.write_to_path(paths[name])
    paths["ca"] = str(directory / "ca.pem")
    ca.cert_pem.write_to_path(paths["ca"])
    tokens = directory / "tokens"
    tokens.write_text(f"bench:{hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    paths["tokens"] = str(tokens)
    return paths


# --------------------------------------------------------------- load (child process)


def client_context(ca: str | None) -> ssl.SSLContext | None:
    if ca is None:
        return None
    ctx = ssl.create_default_context(cafile=ca)
    return ctx


def frame(obj: Any) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(body), body)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readuntil(b"\n")
    return await reader.readexactly(int(header))


async def load_ping(port: int, ca: str | None, conns: int, depth: int, seconds: float) -> dict:
    ctx = client_context(ca)
    tls = {"ssl": ctx, "server_hostname": "localhost"} if ctx else {}
    auth = os.environ.get("BENCH_AUTH") == "1"
    pings = frame({"type": "ping"}) * depth
    counts = [0] * conns
    start = asyncio.Event()
    deadline = [0.0]

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22, **tls)
        await read_frame(reader)
        if auth:
            writer.write(frame({"type": "auth", "token": TOKEN}))
            await read_frame(reader)
        await start.wait()
        while time.monotonic() < deadline[0]:
            writer.write(pings)
            for _ in range(depth):
                await read_frame(reader)
            counts[i] += depth
        writer.close()

    tasks = [asyncio.create_task(one(i)) for i in range(conns)]
    await asyncio.sleep(0.5)
    deadline[0] = time.monotonic() + seconds
    print("GO", flush=True)
    start.set()
    await asyncio.gather(*tasks)
    return {"msgs": sum(counts), "seconds": seconds}


async def load_upload(port: int, ca: str | None, size: int) -> dict:
    ctx = client_context(ca)
    tls = {"ssl": ctx, "server_hostname": "localhost"} if ctx else {}
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22, **tls)
    chunk = os.urandom(512 * 1024)
    name = f"bench-{os.getpid()}-{time.monotonic_ns()}.bin"
    start = json.dumps({"transferId": "t", "filename": name, "fileSize": size}).encode()
    print("GO", flush=True)
    began = time.monotonic()
    writer.write(struct.pack(">HIH", 0x20, len(start), 1) + start)
    head = struct.pack(">HIH", 0x20, len(chunk), 2)
    sent = 0
    while sent < size:
        writer.write(head + chunk)
        sent += len(chunk)
        await writer.drain()
    writer.write(struct.pack(">HIH", 0x20, 0, 4))
    while True:
        _kind, n, _ = struct.unpack(">HIH", await reader.readexactly(8))
        reply = json.loads(await reader.readexactly(n))
        if reply.get("type") in ("file_complete", "error"):
            break
    took = time.monotonic() - began
    assert reply["type"] == "file_complete", reply
    writer.close()
    return {"bytes": size, "seconds": took, "mb_per_s": size / took / 1e6, "file": name}


async def tls_open(port: int, ctx: ssl.SSLContext) -> tuple[socket.socket, ssl.SSLObject]:
    """A TLS client by hand (SSLObject over a raw socket): a few KB each, so 10,000 fit."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                await loop.sock_sendall(sock, outgoing.read())
            data = await loop.sock_recv(sock, 65536)
            if not data:
                raise ConnectionError("closed during the handshake") from None
            incoming.write(data)
    if outgoing.pending:
        await loop.sock_sendall(sock, outgoing.read())
    # The greeting proves the session is up on the server.
    got = b""
    while not got.endswith(b"\n"):
        try:
            got += obj.read(1024)
        except ssl.SSLWantReadError:
            data = await loop.sock_recv(sock, 65536)
            if not data:
                raise ConnectionError("closed before the greeting") from None
            incoming.write(data)
    return sock, obj


async def load_handshakes(port: int, ca: str, seconds: float, parallel: int) -> dict:
    ctx = client_context(ca)
    assert ctx is not None
    done = [0]
    print("GO", flush=True)
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            sock, _ = await tls_open(port, ctx)
            sock.close()
            done[0] += 1

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return {"handshakes": done[0], "seconds": seconds}


async def load_idle(port: int, ca: str | None, count: int) -> dict:
    raise_nofile(count + 1000)
    ctx = client_context(ca)
    loop = asyncio.get_running_loop()
    held: list[Any] = []
    sem = asyncio.Semaphore(100)

    async def one() -> None:
        async with sem:
            if ctx is not None:
                held.append(await tls_open(port, ctx))
            else:
                sock = socket.socket()
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", port))
                await loop.sock_recv(sock, 100)
                held.append(sock)

    await asyncio.gather(*(one() for _ in range(count)))
    print(json.dumps({"held": len(held)}), flush=True)
    # Hold until the parent has read the server's memory.
    await loop.run_in_executor(None, sys.stdin.readline)
    return {"held": len(held)}


def child(argv: list[str]) -> None:
    import uvloop

    kind, port, ca = argv[0], int(argv[1]), (argv[2] if argv[2] != "-" else None)
    rest = argv[3:]
    if kind == "ping":
        coro: Any = load_ping(port, ca, int(rest[0]), int(rest[1]), float(rest[2]))
    elif kind == "upload":
        coro = load_upload(port, ca, int(rest[0]))
    elif kind == "handshakes":
        assert ca is not None
        coro = load_handshakes(port, ca, float(rest[0]), int(rest[1]))
    else:
        coro = load_idle(port, ca, int(rest[0]))
    print(json.dumps(uvloop.run(coro)), flush=True)


# --------------------------------------------------------------- parent


def run_load(server: Server, kind: str, ca: str | None, *args: Any) -> dict:
    """Run one load child; the server's CPU is counted from the child's GO to its end."""
    cmd = [sys.executable, __file__, "client", kind, str(server.port), ca or "-", *map(str, args)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, preexec_fn=pin_load
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    assert line.strip() == "GO", line
    cpu0 = server.cpu_s()
    out = proc.stdout.read()
    proc.wait(300)
    cpu1 = server.cpu_s()
    result: dict = json.loads(out.strip().splitlines()[-1])
    result["server_cpu_s"] = cpu1 - cpu0
    return result


def idle_kb(servers: Servers, server: Server, ca: str | None, count: int) -> float:
    servers.start(server)
    time.sleep(0.3)
    before = server.rss_kib()
    cmd = [sys.executable, __file__, "client", "idle", str(server.port), ca or "-", str(count)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, preexec_fn=pin_load
    )
    assert proc.stdout is not None and proc.stdin is not None
    held = json.loads(proc.stdout.readline())["held"]
    time.sleep(1.0)
    after = server.rss_kib()
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(120)
    servers.stop(server)
    assert held == count, held
    return (after - before) * 1024 / count / 1000  # KB (1000 bytes) per connection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--upload-mib", type=int, default=256)
    parser.add_argument("--idle", type=int, default=10000)
    args = parser.parse_args()
    exit_on_signals()
    raise_nofile(args.idle + 1000)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp, Servers() as servers:
        certs = make_certs(Path(tmp))
        ca = certs["ca"]
        for r in range(args.rounds):
            got: dict[str, Any] = {}
            for name, tls, extra in (
                ("plain", False, ()),
                ("tls", True, ()),
                ("plain+auth", False, ("--auth-file", certs["tokens"])),
            ):
                server = servers.start(verb_server(name, "json", certs if tls else None, *extra))
                os.environ["BENCH_AUTH"] = "1" if "auth" in name else "0"
                res = run_load(server, "ping", ca if tls else None, 50, 20, args.seconds)
                got[f"ping_us_{name}"] = res["server_cpu_s"] / res["msgs"] * 1e6
                servers.stop(server)
            for name, tls in (("plain", False), ("tls", True)):
                server = servers.start(verb_server(name, "binary", certs if tls else None))
                res = run_load(server, "upload", ca if tls else None, args.upload_mib << 20)
                got[f"upload_mbps_{name}"] = res["mb_per_s"]
                upload = Path(certs["dir"]) / "uploads" / res["file"]
                upload.unlink(missing_ok=True)
                servers.stop(server)
            for name, make in (
                ("verb-console", lambda: verb_server("hs", "echo", certs)),
                ("asyncio", lambda: peer_server(certs)),
            ):
                server = servers.start(make())
                res = run_load(server, "handshakes", ca, args.seconds, 8)
                got[f"handshakes_per_s_{name}"] = res["handshakes"] / res["seconds"]
                got[f"handshake_cpu_us_{name}"] = res["server_cpu_s"] / res["handshakes"] * 1e6
                servers.stop(server)
            rounds.append(got)
            print(f"round {r + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in got.items()))
        idle_tls = idle_kb(servers, verb_server("idle-tls", "echo", certs), ca, args.idle)
        idle_plain = idle_kb(servers, verb_server("idle-plain", "echo", None), None, args.idle)

    def med(key: str) -> float:
        value = median([g[key] for g in rounds])
        assert value is not None
        return value

    def ratio(a: str, b: str) -> tuple[float, float]:
        per_round = median([g[a] / g[b] for g in rounds])
        assert per_round is not None
        return med(a) / med(b), per_round

    rows = []
    summary: dict[str, Any] = {}
    for label, a, b, unit, target in (
        ("CPU per ping, TLS / plain", "ping_us_tls", "ping_us_plain", "us", "<= 1.3x"),
        ("CPU per ping, auth / none", "ping_us_plain+auth", "ping_us_plain", "us", "<= 1.02x"),
        ("binary upload, TLS / plain", "upload_mbps_tls", "upload_mbps_plain", "MB/s", ">= 0.5x"),
        (
            "handshakes/s, verb-console / asyncio",
            "handshakes_per_s_verb-console",
            "handshakes_per_s_asyncio",
            "/s",
            "",
        ),
        (
            "CPU per handshake, verb-console / asyncio",
            "handshake_cpu_us_verb-console",
            "handshake_cpu_us_asyncio",
            "us",
            "",
        ),
    ):
        of_medians, median_of_rounds = ratio(a, b)
        summary[label] = {"ratio": of_medians, "median_of_rounds": median_of_rounds}
        rows.append(
            [
                label,
                f"{of_medians:.2f}x ({med(a):.1f} / {med(b):.1f} {unit})",
                f"{median_of_rounds:.2f}x",
                target,
            ]
        )
    rows.append(
        [
            f"memory per idle connection, {args.idle} held",
            f"TLS {idle_tls:.1f} KB, plain {idle_plain:.1f} KB",
            "",
            "TLS <= 50 KB",
        ]
    )
    summary["idle_kb"] = {"tls": idle_tls, "plain": idle_plain, "held": args.idle}
    print(table(["what", "ratio of medians", "median of rounds", "target"], rows))
    when = datetime.datetime.now(datetime.UTC)
    path = write_json(
        result_path("tls", when),
        {"when": when.isoformat(), "machine": machine(), "rounds": rounds, "summary": summary},
    )
    print(f"raw rounds: {path}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        child(sys.argv[2:])
    elif sys.argv[1:2] == ["peer"]:
        import uvloop

        uvloop.run(_peer_main(sys.argv[2], sys.argv[3]))
    else:
        main()
