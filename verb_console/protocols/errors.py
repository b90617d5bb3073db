"""The one error family of the wire protocol.

Every error the project reports on the wire, or receives from it, is a
:class:`ProtocolError`: a PROTOCOL.md error ``code``, a human ``message`` and the
extra fields its error frame carries (``transferId``, ``streamId``, ...) under
their wire names. Codecs raise it for a peer that broke the framing, the hub
raises it from a message handler to refuse one message, uploads raise it (as
:class:`~verb_console.hub.uploads.TransferError`) for a broken upload rule,
and the clients raise :class:`ServerError` when the server answers ``error``.

One error becomes one frame in one way per protocol form: :meth:`ProtocolError.as_message`
gives the ``{"type": "error", ...}`` object, which ``protocols.json.encode_error``,
``protocols.mux.encode_error`` and the binary FILE_REPLY frame carry, and
``protocols.binary.encode_error`` frames the binary ERROR frame.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProtocolError", "ServerError"]

_FRAME_KEYS = frozenset({"type", "code", "message"})


class ProtocolError(Exception):
    """A PROTOCOL.md error: ``code``, ``message`` and the error frame's ``extra`` fields.

    ``extra`` maps wire names to values, in the order they go on the wire after
    ``type``, ``code``, ``message`` (and ``ref``, which belongs to the message
    being answered, not to the error): ``ProtocolError("unknown_transfer",
    "Transfer not found", transferId="t1")``.
    """

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra: dict[str, Any] = extra

    @property
    def transfer_id(self) -> str | None:
        """The ``transferId`` the error is about, if any."""
        return self.extra.get("transferId")

    @transfer_id.setter
    def transfer_id(self, value: str | None) -> None:
        if value is None:
            self.extra.pop("transferId", None)
        else:
            self.extra["transferId"] = value

    @property
    def stream_id(self) -> int | None:
        """The ``streamId`` the error is about, if any."""
        return self.extra.get("streamId")

    def as_message(self, ref: Any = None) -> dict[str, Any]:
        """The ``error`` message of PROTOCOL.md: type, code, message, ``ref`` when
        given, then the extra fields."""
        obj: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if ref is not None:
            obj["ref"] = ref
        if self.extra:
            obj.update(self.extra)
        return obj

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.extra.items())
        return f"{type(self).__name__}({self.code!r}, {self.message!r}{extra})"


class ServerError(ProtocolError):
    """The server answered with ``{"type": "error", ...}``: the clients' one error class.

    ``reply`` is the whole error message as received; its fields beyond type,
    code and message (``ref``, ``streamId``, ``transferId``) are also in
    :attr:`extra`.
    """

    def __init__(self, code: str, message: str, reply: dict[str, Any] | None = None) -> None:
        reply = reply or {}
        super().__init__(code, message, **{k: v for k, v in reply.items() if k not in _FRAME_KEYS})
        self.reply = reply

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> ServerError:
        """The error the server's ``error`` message ``reply`` reports."""
        return cls(str(reply.get("code")), str(reply.get("message")), reply)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
