"""The simulator's checkers: what must hold on every honest member, whatever the network and the
Byzantine members do.

* **agreement**: no two honest members commit different hashes for a round (also over rounds
  installed by catch-up);
* **state equality**: honest members that committed a round hold the same model and ledger digests;
* **validity**: a committed round lists at least ``n - f`` inputs, none from a proven equivocator,
  and changes the model only if at least ``n - f`` of them are eligible (not banned);
* **certificates**: every record an honest member commits or installs carries a quorum of distinct
  members' valid precommit signatures (what `qora-node inspect` and every peer it is served to check);
* **stored chain** (at the end): every record in an honest member's store verifies so, is stored
  under its own round hash, is the one the member committed or installed, and links to the record
  before it whenever the store holds that one (round 1 to `chain_origin`); a chain may restart
  after a gap only at a record that verifies on its own (a member that caught up from far);
* **no double signing**: an honest member never signs two contents for one slot, even across
  restarts (every signature is remembered here), and its store never has to refuse one;
* **no exception** escapes a core: the simulator catches it and reports member, time, event and
  traceback here (an adversary's own exception is reported as such);
* **bounded storage**: an honest member's stored bytes stay under `qora_p2p.sim.storage`'s formula
  (records grow with committed rounds only; the guard holds the round in progress only);
* **no honest ban**: no committed ledger bans an honest member (the synthetic workload gives honest
  members no reason to be banned, so a ban is the protocol's fault);
* **liveness after stabilisation**: once the last fault is over, every honest member commits (or
  installs) again within `progress_bound_ms`, and keeps doing so;
* **liveness** (at the end): every honest member committed every round.

Byzantine members are exempt: they may do anything. A violation is a message naming the round and
members; the run stops at the first one, and its seed replays it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from qora_p2p.errors import MessageError, SignatureError
from qora_p2p.identity import verify
from qora_p2p.protocol.limits import SYNC_RETRY_MS
from qora_p2p.protocol.state import AgreedState, chain_origin, contributing_members, eligible_members
from qora_p2p.sim.storage import storage_bound

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from qora_p2p.protocol.effects import Slot
    from qora_p2p.protocol.genesis import Genesis
    from qora_p2p.protocol.messages import Record
    from qora_p2p.sim.storage import StoredBytes

__all__ = ["Checkers", "progress_bound_ms"]

Verifier = Callable[[bytes, bytes, bytes, bytes], None]
TRACEBACK_LINES_MAX = 12  # the innermost frames of an escaped exception, enough to find it
CATCH_UP_MS = 3 * SYNC_RETRY_MS  # a laggard's request, the answer, and one retry
TRAINING_MS_MAX = 1_000  # the simulator trains in at most 160 ms; links add at most 120 ms
VERIFIED_CERTIFICATES_MAX = 4_096  # distinct certificates remembered as verified (a few per round)


def progress_bound_ms(genesis: Genesis) -> int:
    """How long an honest member may go without committing once the network is stable.

    Updates arrive within ``round_timeout_ms`` (view 0's clock starts by then at the latest, and
    waits ``collect_timeout_ms`` more); every view costs at most three capped timeouts; of any f + 1
    consecutive views one has an honest proposer, and one more view absorbs members entering the
    round at different times; a member that fell behind catches up within `CATCH_UP_MS`.
    """
    timing = genesis.timing
    views = genesis.faulty + 2
    return TRAINING_MS_MAX + timing.round_timeout_ms + timing.collect_timeout_ms + views * 3 * timing.timeout_cap_ms + CATCH_UP_MS


class Checkers:
    """Every check of one simulation; `violations` is what failed, in order."""

    def __init__(self, genesis: Genesis, byzantine: set[int], verifier: Verifier = verify) -> None:
        self.genesis, self.byzantine, self.verifier = genesis, byzantine, verifier
        # Certificates already verified (honest members mostly store the same records): value id,
        # view and a SHA-256 of the signatures, so an entry is small whatever n is. Emptied when full.
        self.verified: set[tuple[bytes, int, bytes]] = set()
        self.keys = [member.public_key for member in genesis.members]
        self.violations: list[str] = []
        self.commits: dict[int, dict[int, tuple[bytes, bytes, bytes]]] = {}  # round -> member -> (hash, model, ledger)
        self.signatures: dict[tuple[int, Slot], bytes] = {}
        self.stable_ms = 0  # when the last fault is over (the simulation sets it)
        self.progress_bound_ms = progress_bound_ms(genesis)
        self.progressed: dict[int, int] = {}  # honest member -> when it last committed or installed

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
        self.honest_bans(member, state)

    def certificate(self, member: int, record: Record) -> None:
        """A record an honest member persisted must verify as any peer it serves will check it."""
        if member in self.byzantine:
            return
        try:
            self._verify(record)
        except (MessageError, SignatureError) as error:
            text = f"certificate: round {record.value.round}: member {member} stored a record that does not verify: {error}"
            if text not in self.violations:  # the end-of-run scan finds what the install check found
                self.violations.append(text)

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

    def exception(self, member: int | None, at_ms: int, during: str, trace: str, adversary: bool = False) -> None:
        """An exception escaped a core (or an adversary's code) while handling ``during``."""
        lines = trace.rstrip().splitlines()
        shown = "\n    ".join(lines[-TRACEBACK_LINES_MAX:])
        origin = "adversary exception" if adversary else "exception"
        self.violations.append(f"{origin}: member {member} at {at_ms} ms, handling {during}:\n    {shown}")

    def honest_bans(self, member: int, state: AgreedState) -> None:
        """A state an honest member committed or installed bans no honest member."""
        if member in self.byzantine or state.ledger is None:
            return
        for banned, standing in enumerate(state.ledger.standings):
            if banned not in self.byzantine and not standing.eligible(state.round + 1):
                how = "for good (evidence)" if standing.proven else f"until round {standing.banned_until}"
                self.violations.append(f"honest ban: round {state.round}: member {member}'s ledger bans honest member {banned} {how}")
                return

    def stalled(self, now_ms: int, waiting: Sequence[int]) -> None:
        """No member of ``waiting`` (honest members short of the last round) has gone longer than
        the bound without progress since the network stabilised (checked as time passes, so a
        run that lost liveness stops there)."""
        for member in waiting:
            since = max(self.stable_ms, self.progressed.get(member, 0))
            if now_ms - since > self.progress_bound_ms:
                self.violations.append(
                    f"liveness after stabilisation: member {member} made no progress from {since} to {now_ms} ms "
                    f"(the network was stable from {self.stable_ms} ms; bound {self.progress_bound_ms} ms)"
                )
                return

    def progress(self, member: int, at_ms: int) -> None:
        """An honest member committed or installed a round at ``at_ms``: not too long after the
        network stabilised, nor after its previous progress."""
        if member in self.byzantine:
            return
        since = max(self.stable_ms, self.progressed.get(member, 0))
        if at_ms - since > self.progress_bound_ms:
            self.violations.append(
                f"liveness after stabilisation: member {member} made no progress from {since} to {at_ms} ms "
                f"(the network was stable from {self.stable_ms} ms; bound {self.progress_bound_ms} ms)"
            )
        self.progressed[member] = at_ms

    def stored(self, member: int, records: Sequence[tuple[Record, bytes]]) -> None:
        """At the end: an honest member's stored chain verifies, record by record, in round order."""
        if member in self.byzantine:
            return
        previous, expected = chain_origin(self.genesis), 1
        for record, stored_hash in records:
            value = record.value
            round_hash = value.id(self.genesis.hash)
            committed = self.commits.get(value.round, {}).get(member)
            problem = None
            if value.round < expected:
                problem = f"repeats or precedes the stored round {expected - 1}"
            elif value.round == expected and value.prev_hash != previous:
                problem = f"does not link to the stored round {expected - 1}"
            elif stored_hash != round_hash:
                problem = "is stored under another round hash"
            elif committed is not None and committed[0] != round_hash:
                problem = f"differs from the record the member committed ({committed[0].hex()[:16]})"
            if problem is not None:
                self.violations.append(f"stored chain: round {value.round}: member {member}'s stored record {problem}")
                return
            try:
                self._verify(record)
            except (MessageError, SignatureError):
                self.certificate(member, record)
                return
            previous, expected = round_hash, value.round + 1

    def _verify(self, record: Record) -> None:
        """`Record.verify`, once per distinct certificate (a failure is never remembered)."""
        signatures = hashlib.sha256(b"".join(voter.to_bytes(2, "big") + signature for voter, signature in record.certificate))
        key = (record.value.id(self.genesis.hash), record.view, signatures.digest())
        if key in self.verified:
            return
        record.verify(self.genesis.hash, self.keys, self.genesis.quorum, self.verifier)
        if len(self.verified) >= VERIFIED_CERTIFICATES_MAX:
            self.verified.clear()
        self.verified.add(key)

    def storage(self, member: int, measured: StoredBytes, rounds: int, views: int) -> None:
        """An honest member that committed ``rounds`` rounds stores at most `storage_bound`'s bytes."""
        if member in self.byzantine:
            return
        bound = storage_bound(self.genesis, rounds, views)
        for table in ("meta", "records", "state", "checkpoints", "signed"):
            if getattr(measured, table) > getattr(bound, table):
                self.violations.append(
                    f"storage: member {member} stores {getattr(measured, table)} bytes of {table} after {rounds} rounds, "
                    f"more than the bound {getattr(bound, table)} ({views} views in progress)"
                )
                return
        if any(round_number != rounds + 1 for round_number in measured.signed_rounds):
            self.violations.append(f"storage: member {member}'s guard holds slots of rounds {list(measured.signed_rounds)}, not only round {rounds + 1}")
