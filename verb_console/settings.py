"""Every setting of the server, with PROTOCOL.md's defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .protocols.echo import DEFAULT_MAX_LINE
from .protocols.framing import DEFAULT_MAX_FRAME

PROTOCOLS = ("auto", "json", "binary", "mux", "echo")
MiB = 1024 * 1024
GiB = 1024 * MiB


class StartupRefused(Exception):
    """The server cannot start as configured: one line on stderr, exit status 2."""


@dataclass(slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    protocol: str = "auto"
    upload_dir: str = "./uploads"
    max_connections: int = 10000
    max_per_ip: int = 10  # 0 turns the per-IP throttle off
    throttle_window: float = 60.0  # seconds
    idle_timeout: float = 300.0  # seconds of no bytes received; 0: none
    handshake_timeout: float = 10.0  # seconds until an ``auto`` connection's protocol is known
    max_frame: int = DEFAULT_MAX_FRAME
    max_pending: int = 4 * MiB  # unsent output per session before it is a slow consumer
    max_file_size: int = GiB
    upload_quota: int = 10 * GiB
    grace_period: float = 30.0  # seconds
    max_rooms: int = 32
    max_streams: int = 256
    # Bytes of partial frames one mux connection's streams may hold together.
    max_input_per_connection: int = 8 * MiB
    # Bytes of partial frames all connections may hold together (a plain json or
    # binary connection holds at most one frame, max_frame; 10,000 of them 10 GiB).
    max_input_total: int = 256 * MiB
    max_transfers: int = 4
    max_transfers_per_connection: int = 16  # a mux connection's streams together
    max_transfers_total: int = 256  # open transfers (and their files) in the whole server
    max_upload_files: int = 100_000  # files in the upload directory plus open transfers
    max_reserved_per_client: int = 4 * GiB  # bytes reserved by one address's open transfers
    transfer_timeout: float = 60.0  # seconds an open transfer may receive nothing; 0: none
    max_line: int = DEFAULT_MAX_LINE
    # Messages one session's messages may deliver per second (broadcasts, room
    # messages, join and leave notices; a burst of one second's worth); past it
    # the session's reading pauses until the rate allows more. 0: no limit.
    max_fanout_rate: int = 500_000
    writable_high_water_mark: int = 64 * 1024  # output level at which reads pause
    readable_high_water_mark: int = 256 * 1024  # read size per receive call
    # Cluster (PROTOCOL.md section 10): "" runs a single server with no Redis.
    cluster: str = ""  # redis://HOST:PORT/DB, rediss://..., unix:///PATH
    node_name: str = ""  # default <hostname>-<port>
    cluster_queue: int = 10000  # messages queued for Redis at most; past it they are dropped
    reuse_port: bool = False  # SO_REUSEPORT: nodes on one host may share the port
    admin_socket: str = ""  # "": the default path (admin/paths.py)
    on_hangup: str = "keep"  # what a hosted server does when its terminal goes away
    log_file: str = ""  # where the server logs once no terminal shows it
    # Authentication and TLS (PROTOCOL.md sections 8 and 9); "" is off.
    auth_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    tls_required: bool = False
    metrics: str = ""  # HOST:PORT of Prometheus /metrics and /healthz; "": off
    # Nothing lost across a break (PROTOCOL.md section 11).
    resume_window: float = 0.0  # seconds a dropped json session waits to be resumed; 0: off
    history_size: int = 100  # room messages kept per room; 0 turns room history off
    history_ttl: float = 300.0  # seconds a room message is kept
    history_total: int = 64 * MiB  # bytes of room history one server keeps in memory
    # Console only
    refresh: float = 4.0
    read_only: bool = False
    demo: bool = False
    headless: bool = False
    log_level: str = "info"

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
