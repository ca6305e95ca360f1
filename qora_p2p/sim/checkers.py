"""The simulator's checkers: what must hold on every honest member, whatever the network and the
Byzantine members do.

* **agreement**: no two honest members commit different hashes for a round (also over rounds
  installed by catch-up);
* **state equality**: honest members that committed a round hold the same model and ledger digests;
* **validity**: a committed round lists at least ``n - f`` inputs, none from a proven equivocator,
  and changes the model only if at least ``n - f`` of them are eligible (not banned);
* **certificates**: every record an honest member commits or installs carries a quorum of distinct
  members' valid precommit signatures (what `qora-node inspect` and every peer it is served to check);
* **no double signing**: an honest member never signs two contents for one slot, even across
  restarts (every signature is remembered here), and its store never has to refuse one;
* **liveness** (at the end): every honest member committed every round.

Byzantine members are exempt: they may do anything. A violation is a message naming the round and
members; the run stops at the first one, and its seed replays it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from qora_p2p.errors import MessageError, SignatureError
from qora_p2p.identity import verify
from qora_p2p.protocol.state import AgreedState, contributing_members, eligible_members

if TYPE_CHECKING:
    from collections.abc import Mapping

    from qora_p2p.protocol.effects import Slot
    from qora_p2p.protocol.genesis import Genesis
    from qora_p2p.protocol.messages import Record

__all__ = ["Checkers"]

Verifier = Callable[[bytes, bytes, bytes, bytes], None]


class Checkers:
    """Every check of one simulation; `violations` is what failed, in order."""

    def __init__(self, genesis: Genesis, byzantine: set[int], verifier: Verifier = verify) -> None:
        self.genesis, self.byzantine, self.verifier = genesis, byzantine, verifier
        self.keys = [member.public_key for member in genesis.members]
        self.violations: list[str] = []
        self.commits: dict[int, dict[int, tuple[bytes, bytes, bytes]]] = {}  # round -> member -> (hash, model, ledger)
        self.signatures: dict[tuple[int, Slot], bytes] = {}

    def signed(self, member: int, slot: Slot, content: bytes, refused: str | None) -> None:
        """A member signed ``content`` for ``slot``; ``refused`` is its store's refusal, if any."""
        if refused is not None:
            self.violations.append(f"double signing: member {member}'s store refused {slot}: {refused}")
        if member not in self.byzantine:
            earlier = self.signatures.setdefault((member, slot), content)
            if earlier != content:
                self.violations.append(f"double signing: member {member} signed two contents for {slot}")

    def committed(self, member: int, previous: AgreedState, record: Record, state: AgreedState) -> None:
        """A member committed ``record`` on top of ``previous``, reaching ``state``."""
        if member in self.byzantine:
            return
        value = record.value
        contributors = set(contributing_members(self.genesis, previous))
        eligible = set(eligible_members(self.genesis, previous, value.round))
        if len(value.inputs) < self.genesis.inputs_min:
            self.violations.append(f"validity: round {value.round} committed with {len(value.inputs)} inputs")
        if any(sender not in contributors for sender, _ in value.inputs):
            self.violations.append(f"validity: round {value.round} includes a proven equivocator")
        aggregated = sum(1 for sender, _ in value.inputs if sender in eligible)
        null_round = aggregated < self.genesis.inputs_min
        if null_round and (not np.array_equal(state.model, previous.model) or not np.array_equal(state.aggregate, previous.aggregate)):
            self.violations.append(f"validity: round {value.round} aggregated {aggregated} eligible inputs, fewer than n - f")
        self.certificate(member, record)
        self.agreement(member, value.round, value.id(self.genesis.hash), (state.model_digest(), state.ledger_digest()))

    def certificate(self, member: int, record: Record) -> None:
        """A record an honest member persisted must verify as any peer it serves will check it."""
        if member in self.byzantine:
            return
        try:
            record.verify(self.genesis.hash, self.keys, self.genesis.quorum, self.verifier)
        except (MessageError, SignatureError) as error:
            self.violations.append(f"certificate: round {record.value.round}: member {member} stored a record that does not verify: {error}")

    def agreement(self, member: int, round_number: int, round_hash: bytes, digests: tuple[bytes, bytes] | None) -> None:
        """A member holds ``round_hash`` for a round (``digests`` of its state, when it computed it)."""
        if member in self.byzantine:
            return
        seen = self.commits.setdefault(round_number, {})
        for other, (other_hash, model, ledger) in seen.items():
            if other_hash != round_hash:
                self.violations.append(f"agreement: round {round_number}: member {member} committed {round_hash.hex()[:16]}, member {other} {other_hash.hex()[:16]}")
                break
            if digests is not None and model and (model, ledger) != digests:
                self.violations.append(f"state equality: round {round_number}: members {member} and {other} differ")
                break
        seen[member] = (round_hash, *(digests or (b"", b"")))

    def liveness(self, committed: Mapping[int, int], rounds: int) -> None:
        """At the end: every honest member committed every round (reported only if nothing else failed)."""
        if self.violations:
            return
        for member, reached in sorted(committed.items()):
            if member not in self.byzantine and reached < rounds:
                self.violations.append(f"liveness: member {member} committed {reached} of {rounds} rounds")
