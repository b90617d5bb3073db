"""Upload a file to a verb-console server, over json (base64 chunks) or binary FILE frames.

    python examples/upload.py FILE [--name NAME] [--host 127.0.0.1] [--port 8080]
                              [--protocol json|binary] [--chunk-size BYTES] [--quiet] [--json]

Shows a progress bar while the file goes out, then prints the sha256 the server
computed next to the local one. Exit status 0 when the server reports
``file_complete`` with the same sha256, 1 on any error (a server ``error`` such
as ``file_exists``, a lost connection, a checksum difference).

json (PROTOCOL.md section 2.3): chunks are sent without waiting for each ack, up
to a window of unacknowledged bytes, so the link stays busy. binary (section 3):
CHUNK frames are streamed under TCP flow control; the server's ``file_progress``
replies and ``file_complete`` come back as FILE_REPLY frames. The local sha256
is sent with ``file_start`` so the server refuses a corrupted upload.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import hashlib
import json
import struct
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verb_console.units import fmt_byte_rate, fmt_bytes

JSON_CHUNK = 512 * 1024
BINARY_CHUNK = 1024 * 1024
WINDOW = 16 * 1024 * 1024  # json: unacknowledged bytes in flight

FILE, FILE_REPLY, NOTICE, ERROR = 0x0020, 0x0021, 0x0030, 0x00FF
START, CHUNK, END = 0x0001, 0x0002, 0x0004
_HEADER = struct.Struct(">HIH")


class UploadError(Exception):
    """The server refused or failed the upload (``code`` is its error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class Result:
    filename: str
    size: int
    seconds: float  # from file_start to file_complete, measured here
    sent_seconds: float  # from file_start to the last byte handed to the kernel
    server: dict[str, Any]  # the file_complete message
    local_sha256: str

    @property
    def ok(self) -> bool:
        return self.server.get("sha256") == self.local_sha256


Progress = Callable[[int], None]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def read_chunks(path: Path, size: int):
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


# ----------------------------------------------------------------- json


def json_frame(obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(body), body)


class JsonReader:
    """Reads ``<length>\\n<body>`` frames."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    async def next(self) -> dict[str, Any]:
        header = await self.reader.readuntil(b"\n")
        body = await self.reader.readexactly(int(header[:-1]))
        return json.loads(body)


async def upload_json(
    host: str,
    port: int,
    path: Path,
    name: str,
    chunk_size: int = JSON_CHUNK,
    on_progress: Progress | None = None,
    transfer_id: str | None = None,
) -> Result:
    size = path.stat().st_size
    local = file_sha256(path)
    tid = transfer_id or uuid.uuid4().hex
    reader, writer = await asyncio.open_connection(host, port, limit=4 << 20)
    frames = JsonReader(reader)
    try:
        # An auto listener says nothing before the client's first bytes; the
        # file_start is those bytes, and the welcome (if any) comes first.
        t0 = time.perf_counter()
        writer.write(
            json_frame(
                {
                    "type": "file_start",
                    "transferId": tid,
                    "filename": name,
                    "fileSize": size,
                    "chunkSize": chunk_size,
                    "sha256": local,
                }
            )
        )
        msg = await frames.next()
        if msg["type"] == "welcome":
            # Leave room for the JSON around the base64 text.
            most = (int(msg.get("maxFrameBytes", 1 << 20)) - 256) * 3 // 4
            chunk_size = max(1, min(chunk_size, most))
            msg = await frames.next()
        _check(msg, "file_start_ack")

        acked = 0
        window = asyncio.Semaphore(max(1, WINDOW // chunk_size))
        failure: list[BaseException] = []
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        async def read_replies() -> None:
            nonlocal acked
            try:
                while True:
                    msg = await frames.next()
                    kind = msg["type"]
                    if kind == "file_chunk_ack":
                        acked = msg["receivedBytes"]
                        window.release()
                        if on_progress is not None:
                            on_progress(acked)
                    elif kind in ("file_complete", "error"):
                        done.set_result(msg)
                        window.release()  # wake the sender if it waits for room
                        return
            except BaseException as exc:
                failure.append(exc)
                if not done.done():
                    done.set_exception(ConnectionError("the server closed the connection"))
                window.release()

        replies = asyncio.create_task(read_replies())
        prefix = b'{"type":"file_chunk","transferId":%s,"chunkIndex":' % json.dumps(tid).encode()
        for index, chunk in enumerate(read_chunks(path, chunk_size)):
            await window.acquire()
            if done.done():
                break
            data = binascii.b2a_base64(chunk, newline=False)
            body = b'%s%d,"data":"%s"}' % (prefix, index, data)
            writer.write(b"%d\n%s" % (len(body), body))
            await writer.drain()
        if not done.done():
            writer.write(json_frame({"type": "file_end", "transferId": tid}))
            await writer.drain()
        sent = time.perf_counter() - t0
        msg = await done
        seconds = time.perf_counter() - t0
        replies.cancel()
        _check(msg, "file_complete")
        return Result(name, size, seconds, sent, msg, local)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _check(msg: dict[str, Any], expected: str) -> None:
    if msg.get("type") == "error":
        raise UploadError(str(msg.get("code")), str(msg.get("message")))
    if msg.get("type") != expected:
        raise UploadError("unexpected", f"expected {expected}, got {msg}")


# ----------------------------------------------------------------- binary


def binary_frame(kind: int, payload: bytes, flags: int) -> bytes:
    return _HEADER.pack(kind, len(payload), flags) + payload


async def upload_binary(
    host: str,
    port: int,
    path: Path,
    name: str,
    chunk_size: int = BINARY_CHUNK,
    on_progress: Progress | None = None,
    transfer_id: str | None = None,
) -> Result:
    size = path.stat().st_size
    local = file_sha256(path)
    tid = transfer_id or uuid.uuid4().hex
    reader, writer = await asyncio.open_connection(host, port)

    async def next_reply() -> dict[str, Any]:
        while True:
            kind, length, _ = _HEADER.unpack(await reader.readexactly(8))
            payload = await reader.readexactly(length)
            if kind == FILE_REPLY:
                return json.loads(payload)
            if kind == ERROR:
                obj = json.loads(payload)
                raise UploadError(obj.get("code", "error"), obj.get("message", ""))
            # NOTICE frames (operator broadcasts) are not about the upload.

    try:
        t0 = time.perf_counter()
        start = {"transferId": tid, "filename": name, "fileSize": size, "sha256": local}
        writer.write(binary_frame(FILE, json.dumps(start).encode(), START))
        _check(await next_reply(), "file_start_ack")
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        async def read_replies() -> None:
            try:
                while True:
                    msg = await next_reply()
                    if msg["type"] == "file_progress":
                        if on_progress is not None:
                            on_progress(msg["receivedBytes"])
                    else:
                        done.set_result(msg)
                        return
            except BaseException as exc:
                if not done.done():
                    done.set_exception(
                        exc
                        if isinstance(exc, UploadError)
                        else ConnectionError("the server closed the connection")
                    )

        replies = asyncio.create_task(read_replies())
        sent = 0
        for chunk in read_chunks(path, chunk_size):
            if done.done():
                break
            writer.writelines((_HEADER.pack(FILE, len(chunk), CHUNK), chunk))
            sent += len(chunk)
            await writer.drain()
            if on_progress is not None:
                on_progress(sent)
        if not done.done():
            writer.write(binary_frame(FILE, b"", END))
            await writer.drain()
        sent_seconds = time.perf_counter() - t0
        msg = await done
        seconds = time.perf_counter() - t0
        replies.cancel()
        _check(msg, "file_complete")
        return Result(name, size, seconds, sent_seconds, msg, local)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# ----------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Upload a file to a verb-console server.")
    parser.add_argument("file", type=Path)
    parser.add_argument("--name", help="name on the server (default: the file's own name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--protocol", choices=("json", "binary"), default="json")
    parser.add_argument(
        "--chunk-size",
        type=int,
        help=f"bytes per chunk (default {JSON_CHUNK} for json, {BINARY_CHUNK} for binary)",
    )
    parser.add_argument("--transfer-id", help="default: a random one")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    if args.chunk_size is not None and args.chunk_size < 1:
        parser.error("--chunk-size must be at least 1")
    return args


async def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        print(f"upload: {path}: not a file", file=sys.stderr)
        return 1
    name = args.name or path.name
    size = path.stat().st_size
    upload = upload_json if args.protocol == "json" else upload_binary
    chunk = args.chunk_size or (JSON_CHUNK if args.protocol == "json" else BINARY_CHUNK)
    progress_cm: Any = contextlib.nullcontext()
    on_progress: Progress | None = None
    if not args.quiet and not args.json:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        progress_cm = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            # The project's units (KiB, MiB), as the summary and the console's Transfers pane.
            TextColumn("{task.fields[done]}"),
            TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(),
            transient=False,
        )
    try:
        with progress_cm as bar:
            if bar is not None:
                total = fmt_bytes(size)
                task = bar.add_task(
                    f"{name} ({args.protocol})", total=size, done=f"0 B/{total}", speed=""
                )

                def on_progress(n: int) -> None:
                    bar.update(task, completed=n, done=f"{fmt_bytes(n)}/{total}")
                    rate = bar.tasks[task].speed
                    if rate:
                        bar.update(task, speed=fmt_byte_rate(rate))

            result = await upload(
                args.host, args.port, path, name, chunk, on_progress, args.transfer_id
            )
            if bar is not None:
                bar.update(task, completed=size, done=f"{total}/{total}")
    except UploadError as exc:
        print(f"upload failed: {exc}", file=sys.stderr)
        return 1
    except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
        print(f"upload failed: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    server = result.server
    if args.json:
        print(
            json.dumps(
                {
                    "ok": result.ok,
                    "filename": result.filename,
                    "bytes": result.size,
                    "seconds": result.seconds,
                    "sent_seconds": result.sent_seconds,
                    "server": server,
                    "local_sha256": result.local_sha256,
                }
            )
        )
    else:
        # The project's units, as the bar above and the console's Transfers pane show them.
        speed = result.size / result.seconds if result.seconds > 0 else 0.0
        size = f"{fmt_bytes(result.size)} ({result.size:,} bytes)"
        print(f"uploaded {result.filename}: {size} in {result.seconds:.2f}s")
        here, there = fmt_byte_rate(speed), fmt_byte_rate(server.get("avgSpeed", 0))
        print(f"  {here} here, server: {there}")
        print(f"  server sha256: {server.get('sha256')}")
        print(f"  local  sha256: {result.local_sha256}")
        print("  checksums match" if result.ok else "  CHECKSUMS DIFFER")
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
