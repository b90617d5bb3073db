"""Our PROXY header decoder against the ``proxy-protocol`` package's parser
(PyPI ``proxy-protocol``, not a dependency: run this with an interpreter that has
it), for the choice PROTOCOL.md 12.4 asked to measure.

Both parse the same v1 and v2 headers, whole and split byte by byte (the
package's ``unpack`` is stateless: the caller keeps the bytes and calls again
when it raises "incomplete"); the figure is microseconds per header.

    python bench/proxy_codec.py      (with proxy-protocol importable)
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verb_console.protocols.proxy import ProxyDecoder, encode_v1, encode_v2

HEADERS = {
    "v1-ipv4": encode_v1(("203.0.113.7", 5555), ("10.0.0.1", 80)),
    "v1-ipv6": encode_v1(("2001:db8::7", 4000), ("2001:db8::1", 80)),
    "v2-ipv4": encode_v2(("203.0.113.7", 5555)),
    "v2-ipv6": encode_v2(("2001:db8::7", 4000)),
}


def ours(raw: bytes, split: bool) -> Any:
    decoder = ProxyDecoder()
    if not split:
        return decoder.receive(raw)
    for i in range(len(raw)):
        found = decoder.receive(raw[i : i + 1])
        if found is not None:
            return found
    return None


def theirs_factory() -> Any:
    from proxyprotocol import ProxyProtocolIncompleteError
    from proxyprotocol.detect import ProxyProtocolDetect

    pp = ProxyProtocolDetect()

    def theirs(raw: bytes, split: bool) -> Any:
        if not split:
            return pp.unpack(raw)
        buf = b""
        for i in range(len(raw)):
            buf += raw[i : i + 1]
            if len(buf) < 8:
                continue  # it needs 8 bytes to tell the version
            try:
                return pp.unpack(buf)
            except ProxyProtocolIncompleteError:
                continue
        return None

    return theirs


def per_call_us(fn: Any, raw: bytes, split: bool, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn(raw, split)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    theirs = theirs_factory()
    results: dict[str, Any] = {}
    print(f"{'header':10} {'split':6} {'ours us':>8} {'theirs us':>10}")
    for name, raw in HEADERS.items():
        assert ours(raw, False) is not None and theirs(raw, False) is not None
        for split in (False, True):
            n = 20000 if not split else 2000
            a = min(per_call_us(ours, raw, split, n) for _ in range(3))
            b = min(per_call_us(theirs, raw, split, n) for _ in range(3))
            results[f"{name}{'-split' if split else ''}"] = {"ours_us": a, "theirs_us": b}
            print(f"{name:10} {split!s:6} {a:8.2f} {b:10.2f}")
    load = os.getloadavg()
    print(f"load average {load}")
    out = Path(__file__).parent / "results" / f"proxy_codec-{datetime.date.today():%Y-%m-%d}.json"
    out.write_text(json.dumps({"bench": "proxy_codec", "load": load, "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
