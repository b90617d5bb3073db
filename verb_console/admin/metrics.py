"""Prometheus ``/metrics`` and ``/healthz``, read from the hub's own counters.

``--metrics HOST:PORT`` (off by default) serves, inside the server's event loop:

- ``GET /metrics``: the Prometheus text exposition of :class:`HubCollector`,
- ``GET /healthz``: ``200 serving`` while the server serves, ``503 draining``
  once the graceful shutdown has begun, so a load balancer takes the node out.

Nothing is added to the hot path: a custom collector reads, at scrape time, the
counters the hub already keeps (and the ones it adds up when a session or an
upload ends), and sums the live sessions' figures. Counters are counters, named
``_total``; the only labels are ``protocol``, ``reason``, ``result`` and ``node`` (never a
session, address, room or user), so the number of series does not grow with the
traffic. The endpoint has no authentication: bind it to ``127.0.0.1`` unless a
firewall or a proxy guards it.

The HTTP server (``verb_console.admin.metrics_http``) is deliberately small: one request per
connection, bounded in size and time, so a slow scraper cannot stall the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from operator import attrgetter
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .. import __version__
from ..hub.ended import TRAFFIC_PROTOCOLS
from ..hub.histogram import LATENCY_BOUNDS, Histogram

__all__ = [
    "HubCollector",
    "LoopLag",
    "exposition",
    "parse_address",
]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> ``(host, port)``; ``ValueError`` if not."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


class LoopLag:
    """How late the event loop runs a timer: sampled every ``interval`` seconds.

    One timer callback per interval is the whole cost; :attr:`histogram` is plain
    bucket counts, turned into a Prometheus histogram at scrape time.
    """

    def __init__(
        self,
        interval: float = 0.5,
        bounds: Iterable[float] = LATENCY_BOUNDS,
        source: Any = None,
    ) -> None:
        self.interval = interval
        self.histogram = Histogram(bounds)
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        # A probe that runs anyway (the hub's turn clock, every 10 ms, so that
        # every turn over 20 ms shows): its histogram, and no timer of our own.
        self.source = source
        if source is not None:
            self.interval = source.interval
            self.histogram = source.histogram

    def start(self) -> None:
        if self.source is not None:
            return
        loop = asyncio.get_running_loop()
        self._due = loop.time() + self.interval
        self._handle = loop.call_at(self._due, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        self.histogram.observe(max(0.0, now - self._due))
        self._due = now + self.interval
        self._handle = loop.call_at(self._due, self._tick, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def family(self) -> HistogramMetricFamily:
        return histogram_family(
            "verb_event_loop_lag_seconds",
            "How late the event loop ran a timer sampled every "
            f"{self.interval:g} s: the wait every ready callback had at that moment",
            self.histogram,
        )


def histogram_family(
    name: str, doc: str, histogram: Histogram, labels: dict[str, str] | None = None
) -> HistogramMetricFamily:
    """A :class:`Histogram`'s counts as a Prometheus histogram family."""
    buckets = [(repr(bound), float(n)) for bound, n in histogram.cumulative()]
    buckets.append(("+Inf", float(histogram.count)))
    if not labels:
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=histogram.sum)
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), buckets, histogram.sum)
    return family


_OUTLET = attrgetter("outlet")


