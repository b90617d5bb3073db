"""Every protocol's session class, as the hub builds them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from . import uploads as upload_messages
from .binary_session import BinarySession
from .detect_session import DetectingSession
from .echo_session import EchoSession
from .json_handlers import HANDLERS
from .json_session import JsonSession
from .mux_session import MuxSession
from .session import Session

# A session class: (hub, outlet, session id, address, port, parent) -> Session.
SessionFactory = Callable[..., Session]


def session_kinds(with_uploads: bool) -> dict[str, SessionFactory]:
    """Every protocol's session class, each given the message handlers it serves.

    Registered here, where the hub is built, so that no module changes another's
    tables at import time: json serves section 2's messages plus the upload
    messages, and binary FILE frames go to the upload code, when uploads are on.
    """
    json_handlers = {**HANDLERS, **upload_messages.JSON_HANDLERS} if with_uploads else HANDLERS
    on_file = upload_messages.binary_file_frame if with_uploads else None
    return {
        "json": partial(JsonSession, handlers=json_handlers),
        "binary": partial(BinarySession, on_file=on_file),
        "echo": EchoSession,
        "mux": MuxSession,
        "auto": DetectingSession,
    }
