"""Every setting of the server, with PROTOCOL.md's defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields

PROTOCOLS = ("auto", "json", "binary", "mux", "echo")
MiB = 1024 * 1024
GiB = 1024 * MiB


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
    max_frame: int = MiB
    max_pending: int = 4 * MiB  # unsent output per session before it is a slow consumer
    max_file_size: int = GiB
    upload_quota: int = 10 * GiB
    grace_period: float = 30.0  # seconds
    max_rooms: int = 32
    max_streams: int = 256
    max_transfers: int = 4
    max_line: int = 65536
    writable_high_water_mark: int = 64 * 1024  # output level at which reads pause
    readable_high_water_mark: int = 256 * 1024  # read size per receive call
    # Console only
    refresh: float = 4.0
    read_only: bool = False
    demo: bool = False
    headless: bool = False
    log_level: str = "info"

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
