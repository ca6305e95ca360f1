"""Evidence of equivocation: two conflicting messages signed by one member, kept until committed.

Theory of operation
-------------------
A member that signs two different updates for one round, two proposals for one view, or two votes
in one (round, view, step) slot is proven Byzantine by the two signed headers alone: anyone holding
the genesis can check them. The `EvidencePool` checks a proof, keeps at most one per culprit (up to
`EVIDENCE_POOL_MAX`), and offers the unproven ones to the proposals this member builds; once a
value carrying the proof commits, the ledger bans the culprit for good and the proof is dropped.

Proofs this member detected itself are announced, a few per round (`EVIDENCE_BROADCASTS_PER_ROUND`):
members that propose before they detect the equivocation themselves learn it that way. Received
proofs are not relayed: many members detect the same equivocation, and flooding every proof to every
member would cost O(culprits * n**2) messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

from qora_p2p.errors import MessageError
from qora_p2p.protocol.effects import Broadcast
from qora_p2p.protocol.limits import EVIDENCE_BROADCASTS_PER_ROUND, EVIDENCE_POOL_MAX
from qora_p2p.protocol.messages import Evidence, EvidenceMessage, SignedHeader, conflicting, domain

if TYPE_CHECKING:
    from qora_p2p.protocol.core import NodeCore
    from qora_p2p.protocol.state import AgreedState

__all__ = ["EvidencePool", "signer_in"]

SIGNER_FIELD = {"update": 2, "proposal": 3, "prevote": 3, "precommit": 3}  # where a body names its signer


def signer_in(header: SignedHeader) -> int | None:
    """The member a signed body names as its author, or None if the body is not well formed."""
    try:
        body = msgpack.unpackb(header.body)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    if not isinstance(body, list) or len(body) < 4:
        return None
    member = body[SIGNER_FIELD[header.kind]]
    return member if isinstance(member, int) and not isinstance(member, bool) else None


class EvidencePool:
    """One member's proofs waiting to be committed."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.pending: dict[int, Evidence] = {}  # culprit -> proof
        self.broadcasts = 0  # proofs announced in the current round

    def proven(self, member: int) -> bool:
        """Whether ``member`` is already banned for good by committed evidence."""
        ledger = self.core.state.ledger
        return ledger is not None and ledger.standings[member].proven

    def check(self, evidence: Evidence) -> None:
        """Raise MessageError/SignatureError unless ``evidence`` proves its culprit equivocated."""
        core = self.core
        if not conflicting(evidence.first, evidence.second):
            raise MessageError("evidence headers do not conflict")
        key = core.keys[evidence.culprit]
        for header in (evidence.first, evidence.second):
            core.verifier(key, domain(core.genesis_hash, header.kind), header.body, header.signature)
        if signer_in(evidence.first) != evidence.culprit or signer_in(evidence.second) != evidence.culprit:
            raise MessageError("evidence headers are not the culprit's own messages")

    def accept(self, evidence: Evidence, now_ms: int, detected: bool = True) -> None:
        """Keep a proof for our proposals (announcing it if we ``detected`` it ourselves).

        Raises:
            MessageError, SignatureError: not a proof.
        """
        if evidence.culprit in self.pending or self.proven(evidence.culprit):
            return
        self.check(evidence)
        if len(self.pending) >= EVIDENCE_POOL_MAX:
            return
        self.pending[evidence.culprit] = evidence
        if detected and self.broadcasts < EVIDENCE_BROADCASTS_PER_ROUND:
            self.broadcasts += 1
            self.core.emit(Broadcast(EvidenceMessage(evidence)))
        self.core.event("equivocation", culprit=evidence.culprit, kind=evidence.first.kind)

    def unproven(self, limit: int) -> list[int]:
        """Culprits whose proofs a value we build should carry, ascending, at most ``limit``."""
        return sorted(culprit for culprit in self.pending if not self.proven(culprit))[:limit]

    def committed(self, state: AgreedState) -> None:
        """A new state: proofs of culprits it bans for good are done; a new round's budget."""
        if state.ledger is not None:
            self.pending = {culprit: item for culprit, item in self.pending.items() if not state.ledger.standings[culprit].proven}
        self.broadcasts = 0
