"""The query fields of rooms and mux connections (see :mod:`.listing`), in the order
of the Rooms and Streams panes' columns, whose titles are the filter's names."""

from __future__ import annotations

from typing import Any

from .listing import Field, Query, age, count, size, text


def _name(r: Any) -> str:
    return str(r.name)


ROOMS = Query(
    (
        Field("name", "room", text("name")),
        Field("size", "members", count("size")),
        Field("messages", "messages", count("messages")),
        Field("created_at", "age", age("created_at"), clock=True),
        # The room's position and kept messages (PROTOCOL.md 11.2).
        Field("epoch", "epoch", text("epoch")),
        Field("offset", "offset", count("offset")),
        Field("history", "history", count("history")),
        Field("history_bytes", "histsize", size("history_bytes")),
    ),
    _name,  # a word looks in the name: a room's members may be a hundred thousand
)

MUX_CONNECTIONS = Query(
    (
        Field("id", "muxconnection", text("id")),
        Field("stream_count", "streams", count("stream_count")),
        Field("connected_at", "uptime", age("connected_at"), clock=True),
        Field("bytes_in", "bytesin", size("bytes_in")),
        Field("bytes_out", "bytesout", size("bytes_out")),
    ),
    lambda m: str(m.id),
)
