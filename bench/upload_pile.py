"""The cost of file_start against a directory holding many files (issue: a pile of
zero-byte files made every file_start scan the directory on the event loop).

    python bench/upload_pile.py [--files 20000] [--pairs 100]

For an empty upload directory and one holding ``--files`` zero-byte files:
the median round trip of one file_start (then its file_abort), and the time a
burst of ``--pairs`` start/abort pairs sent in one write takes to be answered,
with the round trip of a bystander's ping sent right behind the burst.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import JsonClient

from verb_console.runtime import Runtime
from verb_console.settings import Settings


def frame(message: Any) -> bytes:
    body = json.dumps(message).encode()
    return str(len(body)).encode() + b"\n" + body


async def measure(directory: Path, pairs: int) -> dict[str, float]:
    rt = Runtime(Settings(host="127.0.0.1", port=0, protocol="json", upload_dir=str(directory)))
    await rt.start()
    client = await JsonClient.connect(rt.port)
    bystander = await JsonClient.connect(rt.port)
    try:
        rtts = []
        for i in range(50):
            t0 = time.perf_counter()
            msg = {"type": "file_start", "transferId": "s", "filename": f"s{i}", "fileSize": 1}
            assert (await client.request(msg))["type"] == "file_start_ack"
            rtts.append(time.perf_counter() - t0)
            await client.request({"type": "file_abort", "transferId": "s"})
        burst = b"".join(
            frame({"type": "file_start", "transferId": f"t{i}", "filename": f"b{i}", "fileSize": 1})
            + frame({"type": "file_abort", "transferId": f"t{i}"})
            for i in range(pairs)
        )
        t0 = time.perf_counter()
        await client.send_raw(burst)
        p0 = time.perf_counter()
        await bystander.request({"type": "ping"}, timeout=60)
        ping = time.perf_counter() - p0
        for _ in range(2 * pairs):
            await client.recv(timeout=60)
        took = time.perf_counter() - t0
    finally:
        await client.close()
        await bystander.close()
        rt.hub.force_shutdown()
        await asyncio.wait_for(rt.hub.wait_stopped(), 10)
    return {"start_ms": statistics.median(rtts) * 1000, "burst_s": took, "ping_ms": ping * 1000}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        empty, full = Path(work, "empty"), Path(work, "full")
        empty.mkdir()
        full.mkdir()
        for i in range(args.files):
            os.close(os.open(full / f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
        for label, d in (("empty", empty), (f"{args.files} files", full)):
            r = await measure(d, args.pairs)
            print(
                f"{label:>12}: file_start {r['start_ms']:.2f} ms (median); "
                f"{args.pairs} start/abort pairs in one write answered in {r['burst_s']:.3f} s; "
                f"a bystander's ping behind them {r['ping_ms']:.1f} ms"
            )


if __name__ == "__main__":
    asyncio.run(main())