def _live_figures(hub: Any) -> tuple[dict[str, float], dict[str, list[int]]]:
    """Live sessions by protocol, and traffic by protocol: ended sessions' plus live ones'.

    One pass over the live sessions; json sessions, the bulk of them, add up in
    plain local variables (a dict and list per session would triple the cost).
    """
    live: dict[str, float] = dict.fromkeys((*TRAFFIC_PROTOCOLS, "detecting"), 0)
    traffic = {p: list(row) for p, row in hub.ended.traffic.items()}
    n = msgs_in = msgs_out = bytes_in = bytes_out = 0
    for session in hub.sessions.values():
        protocol = session.protocol
        outlet = session.outlet
        if protocol == "json":
            n += 1
            msgs_in += session.msgs_in
            msgs_out += session.msgs_out
            bytes_in += outlet.bytes_read
            bytes_out += outlet.bytes_written
            continue
        live[protocol] = live.get(protocol, 0) + 1
        row = traffic.get(protocol)
        if row is not None:
            row[0] += session.msgs_in
            row[1] += session.msgs_out
            row[2] += outlet.bytes_read
            row[3] += outlet.bytes_written
    live["json"] = n
    row = traffic["json"]
    row[0] += msgs_in
    row[1] += msgs_out
    row[2] += bytes_in
    row[3] += bytes_out
    return live, traffic


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _by(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    doc: str,
    label: str,
    values: dict[str, float],
) -> Metric:
    family = kind(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


class HubCollector(Collector):
    """The hub's figures as Prometheus metric families, read at scrape time."""

    def __init__(self, hub: Any, lag: LoopLag | None = None, tls: Any = None) -> None:
        self.hub = hub
        self.lag = lag
        self.tls = tls  # the listener's TLSOptions (their counters), None without TLS

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        stats = hub.stats  # every counter of the server, in one object
        yield InfoMetricFamily(
            "verb_build", "verb-console's version", value={"version": __version__}
        )
        yield GaugeMetricFamily(
            "verb_start_time_seconds", "When the server started (Unix time)", value=hub.started_at
        )
        yield GaugeMetricFamily(
            "verb_draining",
            "1 once the graceful shutdown has begun (then /healthz answers 503)",
            value=0 if hub.state == "running" else 1,
        )

        # ---- connections
        yield _counter(
            "verb_connections_accepted",
            "TCP connections accepted",
            stats.accepted,
        )
        rejected = {
            "throttle": stats.rejected_throttle,
            "max_connections": stats.rejected_max,
            "auth": stats.rejected_auth,
            "banned": hub.banning.refused,
        }
        yield _by(
            CounterMetricFamily,
            "verb_connections_rejected",
            "TCP connections refused before any byte was sent, by reason",
            "reason",
            rejected,
        )

        yield _by(
            CounterMetricFamily,
            "verb_refusals",
            "Requests refused by the policy or a ban (PROTOCOL.md 12), by error code",
            "reason",
            hub.permissions.totals,
        )

        # ---- sessions and traffic: live sessions now, plus every session that ended
        live, traffic = _live_figures(hub)
        yield _by(
            GaugeMetricFamily,
            "verb_sessions",
            "Live sessions by protocol (a mux connection and each of its streams count)",
            "protocol",
            live,
        )
        yield _by(
            CounterMetricFamily,
            "verb_sessions_closed",
            "Sessions ended, by reason",
            "reason",
            dict(hub.ended.reasons),
        )
        for i, (name, doc) in enumerate(
            (
                ("verb_messages_received", "Messages received from clients, by protocol"),
                ("verb_messages_sent", "Messages sent to clients, by protocol"),
                ("verb_bytes_received", "Bytes received from clients, by protocol"),
                ("verb_bytes_sent", "Bytes sent to clients, by protocol"),
            )
        ):
            yield _by(
                CounterMetricFamily, name, doc, "protocol", {p: r[i] for p, r in traffic.items()}
            )
        yield _counter(
            "verb_slow_consumers",
            "Sessions cut because their unsent output passed --max-pending",
            stats.slow_consumers,
        )
        # Output waits in user space only past a connection's write high-water mark,
        # where the transport flags it congested: only those are asked their backlog.
        unsent = congested = 0
        for outlet in map(_OUTLET, hub.connections.values()):
            if outlet.congested:
                congested += 1
                unsent += outlet.unsent
        yield GaugeMetricFamily(
            "verb_congested_connections",
            "Connections whose unsent output is above the write high-water mark",
            value=congested,
        )
        yield GaugeMetricFamily(
            "verb_unsent_output_bytes",
            "Bytes written to congested connections and not yet taken by the kernel",
            value=unsent,
        )

        yield from self._resume()

        # ---- rooms
        rooms = hub.rooms
        yield GaugeMetricFamily("verb_rooms", "Rooms with at least one member", value=len(rooms))
        yield _counter(
            "verb_room_messages",
            "Room messages relayed to a room's other members",
            rooms.messages_total(),
        )
        history = rooms.history
        if history is not None:
            yield GaugeMetricFamily(
                "verb_room_history_bytes",
                "Bytes of room messages kept for recovery (PROTOCOL.md 11.2), every room",
                value=history.bytes,
            )
            yield _by(
                CounterMetricFamily,
                "verb_room_recoveries",
                "join_room requests with since, by result: recovered, or not_recovered",
                "result",
                dict(history.recoveries),
            )

        # ---- uploads
        store = hub.uploads
        if store is not None:
            yield _by(
                CounterMetricFamily,
                "verb_uploads",
                "Uploads ended, by result",
                "result",
                {"complete": store.completed, "aborted": store.aborted, "failed": store.failed},
            )
            yield _counter(
                "verb_upload_bytes",
                "Bytes of completed uploads",
                store.bytes_completed,
            )
            yield GaugeMetricFamily(
                "verb_uploads_active", "Uploads in progress", value=store.active_count
            )

        # ---- authentication and TLS
        failures = getattr(hub, "auth_failures", None)
        if failures is not None:
            yield _by(
                CounterMetricFamily,
                "verb_auth_failures",
                "Failed authentications: no token first, a wrong token, none in time",
                "reason",
                dict(failures.counts),
            )
        counters = getattr(self.tls, "counters", None)
        if counters is not None:
            yield _counter(
                "verb_tls_handshakes",
                "TLS handshakes completed",
                counters.handshakes,
            )
            yield _by(
                CounterMetricFamily,
                "verb_tls_handshake_failures",
                "TLS handshakes that failed, by reason",
                "reason",
                dict(counters.failures),
            )

        yield from self._cluster()
        if self.lag is not None:
            yield self.lag.family()

    def _resume(self) -> Iterator[Metric]:
        """With session resume on (PROTOCOL.md 11.1), and while a drain closes sessions."""
        hub = self.hub
        yield GaugeMetricFamily(
            "verb_drain_sessions_left",
            "Sessions the graceful shutdown has still to close (0 when not draining)",
            value=hub.shutdown.left,
        )
        resume = hub.resume
        if resume is None:
            return
        yield GaugeMetricFamily(
            "verb_sessions_detached",
            "Sessions detached: no connection carries them, resumable for --resume-window",
            value=len(resume.detached),
        )
        yield _by(
            CounterMetricFamily,
            "verb_resumes",
            "resume requests, by result: resumed, or why not (the resume_failed reason)",
            "result",
            dict(resume.results),
        )

    def _cluster(self) -> Iterator[Metric]:
        """With ``--cluster``: the link to Redis and the traffic with other nodes."""
        bus = self.hub.bus
        if bus is None:
            return
        stats = bus.stats()
        labels = {"node": stats.node}

        def one(kind: Any, name: str, doc: str, value: float) -> Metric:
            family = kind(name, doc, labels=["node"])
            family.add_metric([stats.node], value)
            return family

        yield one(
            GaugeMetricFamily,
            "verb_cluster_link_up",
            "1 while this node's link to Redis is up",
            1 if stats.link == "up" else 0,
        )
        yield one(
            CounterMetricFamily,
            "verb_cluster_reconnects",
            "Times the link to Redis was made again after a loss",
            stats.reconnects,
        )
        for name, doc, figure in (
            ("published", "Messages published to other nodes", stats.published),
            ("received", "Messages received from other nodes", stats.received),
            (
                "dropped",
                "Messages not sent: queue full, Redis unreachable, too large",
                stats.dropped,
            ),
            ("undeliverable", "Messages for a session gone when they arrived", stats.undeliverable),
        ):
            yield one(CounterMetricFamily, f"verb_cluster_messages_{name}", doc, figure)
        yield histogram_family(
            "verb_cluster_pubsub_lag_seconds",
            "Round trip of this node's probe through Redis pub/sub (one per heartbeat)",
            stats.probe_lags,
            labels,
        )


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (_INF, -_INF):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


_INF = float("inf")
# What the text format 0.0.4 calls a family's samples, by prometheus_client's type.
_WIRE = {"counter": ("_total", "counter"), "info": ("_info", "gauge")}


def exposition(families: Iterable[Metric]) -> bytes:
    """The text exposition (format 0.0.4) of ``families``, as ``generate_latest`` writes it.

    Written here because ``generate_latest`` spends several times longer than the
    collector on the same few dozen families (it suits registries of many
    instrumented objects); the output parses the same (a test compares them).
    """
    out: list[str] = []
    append = out.append
    for family in families:
        suffix, kind = _WIRE.get(family.type, ("", family.type))
        name = family.name + suffix
        append(f"# HELP {name} {_escape_help(family.documentation)}\n# TYPE {name} {kind}\n")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(
                    f'{key}="{_escape_label(str(val))}"' for key, val in sample.labels.items()
                )
                append(f"{sample.name}{{{labels}}} {_number(sample.value)}\n")
            else:
                append(f"{sample.name} {_number(sample.value)}\n")
    return "".join(out).encode()
