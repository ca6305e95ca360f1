"""The core fuzzer's Byzantine members: what they have seen, and the validly signed but arbitrary
messages of every type they make from it.

`Knowledge` holds what honest members sent (updates, proposals' values, precommit signatures,
evidence, committed records and states), pruned to recent rounds so a long run stays small.
`Forger` signs messages of every type in `messages.MESSAGE_TYPES` with a Byzantine member's key:
fields near the target's round and view or far from them, bogus or known digests, payloads with
the fixed-point edge values (int32 -2**31 included), values that are valid (recomputed with
`compute_round`) or broken in one field, certificates mixing real and junk signatures, sync
responses cut from the honest chain or forged, and evidence that proves or only pretends to.

Every choice comes from one ``random.Random``: a seeded one in the long run, hypothesis's in the
quick one (so a failure shrinks).
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING

import msgpack

from qora_p2p.errors import QoraError
from qora_p2p.identity import Identity
from qora_p2p.protocol.evidence import signer_in
from qora_p2p.protocol.limits import VIEWS_AHEAD_MAX
from qora_p2p.protocol.messages import (
    DIGEST_BYTES,
    NIL,
    PROTOCOL_VERSION,
    ROUND_MAX,
    SYNC_RECORDS_MAX,
    VIEW_MAX,
    Announce,
    Evidence,
    EvidenceMessage,
    Fetch,
    Hello,
    Limits,
    Message,
    Precommit,
    Prevote,
    Proposal,
    Record,
    SignedHeader,
    StateSnapshot,
    SyncRequest,
    SyncResponse,
    Update,
    Value,
    conflicting,
    domain,
)
from qora_p2p.protocol.state import (
    AgreedState,
    RoundResult,
    chain_origin,
    compute_round,
    eligible_members,
    snapshot_bytes,
)

if TYPE_CHECKING:
    from qora_p2p.protocol.core import NodeCore
    from qora_p2p.protocol.genesis import Genesis

__all__ = ["INT32_EDGES", "NO_STEERING", "ComputeCache", "Forger", "Knowledge", "Steering", "int32_vector"]

INT32_EDGES = (0, 1, -1, 2**31 - 1, -(2**31) + 1, 2**30, -(2**30), 2**16, -(2**16))
INT32_REFUSED = -(2**31)  # the one int32 the fixed-point decoder refuses (encode never makes it)
ROUND_EDGES = (1, 2, 2**31 - 1, 2**31, 2**32, 2**53 + 1, ROUND_MAX - 1, ROUND_MAX)
VIEW_EDGES = (0, 1, VIEWS_AHEAD_MAX, VIEWS_AHEAD_MAX + 1, 2**16, VIEW_MAX - 1, VIEW_MAX)
# Cumulative chances of the views `Forger.view` picks: the target's, one near it, one of the first,
# about VIEWS_AHEAD_MAX ahead (the admission edge), an edge value, anything.
VIEW_CHANCES = (0.4, 0.72, 0.82, 0.9, 0.96)
ROUNDS_KEPT = 8  # rounds of updates, values and signatures the Byzantine members remember
HISTORY_KEPT = 4 * SYNC_RECORDS_MAX  # committed rounds remembered, to answer catch-up far behind
OBSERVED_MAX = 512  # honest messages kept for replays
FORGED_MAX = 64  # own messages kept for replays
VALUES_PER_ROUND_MAX = 16
COMPUTE_CACHE_MAX = 4096


def int32_vector(rng: Random, dimension: int, refused: bool) -> bytes:
    """A payload: edge values, small values and arbitrary int32s; -2**31 only if ``refused``."""
    values = []
    for _ in range(dimension):
        roll = rng.random()
        if roll < 0.3:
            values.append(rng.choice(INT32_EDGES))
        elif roll < 0.35 and refused:
            values.append(INT32_REFUSED)
        elif roll < 0.75:
            values.append(rng.randint(-1000, 1000))
        else:
            values.append(rng.randint(-(2**31) + 1, 2**31 - 1))
    return struct.pack(f"<{dimension}i", *values)


class ComputeCache:
    """`compute_round` results by inputs: members validate the same values over and over."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.results: dict[tuple[object, ...], RoundResult | QoraError] = {}
        self.hits = 0

    def __call__(
        self, state: AgreedState, senders: Sequence[int], payloads: Sequence[bytes], culprits: Sequence[int]
    ) -> RoundResult:
        """The round transition's result; raises the QoraError it raises (a refused input)."""
        key = (
            state.round,
            state.last_hash,
            state.model_digest(),
            state.ledger_digest(),
            tuple(senders),
            tuple(payloads),
            tuple(culprits),
        )
        result = self.results.get(key)
        if result is None:
            try:
                result = compute_round(self.genesis, state, senders, payloads, culprits)
            except QoraError as error:
                result = error
            if len(self.results) >= COMPUTE_CACHE_MAX:
                self.results.clear()
            self.results[key] = result
        else:
            self.hits += 1
        if isinstance(result, QoraError):
            raise result
        return result


