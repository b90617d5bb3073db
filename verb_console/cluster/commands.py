"""Redis commands as the link writes them (queue entries in the wire format), and closing."""

from __future__ import annotations

from typing import Any


def pack(conn: Any, item: tuple[Any, ...], parts: list[bytes]) -> None:
    """Append one queued command, in Redis's wire format, to ``parts``."""
    if item[0] == "PUBLISH":
        channel, payload = item[1], item[2]
        parts.append(
            b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n" % (len(channel), channel, len(payload))
        )
        parts.append(payload)
        parts.append(b"\r\n")
    elif item[0] == "post":  # a room message kept in Redis (see .history.PostCommands)
        item[1].pack([item], parts)
    else:
        parts.extend(conn.pack_command(*item))


def pairs(ids: list[str], value: str) -> list[str]:
    out: list[str] = []
    for sid in ids:
        out.append(sid)
        out.append(value)
    return out


def pairs_rev(ids: list[str], score: int) -> list[Any]:
    out: list[Any] = []
    for sid in ids:
        out.append(score)
        out.append(sid)
    return out


def abort(conn: Any) -> None:
    """Close a redis-py connection's socket at once, dropping what it has not sent.

    A polite close waits on a peer that may never read (a frozen Redis).
    """
    writer = getattr(conn, "_writer", None)
    if writer is not None:
        writer.transport.abort()
