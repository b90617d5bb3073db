"""The seed's ``MessageHandler``: json-framed messages (PROTOCOL.md section 2) over a socket."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..protocols.errors import ProtocolError
from ..protocols.json import DEFAULT_MAX_FRAME, JsonDecoder, bad_json, encode
from .socket import TCPSocket

__all__ = ["MessageHandler"]


class MessageHandler:
    """The seed's MessageHandler: JSON messages over a :class:`~verb_console.net.TCPSocket`.

    ``handler.on("message", fn)`` receives each decoded message, ``on("error", fn)``
    each framing or JSON error (a :class:`~verb_console.protocols.ProtocolError`);
    :meth:`send_message` frames and writes one message.
    """

    def __init__(self, socket: TCPSocket, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.socket = socket
        self._decoder = JsonDecoder(max_frame)
        self._listeners: dict[str, list[Callable[[Any], object]]] = {"message": [], "error": []}
        socket.on("data", self._on_data)

    def on(self, event: str, listener: Callable[[Any], object]) -> MessageHandler:
        """Call ``listener`` with each ``"message"`` or each ``"error"``."""
        if event not in self._listeners:
            raise ValueError(f"unknown event {event!r}; expected 'message' or 'error'")
        self._listeners[event].append(listener)
        return self

    def _on_data(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        for body in self._decoder.receive(data):
            if isinstance(body, ProtocolError):
                # The stream cannot be trusted past a framing error, which the
                # decoder reports once, as its last event.
                self._emit("error", body)
                break
            try:
                message = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._emit("error", bad_json())
                continue
            self._emit("message", message)

    def _emit(self, event: str, value: Any) -> None:
        for listener in list(self._listeners[event]):
            listener(value)

    def send_message(self, message: Any) -> None:
        """Frame ``message`` and write it to the socket."""
        self.socket.write(encode(message))
