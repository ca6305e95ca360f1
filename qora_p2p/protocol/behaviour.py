"""Protocol-level Byzantine behaviour: a filter between a member's honest core and its links.

Theory of operation
-------------------
A Byzantine member runs the unmodified `NodeCore`; its driver passes every effect through
`Misbehaviour.apply`, which may drop it, split a broadcast into conflicting sends, or add raw
bytes. The simulator and the TCP node share this module, so a behaviour tested over thousands of
simulated seeds is the same one real processes run. Poisoned *updates* (sign flip, ALIE, ...) are a
different matter: they change what the member trains or sends as its update (see
`qora_p2p.learning.attacks` and `qora_p2p.node.workload`), not how it speaks the protocol.

==========================  ==================================================================
behaviour                   what the member does
==========================  ==================================================================
silent                      sends nothing at all
withhold_votes              never sends a prevote or precommit
equivocate_updates          signs two different updates for the round; half the members get each
conflicting_votes           sends its vote to half the members and a nil vote to the rest
equivocate_proposals        as proposer, a valid proposal to half the members, a forged one to the rest
invalid_proposals           as proposer, only a proposal whose model digest is wrong
junk                        after each broadcast, random bytes to every member
replay                      after each broadcast, old messages of its own to three members
flood                       after each broadcast of its update, many signed full-size updates
                            of the next round, next-round votes and sync requests to everyone
==========================  ==================================================================

Randomness comes from the ``rng`` given (the simulator's seeded stream, or a node's own).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from qora_p2p.errors import ConfigError
from qora_p2p.identity import Identity
from qora_p2p.protocol.effects import Broadcast, Effect, Raw, Send
from qora_p2p.protocol.messages import (
    NIL,
    SYNC_RECORDS_MAX,
    Message,
    Precommit,
    Prevote,
    Proposal,
    SyncRequest,
    Update,
    Value,
)

if TYPE_CHECKING:
    import random

__all__ = ["PROTOCOL_BEHAVIOURS", "Misbehaviour"]

PROTOCOL_BEHAVIOURS = (
    "equivocate_updates",
    "equivocate_proposals",
    "conflicting_votes",
    "invalid_proposals",
    "withhold_votes",
    "silent",
    "junk",
    "replay",
    "flood",
)
REPLAY_HISTORY_MAX = 64  # own old messages kept for replays
REPLAY_TARGETS = 3  # members that get a replayed message per broadcast
JUNK_BYTES_MAX = 64
FLOOD_COPIES = 32  # next-round updates, votes and sync requests per member per own update


class _LazyHalf:
    """A random half of the members, drawn only if a behaviour asks (drawing costs a sample)."""

    def __init__(self, rng: random.Random, members: int) -> None:
        self.rng, self.members = rng, members
        self.chosen: set[int] | None = None

    def __contains__(self, member: int) -> bool:
        if self.chosen is None:
            self.chosen = set(self.rng.sample(range(self.members), self.members // 2))
        return member in self.chosen


class Misbehaviour:
    """One Byzantine member's effect filter.

    Args:
        behaviour: one of `PROTOCOL_BEHAVIOURS`.
        identity: the member's key (it signs its conflicting messages).
        genesis_hash: the network.
        me: the member's index; members: n.
        rng: where its random choices come from.

    Raises:
        ConfigError: an unknown behaviour.
    """

    def __init__(self, behaviour: str, identity: Identity, genesis_hash: bytes, me: int, members: int, rng: random.Random) -> None:
        if behaviour not in PROTOCOL_BEHAVIOURS:
            raise ConfigError(f"unknown protocol behaviour {behaviour!r}; known: {', '.join(PROTOCOL_BEHAVIOURS)}")
        self.behaviour, self.identity, self.genesis_hash = behaviour, identity, genesis_hash
        self.me, self.members, self.rng = me, members, rng
        self.history: list[bytes] = []
        self.last_update: Update | None = None  # flood: a full-size payload to vary

    def sent(self, data: bytes) -> None:
        """The driver sent ``data`` (encoded): kept for replays."""
        if self.behaviour == "replay" and len(self.history) < REPLAY_HISTORY_MAX:
            self.history.append(data)

    def apply(self, effect: Effect) -> list[Effect]:  # noqa: PLR0911
        """The effects to execute instead of ``effect`` (``Raw`` items send bytes as they are)."""
        behaviour = self.behaviour
        if behaviour == "silent" and isinstance(effect, Send | Broadcast):
            return []
        if behaviour == "withhold_votes" and isinstance(effect, Broadcast) and isinstance(effect.message, Prevote | Precommit):
            return []
        if not isinstance(effect, Broadcast):
            return [effect]
        message = effect.message
        half = _LazyHalf(self.rng, self.members)
        others = [peer for peer in range(self.members) if peer != self.me]
        if behaviour == "equivocate_updates" and isinstance(message, Update):
            second = self._conflicting_update(message)
            return [Send(peer, message if peer in half else second) for peer in others]
        if behaviour == "conflicting_votes" and isinstance(message, Prevote | Precommit) and message.value_id != NIL:
            kind = type(message)
            nil = kind.create(self.identity, self.genesis_hash, message.round, message.view, NIL, message.voter)
            return [Send(peer, message if peer in half else nil) for peer in others]
        if behaviour in ("equivocate_proposals", "invalid_proposals") and isinstance(message, Proposal):
            forged = self._forged_proposal(message)
            if behaviour == "invalid_proposals":
                return [Broadcast(forged)]
            return [Send(peer, message if peer in half else forged) for peer in others]
        if behaviour == "junk":
            junk = self.rng.randbytes(self.rng.randint(1, JUNK_BYTES_MAX))
            return [effect, *(Raw(peer, junk) for peer in others)]
        if behaviour == "replay" and self.history:
            return [effect, *(Raw(peer, self.rng.choice(self.history)) for peer in others[:REPLAY_TARGETS])]
        if behaviour == "flood" and isinstance(message, Update | Prevote | Precommit):
            if isinstance(message, Update):
                self.last_update = message
            return [effect, *self._flood(message.round)]
        return [effect]

    def _flood(self, round_number: int) -> list[Effect]:
        """Signed messages no honest member sends this many of: next-round updates (full size,
        decodable, each with its own digest), next-round votes of many views, sync requests. It
        goes on after the member is banned: its votes still go out."""
        floods: list[Message] = []
        update = self.last_update
        base = bytearray(update.payload if update is not None else b"")
        for copy in range(FLOOD_COPIES):
            if update is not None:
                base[:4] = (copy + 1).to_bytes(4, "little")
                floods.append(Update.create(self.identity, self.genesis_hash, round_number + 1, update.prev_hash, self.me, bytes(base)))
            floods.append(Prevote.create(self.identity, self.genesis_hash, round_number + 1, copy, NIL, self.me))
            floods.append(SyncRequest(max(1, round_number - copy), SYNC_RECORDS_MAX, True))
        # One broadcast each (every member but us, in member order): what a Send to each of them
        # would do, as one effect instead of n - 1.
        return [Broadcast(flood) for flood in floods]

    def _conflicting_update(self, update: Update) -> Update:
        flipped = bytes(byte ^ 0x01 for byte in update.payload[:4]) + update.payload[4:]
        return Update.create(self.identity, self.genesis_hash, update.round, update.prev_hash, update.sender, flipped)

    def _forged_proposal(self, proposal: Proposal) -> Proposal:
        value = proposal.value
        bogus = Value(value.round, value.prev_hash, value.inputs, value.evidence, hashlib.sha256(value.model_digest).digest(), value.ledger_digest)
        return Proposal.create(self.identity, self.genesis_hash, proposal.view, proposal.valid_view, proposal.proposer, bogus)
