"""The performance page's table, from the newest result of each benchmark.

    python bench/report.py            # print the Markdown table
    python bench/report.py --check    # exit 1 if docs/performance.md's table differs

Each row reads one figure from the newest file ``bench/results/KIND-DATE[-N].json``
that holds it (a later file of another shape is passed over), so the page says
what the last runs measured and nothing else; the raw rounds stay in the files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PAGE = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- bench/report.py: begin -->"
END = "<!-- bench/report.py: end -->"
_NAME = re.compile(r"(?P<kind>[a-z_]+)-(?P<date>\d{4}-\d{2}-\d{2})(?:-(?P<n>\d+))?\.json")


def newest_first(kind: str) -> list[Path]:
    """The result files of one benchmark, newest first (date, then run number)."""
    found = []
    for path in RESULTS.glob(f"{kind}-*.json"):
        m = _NAME.fullmatch(path.name)
        if m and m["kind"] == kind:
            found.append(((m["date"], int(m["n"] or 1)), path))
    return [p for _, p in sorted(found, reverse=True)]


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _ratio(a: float, b: float) -> str:
    return _x(a / b)


# (figure, benchmark, how to read it from one result, target)
Reader = Callable[[dict[str, Any]], str]
ROWS: list[tuple[str, str, Reader, str]] = [
    (
        "server CPU per json ping, verb-console / py_limit",
        "compare",
        lambda d: _ratio(
            d["servers"]["verb-console"]["ping_median"], d["servers"]["py_limit"]["ping_median"]
        ),
        "at most 1.10x",
    ),
    (
        "server CPU per fan-out delivery (500 receivers), verb-console / py_limit",
        "compare",
        lambda d: _ratio(
            d["servers"]["verb-console"]["fanout_median"],
            d["servers"]["py_limit"]["fanout_median"],
        ),
        "at most 1.10x",
    ),
    (
        "server CPU per json ping, verb-console / node_peer",
        "compare",
        lambda d: _ratio(
            d["servers"]["verb-console"]["ping_median"], d["servers"]["node_peer"]["ping_median"]
        ),
        "",
    ),
    (
        "server CPU per ping, one console attached / headless (10,000 sessions)",
        "attach",
        lambda d: _x(d["figures"]["cpu_ratio_of_medians"]),
        "at most 1.05x",
    ),
    (
        "one `sessions` page of 100 over the admin socket, 10,000 sessions",
        "attach",
        lambda d: f"{d['figures']['page']['median_ms']:.2f} ms median",
        "at most 5 ms",
    ),
    (
        "`attach` started until its first full frame",
        "attach",
        lambda d: f"{d['figures']['attach_first_frame_s']:.2f} s",
        "under 1 s",
    ),
    (
        "server CPU per ping, console rendering / headless",
        "console",
        lambda d: _ratio(
            sorted(d["cpu_per_msg"]["us_per_msg"]["console"])[2],
            sorted(d["cpu_per_msg"]["us_per_msg"]["headless"])[2],
        ),
        "at most 1.15x",
    ),
    (
        "one Connections refresh, 10,000 sessions",
        "console",
        lambda d: f"{d['refresh']['wall_ms']['median']:.1f} ms median",
        "under 20 ms",
    ),
    (
        "CPU per delivery on node B, sender on node A / on B",
        "cluster",
        lambda d: _x(d["fanout_cpu_us_per_delivery"]["ratio"]),
        "at most 1.2x",
    ),
    (
        "private round trip p50, across two nodes / on one node",
        "cluster",
        lambda d: _ratio(d["private_rtt_ms"]["cross_node"][0], d["private_rtt_ms"]["one_node"][0]),
        "",
    ),
    (
        "cross-node room messages per second, one sender",
        "cluster",
        lambda d: f"{d['cross_room_msgs_per_s']:,.0f}",
        "at least 50,000",
    ),
    (
        "server CPU per ping, metrics scraped every second / off",
        "metrics",
        lambda d: _x(d["cpu_per_ping"]["on_over_off_ratio_of_medians"]),
        "at most 1.02x",
    ),
    (
        "one `/metrics` scrape at 10,000 sessions",
        "metrics",
        lambda d: f"{d['one_scrape']['scrape_wall_ms']['median']:.2f} ms median",
        "under 5 ms",
    ),
    (
        "server CPU per json ping, TLS / plaintext",
        "tls",
        lambda d: _x(d["summary"]["CPU per ping, TLS / plain"]["ratio"]),
        "at most 1.3x",
    ),
    (
        "server CPU per json ping, authentication on / off",
        "tls",
        lambda d: _x(d["summary"]["CPU per ping, auth / none"]["ratio"]),
        "at most 1.02x",
    ),
    (
        "binary upload throughput, TLS / plaintext",
        "tls",
        lambda d: _x(d["summary"]["binary upload, TLS / plain"]["ratio"]),
        "at least 0.5x",
    ),
    (
        "TLS handshakes per second, verb-console / asyncio",
        "tls",
        lambda d: _x(d["summary"]["handshakes/s, verb-console / asyncio"]["ratio"]),
        "",
    ),
    (
        "memory per idle connection, verb-console / py_limit",
        "idle",
        lambda d: _x(d["ratio_verb_console_over_py_limit"]),
        "",
    ),
    (
        "binary upload of 1 GiB / the disk's own `dd conv=fsync`",
        "upload",
        lambda d: _x(d["binary"]["ratio_vs_dd"]),
        "at least 0.7x",
    ),
    (
        "bystander ping p99 during a broadcast flood (200 readers)",
        "flood",
        lambda d: f"{d['flood']['p99_ms']:.1f} ms",
        "under 50 ms",
    ),
    (
        "server CPU per ping, message tap closed / no tap",
        "tap_cost",
        lambda d: _x(d["closed_vs_before"]["ratio_of_medians"]),
        "",
    ),
    (
        "ping p99 while the console's terminal is unread for 60 s",
        "stall",
        lambda d: f"{d['figures']['p99_ms']:.0f} ms",
        "under 100 ms",
    ),
    (
        "server CPU per json ping, resume and history on / off",
        "resume",
        lambda d: _x(d["compare"]["ping"]["ratio_of_medians"]),
        "at most 1.05x",
    ),
    (
        "server CPU per fan-out delivery, resume and history on / off",
        "resume",
        lambda d: _x(d["compare"]["fanout"]["ratio_of_medians"]),
        "at most 1.05x",
    ),
    (
        "a resume replaying 1,000 kept messages, p99",
        "resume",
        lambda d: f"{d['kept']['p99_ms']:.1f} ms",
        "under 50 ms",
    ),
    (
        "server CPU per json ping, a policy of 100 users / none",
        "policy",
        lambda d: _x(d["figures"]["ping"]["paired_ratio"]),
        "at most 1.05x",
    ),
    (
        "server CPU per fan-out delivery, a policy of 100 users / none",
        "policy",
        lambda d: _x(d["figures"]["fanout"]["paired_ratio"]),
        "at most 1.05x",
    ),
    (
        "accepts per second, plain / through a PROXY v1 header",
        "proxy_accept",
        lambda d: _x(d["figures"]["v1"]["slowdown_paired"]),
        "at most 1.1x",
    ),
    (
        "accepts per second, plain / through a PROXY v2 header",
        "proxy_accept",
        lambda d: _x(d["figures"]["v2"]["slowdown_paired"]),
        "at most 1.1x",
    ),
    (
        "a fresh client's ping p99 during a storm of 200 broadcasting clients",
        "storm",
        lambda d: f"{d['rounds'][-1]['fresh_ping']['p99_ms']:.0f} ms",
        "under 100 ms",
    ),
    (
        "bystander ping p99, console on show / headless (100,000 sessions)",
        "scale",
        lambda d: _x(d["runs"]["100000"]["hosted_p99_over_headless"]),
        "at most 1.2x",
    ),
    (
        "one Connections refresh (CPU), 100,000 / 1,000 sessions",
        "scale",
        lambda d: _ratio(
            d["runs"]["100000"]["hosted"]["panes"]["1"]["refresh_ms"],
            d["runs"]["1000"]["hosted"]["panes"]["1"]["refresh_ms"],
        ),
        "at most 2x",
    ),
    (
        "a resume on another node, p99",
        "cluster_resume",
        lambda d: f"{d['resume']['p99_ms']:.1f} ms",
        "under 100 ms",
    ),
    (
        "recovery of 100 missed room messages from Redis, p99",
        "cluster_resume",
        lambda d: f"{d['recovery']['p99_ms']:.1f} ms",
        "under 20 ms",
    ),
    (
        "most of 10,000 drained sessions back on a second node in any one second",
        "lame_duck",
        lambda d: f"{d['result']['spread']['max_share_in_any_1s_window']:.1%}",
        "at most 5%",
    ),
    (
        "room messages lost, repeated or out of order across that drain",
        "lame_duck",
        lambda d: f"{d['result']['sessions_with_errors'] + d['result']['incomplete']}",
        "0",
    ),
    (
        "longest loop turn (CPU) of a lame-duck drain of 10,000 sessions",
        "lame_duck",
        lambda d: f"{d['result']['max_turn_cpu_ms']:.1f} ms",
        "under 20 ms",
    ),
]


def row(figure: str, kind: str, read: Reader, target: str) -> str:
    for path in newest_first(kind):
        try:
            value = read(json.loads(path.read_text()))
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
            continue
        source = f"`{path.name}`"
        return f"| {figure} | {value} | {target} | {source} |"
    return f"| {figure} | not measured | {target} | |"


def table() -> str:
    lines = ["| figure | measured | target | from |", "|---|---|---|---|"]
    lines += [row(*spec) for spec in ROWS]
    return "\n".join(lines)


#: The rows the README shows too: the server's cost against ../shared/bench's peers.
HEADLINE = 3


def headline() -> str:
    """The README's part: the table's first rows, the ratios against the reference servers."""
    return "\n".join(table().splitlines()[: 2 + HEADLINE])


def _write(path: Path, generated: str) -> None:
    text = path.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + "\n" + generated + "\n" + text[end:])


def page_table(text: str) -> str:
    """The generated part of the performance page."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with docs/performance.md")
    parser.add_argument(
        "--write", action="store_true", help="rewrite the tables in docs/performance.md, README.md"
    )
    args = parser.parse_args(argv)
    generated = table()
    if args.write:
        _write(PAGE, generated)
        _write(README, headline())
        return 0
    if args.check:
        for path, want in ((PAGE, generated), (README, headline())):
            if page_table(path.read_text()) != want:
                print(f"{path.name} is out of date: bench/report.py --write", file=sys.stderr)
                return 1
        return 0
    print(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
