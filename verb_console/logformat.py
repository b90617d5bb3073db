"""``--log-format json``: the process log as one JSON object a line.

Log shippers (Loki's ``json`` stage, Vector's ``parse_json``, journald readers)
read one object a line with a timestamp, a level and a message. Each object has
``time`` (RFC 3339, UTC, milliseconds), ``level`` (``debug``...), ``logger`` and
``msg``; a server event adds ``kind`` (``connect``, ``close``, ``operator``...)
and its fields, named as ``ctl --json`` names them (a close carries the closed
session's ``id``, ``address``, ``reason``, ``bytes_in``...), at the top level.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

_RESERVED = frozenset({"time", "level", "logger", "msg", "kind", "exc"})


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``msg`` and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        doc: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        kind = getattr(record, "event_kind", None)
        if kind is not None:
            doc["kind"] = kind
        fields = getattr(record, "event_fields", None)
        if fields:
            # A field never hides the envelope's own keys.
            doc.update({k: v for k, v in fields.items() if k not in _RESERVED})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()