class Knowledge:
    """What the Byzantine members saw of the honest members (they see every message)."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.observed: deque[Message] = deque(maxlen=OBSERVED_MAX)
        self.forged: deque[Message] = deque(maxlen=FORGED_MAX)
        self.updates: dict[tuple[int, bytes], dict[int, dict[bytes, Update]]] = {}  # (round, prev) -> sender -> digest
        self.values: dict[int, deque[Value]] = {}  # round -> values proposed or certified
        self.precommits: dict[
            tuple[int, int, bytes], dict[int, bytes]
        ] = {}  # (round, view, value) -> voter -> signature
        self.evidence: deque[Evidence] = deque(maxlen=16)  # proofs and pretend proofs
        self.proofs: deque[Evidence] = deque(maxlen=16)  # real proofs of equivocation
        self.records: dict[int, Record] = {}  # committed history (the latest committer's, if members fork)
        self.states: dict[int, AgreedState] = {}  # state after each committed round
        self.top = 0  # the newest round seen

    def learn(self, message: Message) -> None:
        """An honest member sent ``message``."""
        self.observed.append(message)
        if isinstance(message, Update):
            self.update(message)
        elif isinstance(message, Proposal):
            self.value(message.value)
        elif isinstance(message, Precommit) and message.value_id != NIL:
            self.precommits.setdefault((message.round, message.view, message.value_id), {})[message.voter] = (
                message.signature
            )
        elif isinstance(message, EvidenceMessage):
            self.evidence.append(message.evidence)
            self.proofs.append(message.evidence)

    def update(self, update: Update) -> None:
        self._top(update.round)
        self.updates.setdefault((update.round, update.prev_hash), {}).setdefault(update.sender, {})[update.digest] = (
            update
        )

    def value(self, value: Value) -> None:
        self._top(value.round)
        held = self.values.setdefault(value.round, deque(maxlen=VALUES_PER_ROUND_MAX))
        if value not in held:
            held.append(value)

    def committed(self, record: Record, state: AgreedState | None) -> None:
        """An honest member committed or installed ``record`` (reaching ``state``, if known)."""
        number = record.value.round
        self._top(number)
        self.records[number] = record
        self.value(record.value)
        if state is not None:
            self.states[number] = state
        for table in (self.records, self.states):
            if len(table) > HISTORY_KEPT:
                for old in sorted(table)[: len(table) - HISTORY_KEPT]:
                    del table[old]

    def _top(self, round_number: int) -> None:
        if round_number <= self.top or round_number > self.top + 1_000_000:
            return  # a wild round of a forged message is no reason to forget the real ones
        self.top = round_number
        oldest = self.top - ROUNDS_KEPT
        self.updates = {key: held for key, held in self.updates.items() if key[0] >= oldest}
        self.values = {number: held for number, held in self.values.items() if number >= oldest}
        self.precommits = {key: held for key, held in self.precommits.items() if key[0] >= oldest}

    def chain_hash(self, round_number: int) -> bytes | None:
        """``H[round_number]`` as the honest members committed it, if known."""
        if round_number == 0:
            return chain_origin(self.genesis)
        record = self.records.get(round_number)
        return None if record is None else record.value.id(self.genesis.hash)


@dataclass(frozen=True)
class Steering:
    """What the forger keeps away from, to steer around known findings (test_fuzz_findings.py)
    so that a long run explores past them; the defaults steer around nothing."""

    view_max: int = VIEW_MAX  # the highest view forged
    junk_earlier_certificates: bool = True  # sync responses whose earlier records carry junk certificates


NO_STEERING = Steering()


@dataclass(frozen=True)
class Target:
    """Where the member a message is aimed at stands."""

    core: NodeCore
    round: int
    view: int
    last_hash: bytes


class Forger:
    """Validly signed messages of every type from the Byzantine members, with arbitrary fields."""

    def __init__(
        self,
        genesis: Genesis,
        identities: Sequence[Identity],
        byzantine: Sequence[int],
        knowledge: Knowledge,
        rng: Random,
        compute: ComputeCache,
        steering: Steering = NO_STEERING,
    ) -> None:
        self.genesis, self.identities, self.byzantine = genesis, identities, tuple(byzantine)
        self.steering = steering
        self.knowledge, self.rng, self.compute = knowledge, rng, compute
        self.size = genesis.size
        self.limits = Limits(genesis.size, genesis.model.dimension)
        self.hash = genesis.hash
        self.makers: dict[str, Callable[[int, Target], Message]] = {
            "hello": self.hello,
            "update": self.update,
            "announce": self.announce,
            "fetch": self.fetch,
            "proposal": self.proposal,
            "prevote": self.prevote,
            "precommit": self.precommit,
            "record": self.record,
            "sync_request": self.sync_request,
            "sync_response": self.sync_response,
            "evidence": self.evidence,
        }
        self.kinds = tuple(self.makers)

    def message(self, sender: int, core: NodeCore, kind: str | None = None) -> Message:
        """One message from Byzantine member ``sender`` to ``core`` (of a random type unless
        ``kind``); the constructors may refuse it (MessageError), as the codec would."""
        target = Target(core, core.round.number, core.round.agreement.consensus.view, core.state.last_hash)
        made = self.makers[kind or self.rng.choice(self.kinds)](sender, target)
        self.knowledge.forged.append(made)
        return made

    # ------------------------------------------------------------------------------ fields

    def round(self, target: Target) -> int:
        roll = self.rng.random()
        if roll < 0.55:
            return target.round
        if roll < 0.7:
            return target.round + 1
        if roll < 0.82:
            return max(1, target.round - self.rng.randint(1, 3))
        if roll < 0.92:
            return target.round + self.rng.randint(2, 6)
        if roll < 0.96:
            return self.rng.choice(ROUND_EDGES)
        return self.rng.randint(1, ROUND_MAX)

    def view(self, target: Target) -> int:
        return min(self.steering.view_max, self._view(target))

    def _view(self, target: Target) -> int:
        ahead = target.view + self.rng.choice((VIEWS_AHEAD_MAX - 1, VIEWS_AHEAD_MAX, VIEWS_AHEAD_MAX + 1))
        near = max(0, target.view + self.rng.randint(-3, 3))
        choices = (
            target.view,
            near,
            self.rng.randint(0, 3),
            ahead,
            self.rng.choice(VIEW_EDGES),
            self.rng.randint(0, VIEW_MAX),
        )
        return choices[bisect.bisect(VIEW_CHANCES, self.rng.random())]

    def digest(self) -> bytes:
        return self.rng.randbytes(DIGEST_BYTES)

    def prev_hash(self, round_number: int, target: Target) -> bytes:
        roll = self.rng.random()
        if roll < 0.1:
            return self.digest()
        if round_number == target.round and roll < 0.9:
            return target.last_hash
        known = self.knowledge.chain_hash(round_number - 1)
        return target.last_hash if known is None else known

    def updates_of(self, round_number: int, prev_hash: bytes) -> dict[int, dict[bytes, Update]]:
        return self.knowledge.updates.get((round_number, prev_hash), {})

    def known_digest(self, round_number: int, prev_hash: bytes, sender: int) -> bytes:
        held = self.updates_of(round_number, prev_hash).get(sender)
        if held and self.rng.random() < 0.8:
            return self.rng.choice(sorted(held))
        return self.digest()

    def value_id(self, round_number: int) -> bytes:
        roll = self.rng.random()
        values = self.knowledge.values.get(round_number)
        if values and roll < 0.6:
            return self.rng.choice(values).id(self.hash)
        return NIL if roll < 0.85 else self.digest()

    def member(self) -> int:
        return self.rng.randrange(self.size)

    def signer(self, sender: int) -> int:
        """Who a signed message claims as its author: mostly its real signer."""
        return sender if self.rng.random() < 0.93 else self.member()

    # ------------------------------------------------------------------------------ one maker per type

    def hello(self, sender: int, target: Target) -> Message:
        version = PROTOCOL_VERSION if self.rng.random() < 0.8 else self.rng.randint(1, 2**16)
        last_hash = target.last_hash if self.rng.random() < 0.5 else self.digest()
        return Hello(version, self.round(target), last_hash)

    def update(self, sender: int, target: Target) -> Message:
        number = self.round(target)
        update = self.signed_update(sender, number, self.prev_hash(number, target), self.signer(sender))
        if update.sender == sender:
            self.knowledge.update(update)
        return update

    def signed_update(self, sender: int, number: int, prev_hash: bytes, claimed: int) -> Update:
        payload = int32_vector(self.rng, self.genesis.model.dimension, refused=True)
        return Update.create(self.identities[sender], self.hash, number, prev_hash, claimed, payload)

    def announce(self, sender: int, target: Target) -> Message:
        return Announce(self.round(target), self.rng.randbytes((self.size + 7) // 8))

    def fetch(self, sender: int, target: Target) -> Message:
        number = self.round(target)
        prev_hash = self.prev_hash(number, target)
        wanted = []
        for _ in range(self.rng.randint(1, self.size)):
            member = self.member()
            wanted.append((member, NIL if self.rng.random() < 0.3 else self.known_digest(number, prev_hash, member)))
        return Fetch(number, tuple(wanted))

    def proposal(self, sender: int, target: Target) -> Message:
        number = self.round(target)
        view = self.view(target)
        if self.rng.random() < 0.85:  # the view's proposer signs, where that is this member
            view += (sender - number - view) % self.size
        valid_view = -1 if view == 0 or self.rng.random() < 0.6 else self.rng.randint(0, view - 1)
        value = self.value(number, target)
        return Proposal.create(self.identities[sender], self.hash, view, valid_view, self.signer(sender), value)

    def _vote(self, kind: type[Prevote] | type[Precommit], sender: int, target: Target) -> Message:
        number = self.round(target)
        return kind.create(
            self.identities[sender], self.hash, number, self.view(target), self.value_id(number), self.signer(sender)
        )

    def prevote(self, sender: int, target: Target) -> Message:
        return self._vote(Prevote, sender, target)

    def precommit(self, sender: int, target: Target) -> Message:
        return self._vote(Precommit, sender, target)

    def record(self, sender: int, target: Target) -> Message:
        number = self.round(target)
        known = self.knowledge.records.get(number)
        roll = self.rng.random()
        if known is not None and roll < 0.3:
            return known if self.rng.random() < 0.5 else self.recertified(known.value, known.view)
        chain = self.chain(target) if number == target.round and roll < 0.5 else None
        if chain is not None:
            return chain[0][0]
        value = (
            self.rng.choice(self.knowledge.values[number])
            if roll < 0.6 and self.knowledge.values.get(number)
            else self.value(number, target)
        )
        return self.recertified(value, self.view(target))

    def recertified(self, value: Value, view: int) -> Record:
        """A certificate for ``value`` in ``view``: Byzantine members sign, honest members' real
        precommits are reused where seen, the rest are junk signatures."""
        value_id = value.id(self.hash)
        seen = self.knowledge.precommits.get((value.round, view, value_id), {})
        certificate = []
        for voter in range(self.size):
            if self.rng.random() < 0.2:
                continue
            if voter in self.byzantine:
                body = Precommit.body(value.round, view, value_id, voter)
                signature = self.identities[voter].sign(domain(self.hash, Precommit.KIND), body)
            else:
                signature = seen.get(voter) or self.rng.randbytes(64)
            certificate.append((voter, signature))
        return Record(value, view, tuple(certificate))

    def sync_request(self, sender: int, target: Target) -> Message:
        first = self.round(target) if self.rng.random() < 0.8 else self.rng.randint(1, max(1, target.round))
        return SyncRequest(first, self.rng.randint(0, SYNC_RECORDS_MAX), self.rng.random() < 0.6)

    def sync_response(self, sender: int, target: Target) -> Message:
        chain = self.chain(target) if self.rng.random() < 0.5 else None
        if chain is not None:
            records, state = chain
            snapshot = (
                StateSnapshot(state.round, *snapshot_bytes(state))
                if self.rng.random() < 0.8
                else self.snapshot(records)
            )
            return SyncResponse(tuple(self.mutate_records(records)), snapshot)
        records = self.history(target)
        if self.rng.random() < 0.2:
            records.append(self.recertified(self.value(target.round + len(records), target), self.view(target)))
        records = self.mutate_records(records)
        return SyncResponse(tuple(records[:SYNC_RECORDS_MAX]), self.snapshot(records))

    def chain(self, target: Target) -> tuple[list[Record], AgreedState] | None:
        """Rounds the Byzantine members certify by themselves, where they hold a quorum of keys:
        each round lists only their own updates, on the target's chain, with the digests
        `compute_round` gives; and the state after the last."""
        if len(self.byzantine) < self.genesis.quorum:
            return None
        state, records = target.core.state, []
        for _ in range(self.rng.randint(1, 4)):
            number = state.round + 1
            eligible = set(eligible_members(self.genesis, state, number))
            senders = [member for member in self.byzantine if member in eligible]
            if len(senders) < self.genesis.inputs_min:
                break
            dimension = self.genesis.model.dimension
            updates = [
                Update.create(
                    self.identities[member],
                    self.hash,
                    number,
                    state.last_hash,
                    member,
                    int32_vector(self.rng, dimension, refused=False),
                )
                for member in senders
            ]
            for update in updates:
                self.knowledge.update(update)  # so that a fetch for them is answered
            try:
                result = self.compute(state, senders, [update.payload for update in updates], ())
            except QoraError:
                break
            value = Value(
                number,
                state.last_hash,
                tuple((update.sender, update.digest) for update in updates),
                (),
                result.model_digest,
                result.ledger_digest,
            )
            view = self.rng.choice((0, 0, 1, self.view(target)))
            value_id = value.id(self.hash)
            signatures = tuple(
                (
                    voter,
                    self.identities[voter].sign(
                        domain(self.hash, Precommit.KIND), Precommit.body(number, view, value_id, voter)
                    ),
                )
                for voter in self.byzantine
            )
            records.append(Record(value, view, signatures))
            state = result.state.committed(value_id)
        return (records, state) if records else None

    def history(self, target: Target) -> list[Record]:
        """Consecutive committed records from about the target's round on."""
        first = max(1, target.round + self.rng.choice((0, 0, 0, -1, 1, -4)))
        count = self.rng.randint(0, 8) if self.rng.random() < 0.9 else self.rng.randint(0, SYNC_RECORDS_MAX)
        return [
            self.knowledge.records[number] for number in range(first, first + count) if number in self.knowledge.records
        ]

    def mutate_records(self, records: list[Record]) -> list[Record]:
        roll = self.rng.random()
        if len(records) >= 2 and roll < 0.2 and self.steering.junk_earlier_certificates:
            index = self.rng.randrange(len(records) - 1)  # an earlier record's certificate: junk
            record = records[index]
            records[index] = Record(
                record.value, record.view, tuple((voter, self.rng.randbytes(64)) for voter, _ in record.certificate)
            )
        elif len(records) >= 3 and roll < 0.25:
            del records[self.rng.randrange(1, len(records) - 1)]
        elif len(records) >= 2 and roll < 0.28:
            records.reverse()
        elif records and roll < 0.33:
            last = records[-1]
            records[-1] = Record(
                last.value, last.view, last.certificate[: self.rng.randrange(len(last.certificate) + 1)]
            )
        return records

    def snapshot(self, records: list[Record]) -> StateSnapshot | None:
        roll = self.rng.random()
        if roll < 0.25:
            return None
        number = records[-1].value.round if records else self.rng.randint(1, max(1, self.knowledge.top))
        state = self.knowledge.states.get(number)
        if state is not None and roll < 0.85:
            model, aggregate, ledger = snapshot_bytes(state)
        else:
            model = self.rng.randbytes(self.limits.model_bytes)
            aggregate = int32_vector(self.rng, self.genesis.model.dimension, refused=True)
            ledger = self.rng.randbytes(self.rng.randint(0, self.limits.ledger_bytes_max))
        if self.rng.random() < 0.15:
            aggregate = int32_vector(self.rng, self.genesis.model.dimension, refused=True)
        if self.rng.random() < 0.1:
            ledger = ledger[: self.rng.randrange(len(ledger) + 1)]
        return StateSnapshot(number, model, aggregate, ledger)

    def evidence(self, sender: int, target: Target) -> Message:
        roll = self.rng.random()
        if roll < 0.3 and self.knowledge.evidence:
            return EvidenceMessage(self.rng.choice(self.knowledge.evidence))
        if roll < 0.5 and len(self.knowledge.observed) >= 2:
            first, second = self.rng.sample(list(self.knowledge.observed), 2)
            headers = [header for header in (self.header_of(first), self.header_of(second)) if header is not None]
            if len(headers) == 2:
                return EvidenceMessage(Evidence(self.member(), headers[0], headers[1]))
        proof = self.equivocation(sender, target)
        if roll > 0.9:
            proof = Evidence(self.member(), proof.first, proof.second)
        return EvidenceMessage(proof)

    def header_of(self, message: Message) -> SignedHeader | None:
        if isinstance(message, Update | Prevote | Precommit):
            return message.header()
        if isinstance(message, Proposal):
            return message.header(self.hash)
        return None

    def equivocation(self, sender: int, target: Target) -> Evidence:
        """Two messages ``sender`` signed for one slot (or, sometimes, not quite one slot)."""
        number, view = self.round(target), self.view(target)
        kind = self.rng.choice(("update", "proposal", "prevote", "precommit", "junk"))
        if kind == "junk":
            headers = [self.junk_header(sender) for _ in range(2)]
        else:
            bodies = [self.body(kind, sender, number, view) for _ in range(2)]
            if self.rng.random() < 0.1:
                bodies[1] = self.body(kind, sender, number + 1, view)
            headers = [
                SignedHeader(kind, body, self.identities[sender].sign(domain(self.hash, kind), body)) for body in bodies
            ]
        proof = Evidence(sender, headers[0], headers[1])
        self.knowledge.evidence.append(proof)
        if conflicting(*headers) and signer_in(headers[0]) == signer_in(headers[1]) == sender:
            self.knowledge.proofs.append(proof)
        return proof

    def body(self, kind: str, sender: int, number: int, view: int) -> bytes:
        if kind == "update":
            return Update.body(
                number, self.knowledge.chain_hash(number - 1) or self.digest(), self.signer(sender), self.digest()
            )
        if kind == "proposal":
            return Proposal.body(number, view, -1, self.signer(sender), self.digest())
        return Prevote.body(number, view, self.rng.choice((NIL, self.digest())), self.signer(sender))

    def junk_header(self, sender: int) -> SignedHeader:
        kind = self.rng.choice(("update", "proposal", "prevote", "precommit"))
        fields: list[object] = [self.rng.randint(-2, 2**40) for _ in range(self.rng.randint(0, 6))]
        if len(fields) >= 4 and self.rng.random() < 0.5:
            fields[2 if kind == "update" else 3] = self.rng.choice((sender, self.member(), True, b"x"))
        body: bytes = msgpack.packb(fields) if self.rng.random() < 0.8 else self.rng.randbytes(self.rng.randint(0, 40))
        return SignedHeader(kind, body, self.identities[sender].sign(domain(self.hash, kind), body))

    # ------------------------------------------------------------------------------ values

    def value(self, number: int, target: Target) -> Value:
        """A value for round ``number``: valid where the target could check it, or broken."""
        prev_hash = self.prev_hash(number, target)
        roll = self.rng.random()
        if number == target.round and prev_hash == target.last_hash and roll < 0.6:
            valid = self.valid_value(target)
            if valid is not None:
                return valid
        senders = sorted(self.rng.sample(range(self.size), self.rng.randint(0, self.size)))
        inputs = tuple((sender, self.known_digest(number, prev_hash, sender)) for sender in senders)
        evidence = tuple(
            self.rng.sample(list(self.knowledge.evidence), min(len(self.knowledge.evidence), self.rng.randint(0, 2)))
        )
        return Value(number, prev_hash, inputs, evidence, self.digest(), self.digest())

    def valid_value(self, target: Target) -> Value | None:
        """Inputs the Byzantine members know of, evidence they hold, and the digests the target's
        own `compute_round` gives (then, sometimes, one thing changed)."""
        core = target.core
        eligible = set(eligible_members(self.genesis, core.state, target.round))
        known = {
            sender: held
            for sender, held in self.updates_of(target.round, target.last_hash).items()
            if sender in eligible
        }
        if len(known) < self.genesis.inputs_min:
            return None
        senders = sorted(self.rng.sample(sorted(known), self.rng.randint(self.genesis.inputs_min, len(known))))
        chosen = [
            self.rng.choice(sorted(known[sender].values(), key=lambda update: update.digest)) for sender in senders
        ]
        proofs: dict[int, Evidence] = {}
        for proof in self.knowledge.proofs:
            if self.rng.random() < 0.3 and not core.evidence.proven(proof.culprit):
                proofs.setdefault(proof.culprit, proof)
        evidence = tuple(proofs[culprit] for culprit in sorted(proofs))[: self.limits.evidence_max]
        try:
            result = self.compute(
                core.state, senders, [update.payload for update in chosen], [item.culprit for item in evidence]
            )
            digests = (result.model_digest, result.ledger_digest)
        except QoraError:
            digests = (self.digest(), self.digest())
        inputs = tuple((update.sender, update.digest) for update in chosen)
        if self.rng.random() < 0.1:
            digests = (hashlib.sha256(digests[0]).digest(), digests[1])
        return Value(target.round, target.last_hash, inputs, evidence, *digests)
