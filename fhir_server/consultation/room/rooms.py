"""Who is in which room, and where each signalling message goes: pure, no I/O (the hub,
hub.py, carries out what these functions answer).

A room is one Appointment; its members are peers (one WebSocket each, a random peerId), at
most `limit` of them: a mesh, every browser sends its media to every other. A participant
joining again replaces its older socket (a reload, a network change)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: RFC 6455 §7.4.2: 4000-4999 are ours. Refusals of the join itself:
BAD_TOKEN = 4401  # the join token is malformed, forged or expired
OTHER_ROOM = 4403  # the token admits to another Appointment's room
REPLACED = 4409  # the same participant joined again, on another socket
ROOM_FULL = 4429  # the room has its `consult_max_peers` members already
#: RFC 6455 §7.4.1
TOO_BIG = 1009  # a message larger than consult_message_bytes
RESTART = 1012  # the hub went away (its worker ended): reconnect

#: the message types a browser may send (with `to`); everything else is an error message
RELAYED = frozenset({"offer", "answer", "candidate"})

#: (peerId, what to do with its socket): {"send": message} or {"close": [code, reason]}
Delivery = tuple[str, dict[str, Any]]


@dataclass
class Member:
    peer: str
    participant: str


@dataclass
class Rooms:
    rooms: dict[str, dict[str, Member]] = field(default_factory=dict)
    #: peerId -> room
    where: dict[str, str] = field(default_factory=dict)

    def join(
        self, peer: str, room: str, participant: str, limit: int, welcome: dict[str, Any]
    ) -> list[Delivery]:
        """`peer` enters `room`: a welcome naming the others (plus `welcome`'s fields) and
        peer-joined to each of them; the participant's older socket, if any, is closed first;
        a full room closes the newcomer's socket instead."""
        members = self.rooms.setdefault(room, {})
        out: list[Delivery] = []
        for old in [m.peer for m in members.values() if m.participant == participant]:
            out += [(old, close(REPLACED, "joined again on another connection"))]
            out += self.leave(old)
        members = self.rooms.setdefault(room, {})
        if len(members) >= limit:
            return out + [(peer, close(ROOM_FULL, f"the room is full ({limit} participants)"))]
        others = list(members)
        members[peer] = Member(peer, participant)
        self.where[peer] = room
        hello = {**welcome, "type": "welcome", "peerId": peer, "peers": others}
        out.append((peer, send(hello)))
        out += [(other, send({"type": "peer-joined", "peerId": peer})) for other in others]
        return out

    def relay(self, peer: str, message: dict[str, Any]) -> list[Delivery]:
        """An offer, answer or candidate from `peer` to its addressee `to`, with `from`
        added (overwriting any the sender wrote); an error message back when `to` is not in
        the room (e.g. it has just left)."""
        room = self.where.get(peer)
        if room is None:
            return []
        to = message.get("to")
        if not isinstance(to, str) or to == peer or to not in self.rooms.get(room, {}):
            return [(peer, error("unknown-peer", f"no peer {to!r} in this room", to=to))]
        return [(to, send({**message, "from": peer}))]

    def leave(self, peer: str) -> list[Delivery]:
        """`peer` goes: peer-left to those still there."""
        room = self.where.pop(peer, None)
        if room is None:
            return []
        members = self.rooms[room]
        members.pop(peer, None)
        if not members:
            del self.rooms[room]
        return [(other, send({"type": "peer-left", "peerId": peer})) for other in members]


def send(message: dict[str, Any]) -> dict[str, Any]:
    return {"send": message}


def close(code: int, reason: str) -> dict[str, Any]:
    return {"close": [code, reason]}


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The error message a socket gets for a message it sent that could not be relayed: the
    connection stays (one bad message from a buggy client must not end a consultation)."""
    return send({"type": "error", "code": code, "message": message, **extra})
