"""The bus a hub publishes to when it is one node of a cluster (PROTOCOL.md section 10).

The hub defines this small interface and never imports what implements it
(``verb_console.cluster`` does, on Redis). A hub without a bus (``hub.bus is
None``, the default) runs exactly as a single server: every hook below sits
behind one ``is not None`` test on paths that already do far more work.

The cluster layer delivers what other nodes publish through the hub's
delivery entry points: :class:`~.inbound.Inbound` (``hub.inbound``),
:meth:`Hub.operator_broadcast` and :meth:`Hub.operator_close` with ``local_only``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .histogram import Histogram
from .snapshot import ClusterInfo


@dataclass(frozen=True, slots=True)
class BusStats:
    """One node's cluster figures at one moment: for ``/metrics``, ``ctl status``
    and the console's Cluster pane (PROTOCOL.md section 10)."""

    node: str
    link: str  # the link to the other nodes: "up", "down" or "connecting"
    link_since: float  # wall clock of its last change
    reconnects: int  # times the link was made again after a loss
    published: int  # messages (and directory writes) sent to other nodes
    received: int  # messages from other nodes
    dropped: int  # not sent: queue full, link down, or too large
    undeliverable: int  # for a session that had gone by the time it arrived
    queued: int  # waiting to be sent
    msgs_out_per_s: float
    msgs_in_per_s: float
    probe_lags: Histogram  # round trips of the node's probe of its own link


class Bus(Protocol):
    """What a hub tells the rest of the cluster. Every method returns at once (never blocks)."""

    node: str

    def session_started(self, session_id: str) -> None:
        """A json session (a private-message target) started on this node."""

    def session_ended(self, session_id: str) -> None:
        """A json session of this node ended (its rooms were left first)."""

    def broadcast(self, frame: bytes) -> None:
        """A client broadcast, already framed, for every json session on other nodes."""

    def private(self, target: str, frame: bytes) -> bool:
        """A private message for a session of another node; False if no live node holds it."""

    def room_joined(self, room: str, session_id: str) -> None:
        """A session of this node joined ``room`` (newly: a repeated join is not told)."""

    def room_left(self, room: str, session_id: str) -> None:
        """A session of this node left ``room`` (or ended while in it)."""

    def room_message(self, room: str, frame: bytes) -> None:
        """A framed room message for the room's members on other nodes."""

    def room_post(self, room: str, frame: bytes, post_id: int) -> bool:
        """A room message without an offset, with room history on: the bus gives it
        the room's next offset, keeps it, and delivers it to the members on every
        node; to this node's through ``Inbound.room_kept(post_id, frame)`` (none
        if ``post_id`` is 0), in the order posted. False: not taken (Redis unreachable)."""

    def room_position(self, room: str, since: tuple[str, int] | None, join_id: int) -> bool:
        """Ask for the room's position (and with ``since`` the messages after it),
        answered by ``Inbound.position(join_id, ...)`` after every room message
        before it and before any after it. False: not taken (Redis unreachable)."""

    def resume_ask(
        self, session_id: str, token: str, seq: int, user: str | None, ask_id: int
    ) -> list[str] | None:
        """Ask the node holding ``session_id`` to hand it over (PROTOCOL.md 11.1),
        answered by ``Inbound.handed(ask_id, reason, state)``; None if no live
        node holds it, else the session's rooms, subscribed to before asking."""

    def adopted(self, session_id: str, node: str, rooms: list[str]) -> None:
        """A session of ``node`` now lives here, in ``rooms``: the cluster is told,
        and nobody sees a change."""

    def released(self, session_id: str, node: str) -> None:
        """A session of this node was handed over to ``node``: what still comes
        for it here goes there for a while; its rooms may be empty here now."""

    def remote_members(self, room: str) -> Iterable[str]:
        """The ids of ``room``'s members on other nodes."""

    def operator_broadcast(self, text: str, room: str | None) -> None:
        """An operator broadcast (to everyone, or to one room) for the other nodes."""

    def operator_close(self, session_id: str) -> bool:
        """Ask the node holding ``session_id`` to close it; False if no live node holds it."""

    @property
    def link_state(self) -> str:
        """The link to the other nodes: "up", "down" or "connecting"."""

    def stats(self) -> BusStats:
        """This node's traffic and link figures now."""
        ...

    def info(self) -> ClusterInfo:
        """Figures for an operator: nodes, their sessions and rooms, heartbeats, traffic, drops."""
