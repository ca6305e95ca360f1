"""The node core: one member's whole protocol as a sans-IO state machine.

Theory of operation
-------------------
`NodeCore` consumes events, each with the current time in milliseconds, and produces effects
(`qora_p2p.protocol.effects`); it never reads a clock, touches a socket or a disk, or draws
randomness. Inputs:

* ``receive(peer, message, now)``: a decoded message from an authenticated member;
* ``submit_update(round, payload, now)``: this member's trained update (after a `Train` effect);
* ``computed(request, result, now)``: the result of a `Compute` effect (aggregation off-thread);
* ``handle_timer(now)``: the time reached ``next_deadline()``.

Effects come out of `drain` in the order the driver must execute them; each `SignedSlot` must be
durable before any later effect leaves the process, which, with the signed slots of the current
round handed back to a restarted core, means a member never signs two different contents for one
slot, even across a crash.

The core is small machines around one round at a time:

==================  ===========================================  ==========================
machine             what it owns                                 lives
==================  ===========================================  ==========================
`Dissemination`     the round's updates: validate, store,        one round
                    announce, fetch (`dissemination`)
`Agreement`         Tendermint, proposals, votes, values,        one round
                    building and validating, timeouts
                    (`agreement`)
`EvidencePool`      proofs of equivocation until committed       the core
                    (`evidence`)
`CatchUp`           records served to others, sync requests,     the core
                    snapshots installed (`catchup`)
==================  ===========================================  ==========================

The core itself admits messages through one table (`ADMISSION`: message type -> handler and which
rounds it may concern), charges each peer's messages (and the bytes served on its requests)
against a budget per time window, keeps the
last-signed guard, and moves from round to round: a decision or an installed snapshot *closes* the
current `Round` (nothing acts on a closed round again) and opens the next one, which replays the
messages buffered for it.

One FL round ``r`` on the chain ending in ``H[r-1]``:

1. **Disseminate.** Train, sign ``UPDATE(r, H[r-1], digest)`` (after persisting it), send it to
   every member; peers validate it before storing it, and fetch what they miss by digest.
2. **Agree.** The proposer proposes a value listing at least ``n - f`` (sender, digest) pairs of
   contributing members (all but proven equivocators; banned members' updates count but are not
   aggregated), pending evidence, and the digests of the model and ledger that result; a
   validator's verdict is "valid" only once it holds every listed update and its own
   `compute_round` gives the same digests.
3. **Commit.** A quorum of precommits is the certificate. The new state is the validated result.

Every buffer is bounded (`qora_p2p.protocol.limits`); a peer that exceeds a limit or sends an
invalid message is penalised and ignored, never a crash.

A member whose last-signed guard is new abstains from signing until it is past every round it
may have signed in (`qora_p2p.protocol.abstain`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from qora_p2p.errors import FixedPointError, LocalProtocolError, MessageError, SignatureError
from qora_p2p.fixedpoint import check_vector
from qora_p2p.identity import Identity, verify
from qora_p2p.protocol.abstain import Abstention
from qora_p2p.protocol.agreement import Agreement
from qora_p2p.protocol.catchup import CatchUp
from qora_p2p.protocol.dissemination import Dissemination
from qora_p2p.protocol.effects import (
    Broadcast,
    Commit,
    Compute,
    Effect,
    Event,
    Installed,
    Penalize,
    Send,
    SignedSlot,
    Slot,
    Train,
)
from qora_p2p.protocol.evidence import EvidencePool
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.limits import (
    BUDGET_WINDOW_MS,
    EVIDENCE_POOL_MAX,
    FUTURE_MESSAGES_MAX,
    FUTURE_MESSAGES_PER_PEER_MAX,
    FUTURE_UPDATES_PER_PEER_MAX,
    GOSSIP_INTERVAL_MS,
    MESSAGES_PER_PEER_PER_WINDOW_MAX,
    VIEWS_KEPT,
)
from qora_p2p.protocol.messages import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Announce,
    EvidenceMessage,
    Fetch,
    Hello,
    Limits,
    Message,
    Precommit,
    Prevote,
    Proposal,
    Record,
    SyncRequest,
    SyncResponse,
    Update,
)
from qora_p2p.protocol.state import AgreedState, RoundResult, contributing_members, eligible_members

if TYPE_CHECKING:
    from qora_p2p.protocol.consensus import Step

__all__ = [
    "ADMISSION",
    "VIEWS_KEPT",
    "Broadcast",
    "Commit",
    "Compute",
    "Event",
    "Installed",
    "NodeCore",
    "Penalize",
    "Round",
    "Rounds",
    "Send",
    "SignedSlot",
    "Train",
]


@dataclass(eq=False)
class Round:
    """The FL round in progress: its machines and per-round bookkeeping."""

    number: int
    started_ms: int
    eligible: frozenset[int]  # aggregated: not banned
    contributors: frozenset[int]  # may send an update: not proven to equivocate (banned ones too)
    active: frozenset[int]  # the previous round's inputs: whom the proposer waits for, who proposes first
    updates: Dissemination = field(init=False)
    agreement: Agreement = field(init=False)
    records_sent: set[tuple[int, int]] = field(default_factory=set)  # (peer, round) already helped
    heard: set[int] = field(default_factory=set)  # peers any message came from during this round
    last_progress: tuple[int, Step, int] | None = None  # (view, step, updates) at the last gossip tick
    closed: bool = False  # decided or caught up past: nothing acts on it again

    def release(self) -> None:
        """Drop the machines of a closed round once nothing runs on it any more: they point back
        at the round, and without this the whole round (every update and vote it held) would
        wait for the cycle collector instead of being freed at once."""
        assert self.closed, "only a closed round is released"
        del self.updates, self.agreement


class Rounds(Enum):
    """Which rounds a message type may concern, and what the core does with the others."""

    ANY = "any"  # the handler looks at rounds itself (catch-up, evidence, hello)
    CURRENT = "current"  # earlier: help the sender catch up; next: buffer; later: ask to sync
    CURRENT_VOTING = "current_voting"  # as CURRENT, and even the next round's means we are behind


class NodeCore:
    """One member's protocol state. See the module notes.

    Args:
        genesis: the network.
        identity: this member's signing key (must be a member).
        state: the last committed state (genesis or restored).
        signed: the last-signed slots of the current round, restored after a restart.
        own_payload: this member's update payload for the current round, if one was signed.
        records: the most recent committed records (to serve catch-up).
        now_ms: the current time.
        verifier: signature check (pure; simulators share a cache across members).
        abstain: this member's guard is new (no slots): sign nothing until past every round it
            may have signed in before (module notes, "Abstaining").

    Raises:
        LocalProtocolError: the identity is not a member of the genesis, or an abstaining core
            is given signed slots.
    """

    def __init__(
        self,
        genesis: Genesis,
        identity: Identity,
        *,
        state: AgreedState,
        now_ms: int,
        signed: dict[Slot, bytes] | None = None,
        own_payload: bytes | None = None,
        records: Sequence[Record] = (),
        verifier: Callable[[bytes, bytes, bytes, bytes], None] = verify,
        abstain: bool = False,
    ) -> None:
        me = genesis.member_index(identity.public_key)
        if me is None:
            raise LocalProtocolError("this identity is not a member of the genesis")
        if abstain and signed:
            raise LocalProtocolError("a guard that holds signed slots is not new: nothing to abstain for")
        self.genesis, self.identity, self.me = genesis, identity, me
        self.size = genesis.size
        self.genesis_hash = genesis.hash
        self.keys = [member.public_key for member in genesis.members]
        self.limits = Limits(genesis.size, genesis.model.dimension)
        self.verifier = verifier
        self.state = state
        self.signed: dict[Slot, bytes] = dict(signed or {})
        self.evidence = EvidencePool(self)
        self.catchup = CatchUp(self, records)
        self.future: list[tuple[int, Message]] = []  # messages of the next round, all peers
        self.future_from: dict[int, tuple[int, int]] = {}  # peer -> (messages, updates) buffered
        self.closed_rounds: list[Round] = []  # closed during the current input, released by `drain`
        self.heard_before: frozenset[int] = frozenset(range(genesis.size))  # peers heard in the previous round
        self.gossip_deadline = now_ms + GOSSIP_INTERVAL_MS
        self.received: dict[int, int] = {}  # peer -> messages handled in the current budget window
        self.served: dict[int, int] = {}  # peer -> bytes of updates and catch-up sent it in the window
        self.budget_window_start = now_ms
        self.effects: list[Effect] = []
        self.now_ms = now_ms  # time of the latest input
        self.next_request = 1
        self.abstention = Abstention(genesis.size, genesis.faulty) if abstain and genesis.size > 1 else None
        self.round = self._new_round(now_ms)
        if self.abstaining:
            why = "a new last-signed guard: this member may have signed in the round in progress before; it signs nothing until it is past the round its peers were in"
            self.event("abstain_started", why=why, peers_to_hear=self.size - 1 - genesis.faulty)
        self._begin_round(now_ms, own_payload)

    # ---------------------------------------------------------------------------- public inputs

    def drain(self) -> list[Effect]:
        """Effects produced so far, in execution order (the core's invariants are checked first)."""
        self._check_invariants()
        while self.closed_rounds:  # no input is running: nothing can still act on them
            self.closed_rounds.pop().release()
        effects, self.effects = self.effects, []
        return effects

    def _check_invariants(self) -> None:
        """What every input must leave true (constant time: it runs after every input); a failure
        is a bug in the core, never bad input. Per-item invariants are asserted where items change."""
        current = self.round
        assert not current.closed, "the current round is open"
        assert current.number == self.state.round + 1, "the round in progress follows the committed state"
        assert len(self.future) <= FUTURE_MESSAGES_MAX, "the next round's buffer is bounded"
        assert len(self.evidence.pending) <= EVIDENCE_POOL_MAX, "the evidence pool is bounded"
        assert not (self.abstaining and self.signed), "an abstaining member has signed nothing"

    def next_deadline(self) -> int:
        """The earliest time `handle_timer` has something to do (always after the last event)."""
        current = self.round
        deadline = self.gossip_deadline
        fetching = current.updates.fetching
        if fetching:
            deadline = min(deadline, min(fetching.values()))
        return current.agreement.earliest(self.catchup.earliest(deadline, self.now_ms), self.now_ms)

    def submit_update(self, round_number: int, payload: bytes, now_ms: int) -> None:
        """Our trained update for ``round_number`` (ignored if that round is over).

        Raises:
            LocalProtocolError: a payload of the wrong size (a workload bug).
        """
        self.now_ms = max(self.now_ms, now_ms)
        current = self.round
        if round_number != current.number or current.updates.own is not None:
            return
        try:
            check_vector(payload, self.genesis.model.dimension)
        except FixedPointError as error:
            raise LocalProtocolError(f"our own update payload is not a fixed-point vector: {error}") from error
        update = Update.create(self.identity, self.genesis_hash, round_number, self.state.last_hash, self.me, payload)
        if not self.sign_slot(("update", round_number, 0), update.digest, payload):
            return
        current.updates.own = update
        self.emit(Broadcast(update))
        current.updates.store(update, now_ms)
        self.round.agreement.progress(now_ms)

    def computed(self, request: int, result: RoundResult, now_ms: int) -> None:
        """The result of `Compute` request ``request`` (stale requests of a finished round are ignored)."""
        self.now_ms = max(self.now_ms, now_ms)
        self.round.agreement.computed(request, result, now_ms)

    def compute_failed(self, request: int, reason: str, now_ms: int) -> None:
        """`compute_round` refused request ``request``'s inputs: the value is invalid (never a crash)."""
        self.now_ms = max(self.now_ms, now_ms)
        self.round.agreement.compute_failed(request, reason, now_ms)

    def handle_timer(self, now_ms: int) -> None:
        """Fire everything due at ``now_ms``."""
        self.now_ms = max(self.now_ms, now_ms)
        self.catchup.retry(now_ms)
        current = self.round
        current.agreement.fire_timeouts(now_ms)
        if current.closed:
            return
        current.updates.retry_fetches(now_ms)
        if now_ms >= self.gossip_deadline:
            self.gossip_deadline = now_ms + GOSSIP_INTERVAL_MS
            consensus = current.agreement.consensus
            progress = (consensus.view, consensus.step, len(current.updates.held))
            if progress == current.last_progress:
                self._gossip()  # nothing moved for a whole interval: something may have been lost
            current.last_progress = progress
        self.round.agreement.progress(now_ms)

    def receive(self, peer: int, message: Message, now_ms: int) -> None:
        """A message from member ``peer`` (authenticated by the channel).

        Raises:
            LocalProtocolError: ``peer`` is us or not a member, or ``message`` is of a type the core
                does not know (driver bugs; a peer's bad message is penalised, never raised).
        """
        self.now_ms = max(self.now_ms, now_ms)
        if not 0 <= peer < self.size or peer == self.me:
            raise LocalProtocolError(f"message from {peer}, which is not another member")
        entry = ADMISSION.get(type(message))
        if entry is None:
            raise LocalProtocolError(f"no handler for message type {type(message).__name__}")
        if now_ms >= self.budget_window_start + BUDGET_WINDOW_MS:
            self.budget_window_start, self.received, self.served = now_ms, {}, {}
        self.round.heard.add(peer)
        count = self.received.get(peer, 0) + 1
        self.received[peer] = count
        if count > MESSAGES_PER_PEER_PER_WINDOW_MAX:
            if count == MESSAGES_PER_PEER_PER_WINDOW_MAX + 1:
                self.emit(Penalize(peer, f"more than {MESSAGES_PER_PEER_PER_WINDOW_MAX} messages in {BUDGET_WINDOW_MS} ms"))
            return
        handler, rounds = entry
        try:
            if rounds is Rounds.ANY or self._admit(peer, message, rounds, now_ms):
                handler(self, peer, message, now_ms)
        except (MessageError, SignatureError) as error:
            self.emit(Penalize(peer, f"{type(message).__name__}: {error}"))
        self.round.agreement.progress(now_ms)

    def status(self) -> dict[str, Any]:
        """Where this member stands in its round (for an operator's status line)."""
        current = self.round
        updates = current.updates
        status = {"round": current.number, "eligible": len(current.eligible), "updates": sorted(updates.held), "ready": updates.ready_ms is not None}
        if self.abstention is not None and self.abstaining:
            status["abstaining"] = {"claimed_round": self.abstention.claimed_round(), "heard": sorted(self.abstention.claims)}
        status |= current.agreement.status()
        status["fetching"] = sorted(sender for sender, _ in updates.fetching)
        return status

    def hello(self) -> Hello:
        """What to send a peer first, so it knows where we are."""
        return Hello(PROTOCOL_VERSION, self.round.number, self.state.last_hash)

    # ---------------------------------------------------------------------------- services of the machines

    def emit(self, effect: Effect) -> None:
        self.effects.append(effect)

    def event(self, name: str, **fields: Any) -> None:
        self.emit(Event(name, {"round": self.round.number, **fields}))

    def may_serve(self, peer: int, size: int) -> bool:
        """Charge ``size`` bytes sent on a peer's request (fetch, sync) to its window's budget;
        False, and nothing charged, once the budget is spent: a small request cannot be amplified
        into unbounded traffic."""
        spent = self.served.get(peer, 0) + size
        if spent > self.limits.served_bytes_per_window:
            return False
        self.served[peer] = spent
        return True

    def sign_slot(self, slot: Slot, content: bytes, payload: bytes | None = None) -> bool:
        """Record a signature for ``slot``; False if we already signed something else there, or abstain."""
        assert slot[1] == self.round.number, "we sign only in the round in progress"
        if self.abstention is not None and self.abstaining:
            self.abstention.refused += 1
            return False
        earlier = self.signed.get(slot)
        if earlier is not None and earlier != content:
            self.event("refused_double_sign", slot=slot)
            return False
        if earlier is None:
            self.signed[slot] = content
            self.emit(SignedSlot(slot, content, payload))
        assert self.signed[slot] == content, "one content per slot"
        return True

    def compute(self, senders: tuple[int, ...], payloads: tuple[bytes, ...], culprits: tuple[int, ...]) -> int:
        """Ask the driver to run the round transition on these inputs; returns the request id."""
        request = self.next_request
        self.next_request += 1
        self.emit(Compute(request, self.state, senders, payloads, culprits))
        return request

    def commit(self, record: Record, value_id: bytes, result: RoundResult, now_ms: int) -> None:
        """The current round decided ``record``'s value: persist it and move on."""
        assert record.value.round == self.round.number and value_id == record.value.id(self.genesis_hash)
        assert len(record.certificate) >= self.genesis.quorum, "a commit carries a quorum of precommit signatures"
        state = result.state.committed(value_id)
        self.catchup.records.append(record)
        self.emit(Commit(record, state, result))
        self.event(
            "committed",
            round=self.round.number,
            hash=value_id.hex()[:16],
            view=record.view,
            inputs=len(record.value.inputs),
            banned=list(result.banned),
            proven=list(result.proven),
        )
        self.advance(state, now_ms)

    def advance(self, state: AgreedState, now_ms: int) -> None:
        """Close the current round and open the one after ``state`` (committed or installed)."""
        assert state.round >= self.round.number, "the state only moves forward"
        self.round.closed = True
        self.closed_rounds.append(self.round)
        self.heard_before = frozenset(self.round.heard)
        self.state = state
        self.signed = {slot: content for slot, content in self.signed.items() if slot[1] > state.round}
        self.evidence.committed(state)
        self.received = {}  # a new round starts every peer's budget afresh, as a new window does
        self.round = self._new_round(now_ms)
        self._begin_round(now_ms)

    # ---------------------------------------------------------------------------- round lifecycle

    def _new_round(self, now_ms: int) -> Round:
        number = self.state.round + 1
        eligible = frozenset(eligible_members(self.genesis, self.state, number))
        contributors = frozenset(contributing_members(self.genesis, self.state))
        current = Round(number, now_ms, eligible, contributors, self._active())
        current.updates = Dissemination(self, current)
        current.agreement = Agreement(self, current)
        return current

    def _active(self) -> frozenset[int]:
        """Members the committed state's round listed as inputs (every member before round 1).

        Agreed (the committed value is), and in hand: a commit or an installed batch ends with the
        state's record, and a restarted core is given the newest records. A member that missed the
        last round is not waited for and proposes last: one that is down costs one round's
        timeouts, not every round's."""
        records = self.catchup.records
        if self.state.round == 0:
            return frozenset(range(self.size))
        assert records and records[-1].value.round == self.state.round, "the committed state's record is kept"
        return frozenset(sender for sender, _ in records[-1].value.inputs)

    def _begin_round(self, now_ms: int, own_payload: bytes | None = None) -> None:
        current = self.round
        self.event("round_started", round=current.number)
        self._end_abstaining_if_past()
        current.agreement.start(now_ms)
        slot = ("update", current.number, 0)
        if own_payload is not None and slot in self.signed:
            update = Update.create(self.identity, self.genesis_hash, current.number, self.state.last_hash, self.me, own_payload)
            if update.digest == self.signed[slot]:
                current.updates.own = update
                self.emit(Broadcast(update))
                current.updates.store(update, now_ms)
        self._train_if_due()
        assert sum(count for count, _ in self.future_from.values()) == len(self.future), "per-peer counts match"
        buffered, self.future, self.future_from = self.future, [], {}
        for peer, message in buffered:
            self.receive(peer, message, now_ms)
        self.round.agreement.progress(now_ms)

    def _train_if_due(self) -> None:
        current = self.round
        if current.updates.own is None and ("update", current.number, 0) not in self.signed and self.me in current.contributors and not self.abstaining:
            self.emit(Train(current.number, self.state.model))

    @property
    def abstaining(self) -> bool:
        return self.abstention is not None and not self.abstention.over

    def _end_abstaining_if_past(self) -> bool:
        """Stop abstaining once that is safe (`qora_p2p.protocol.abstain`); True if this call ended it."""
        abstention = self.abstention
        if abstention is None or abstention.over:
            return False
        why = abstention.why_over(self.state.round)
        if why is None:
            return False
        abstention.over = True
        self.event(
            "abstain_ended",
            why=why,
            claimed_round=abstention.claimed_round(),
            committed=self.state.round,
            heard=len(abstention.claims),
            refused=abstention.refused,
        )
        return True

    def _gossip(self) -> None:
        """Re-send what peers may have lost: our holdings, our proposal and votes of this view."""
        current = self.round
        if current.updates.held:
            self.emit(Broadcast(current.updates.announcement()))
        for message in current.agreement.own_messages():
            self.emit(Broadcast(message))

    # ---------------------------------------------------------------------------- admission

    def _admit(self, peer: int, message: Message, rounds: Rounds, now_ms: int) -> bool:
        """Whether a message of the current round: earlier ones help the sender, later ones wait."""
        current = self.round
        round_number: int = message.round  # type: ignore[attr-defined]  # every CURRENT type has one
        if round_number < current.number:
            self.catchup.help_behind(peer, round_number)
            return False
        if round_number > current.number:
            if round_number == current.number + 1:
                self._buffer_next_round(peer, message)
            if round_number > current.number + 1 or rounds is Rounds.CURRENT_VOTING:
                self.catchup.request(peer, now_ms)
            return False
        return True

    def _buffer_next_round(self, peer: int, message: Message) -> None:
        """Keep a message of the next round for when we get there, within per-peer bounds: one
        member cannot fill the buffer (in count, or in bytes with full-size updates) and crowd out
        the honest members' messages."""
        messages, updates = self.future_from.get(peer, (0, 0))
        is_update = isinstance(message, Update)
        if messages >= FUTURE_MESSAGES_PER_PEER_MAX or (is_update and updates >= FUTURE_UPDATES_PER_PEER_MAX):
            return
        if len(self.future) >= FUTURE_MESSAGES_MAX:
            return
        self.future.append((peer, message))
        self.future_from[peer] = (messages + 1, updates + is_update)

    def _on_hello(self, peer: int, hello: Hello, now_ms: int) -> None:
        if self.abstention is not None and self.abstaining and self.abstention.hear(peer, hello.round) and self._end_abstaining_if_past():
            self._train_if_due()
        if hello.round > self.round.number:
            self.catchup.request(peer, now_ms)
        elif hello.round < self.round.number:
            self.catchup.help_behind(peer, hello.round)

    def _on_sync_request(self, peer: int, request: SyncRequest, now_ms: int) -> None:
        self.catchup.serve(peer, request, now_ms)

    def _on_sync_response(self, peer: int, response: SyncResponse, now_ms: int) -> None:
        self.catchup.on_response(peer, response, now_ms)

    def _on_record(self, peer: int, record: Record, now_ms: int) -> None:
        self.catchup.on_record(peer, record, now_ms)

    def _on_evidence(self, peer: int, message: EvidenceMessage, now_ms: int) -> None:
        self.evidence.accept(message.evidence, now_ms, detected=False)

    def _on_update(self, peer: int, update: Update, now_ms: int) -> None:
        self.round.updates.on_update(update, now_ms)

    def _on_announce(self, peer: int, announce: Announce, now_ms: int) -> None:
        self.round.updates.on_announce(peer, announce)

    def _on_fetch(self, peer: int, fetch: Fetch, now_ms: int) -> None:
        self.round.updates.on_fetch(peer, fetch)

    def _on_proposal(self, peer: int, proposal: Proposal, now_ms: int) -> None:
        self.round.agreement.on_proposal(proposal, now_ms, peer)

    def _on_vote(self, peer: int, vote: Prevote | Precommit, now_ms: int) -> None:
        self.round.agreement.on_vote(vote, now_ms, peer)


Handler = Callable[[NodeCore, int, Any, int], None]

# Every message type, its handler, and which rounds it may concern.
ADMISSION: dict[type[Message], tuple[Handler, Rounds]] = {
    Hello: (NodeCore._on_hello, Rounds.ANY),
    SyncRequest: (NodeCore._on_sync_request, Rounds.ANY),
    SyncResponse: (NodeCore._on_sync_response, Rounds.ANY),
    EvidenceMessage: (NodeCore._on_evidence, Rounds.ANY),
    Record: (NodeCore._on_record, Rounds.ANY),
    Update: (NodeCore._on_update, Rounds.CURRENT),
    Announce: (NodeCore._on_announce, Rounds.CURRENT),
    Fetch: (NodeCore._on_fetch, Rounds.CURRENT),
    Proposal: (NodeCore._on_proposal, Rounds.CURRENT_VOTING),
    Prevote: (NodeCore._on_vote, Rounds.CURRENT_VOTING),
    Precommit: (NodeCore._on_vote, Rounds.CURRENT_VOTING),
}
assert set(ADMISSION) == set(MESSAGE_TYPES), "every message type the codec decodes has a handler"
