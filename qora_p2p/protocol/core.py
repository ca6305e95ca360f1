"""The node core: one member's whole protocol as a sans-IO state machine.

Theory of operation
-------------------
`NodeCore` consumes events, each with the current time in milliseconds, and produces effects; it
never reads a clock, touches a socket or a disk, or draws randomness. Inputs:

* ``receive(peer, message, now)``: a decoded message from an authenticated member;
* ``submit_update(round, payload, now)``: this member's trained update (after a `Train` effect);
* ``computed(request, result, now)``: the result of a `Compute` effect (aggregation off-thread);
* ``handle_timer(now)``: the time reached ``next_deadline()``.

Effects, in the order the driver must execute them (each `SignedSlot` must be durable before any
later effect leaves the process):

* `Send` / `Broadcast`: messages to one or all members;
* `SignedSlot`: the last-signed guard; never two different signatures for one slot, even across a
  crash, because a restarted core is given back every slot of the current round;
* `Train`: ask for this member's update of a round; `Compute`: run `compute_round`;
* `Commit` / `Installed`: persist a committed round (record, certificate, state) or a state caught
  up from peers, atomically, then carry on;
* `Event`: something worth a log line; `Penalize`: a peer broke the protocol.

One FL round ``r`` on the chain ending in ``H[r-1]``:

1. **Disseminate.** Train, sign ``UPDATE(r, H[r-1], digest)`` (after persisting it), send it to
   every member. Updates are validated before they are stored: round, chain, eligible sender,
   exact size, signature. Two valid updates from one sender for one slot are equivocation evidence.
   Members announce which updates they hold (a bitmap) and fetch missing ones by digest.
2. **Agree.** A Tendermint instance (`qora_p2p.protocol.consensus`). The proposer proposes a value listing
   at least ``n - f`` (sender, digest) pairs of eligible members, pending evidence, and the digests of
   the model and ledger that result; a validator's verdict is "valid" only once it holds every
   listed update and its own `compute_round` gives the same digests.
3. **Commit.** A quorum of precommits is the certificate. The new state is the validated result.

A member that falls behind (partition, crash) asks a peer for certified records and a state
snapshot (`SyncRequest`); it verifies the last record's certificate and the snapshot's digests
against it before installing. Every buffer is bounded (see the limits below); a peer that exceeds
a limit or sends an invalid message is penalised and ignored, never a crash.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from qora_p2p.protocol.consensus import (
    Decide,
    NeedValidity,
    NeedValue,
    Propose,
    Schedule,
    Step,
    Tendermint,
    Timeout,
    Vote,
)
from qora_p2p.errors import LocalProtocolError, MessageError, SignatureError
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.identity import Identity, verify
from qora_p2p.protocol.messages import (
    NIL,
    SYNC_RECORDS_MAX,
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
    eligible_members,
    snapshot_bytes,
    state_from_snapshot,
)

__all__ = [
    "Broadcast",
    "Commit",
    "Compute",
    "Event",
    "Installed",
    "NodeCore",
    "Penalize",
    "Send",
    "SignedSlot",
    "Train",
]

PROTOCOL_VERSION = 1
VIEWS_AHEAD_MAX = 64  # votes for views further ahead are not stored (f + 1 of them still move us)
VIEWS_KEPT = 64  # views behind the current one whose messages are kept (plus lock and valid value)
UPDATES_PER_SENDER_MAX = 2  # two valid updates from one sender are proof; a third adds nothing
EVIDENCE_POOL_MAX = 64  # pending evidence items kept for future proposals
EVIDENCE_BROADCASTS_PER_ROUND = 2  # proofs we detected ourselves and announce; none are relayed
RECORDS_WINDOW = 256  # committed records kept in memory to serve catch-up
MESSAGES_PER_PEER_PER_ROUND_MAX = 4096  # gossip repeats a few messages per interval; far below this
FUTURE_MESSAGES_MAX = 4 * 1024  # messages buffered for the next round, all peers together
FETCH_RETRY_MS = 500  # ask another holder if a fetched update has not arrived by then
SYNC_RETRY_MS = 1_000  # one catch-up request in flight; a new one after this long
GOSSIP_INTERVAL_MS = 1_000  # a round stuck this long re-announces holdings and re-sends our votes


@dataclass(frozen=True, slots=True)
class Send:
    peer: int
    message: Message


@dataclass(frozen=True, slots=True)
class Broadcast:
    message: Message


@dataclass(frozen=True, slots=True)
class SignedSlot:
    """Make durable before anything later: we signed ``content`` for ``slot``."""

    slot: tuple[str, int, int]
    content: bytes
    payload: bytes | None = None  # our update's payload, so a restart re-sends the same update


@dataclass(frozen=True, slots=True)
class Train:
    round: int
    model: npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Compute:
    """Run ``compute_round(genesis, state, senders, payloads, culprits)``; answer with `computed`."""

    request: int
    state: AgreedState
    senders: tuple[int, ...]
    payloads: tuple[bytes, ...]
    culprits: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Commit:
    record: Record
    state: AgreedState
    result: RoundResult


@dataclass(frozen=True, slots=True)
class Installed:
    """State caught up from peers: persist the records and the state."""

    records: tuple[Record, ...]
    state: AgreedState


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Penalize:
    peer: int
    reason: str


Effect = Send | Broadcast | SignedSlot | Train | Compute | Commit | Installed | Event | Penalize


@dataclass
class _Validation:
    value: Value
    missing: set[tuple[int, bytes]]
    verdict: bool | None = None
    request: int = 0  # the Compute request once every input is here


@dataclass(frozen=True)
class _Build:
    """A value we are computing in order to propose it in ``view``."""

    view: int
    inputs: tuple[tuple[int, bytes], ...]
    evidence: tuple[Evidence, ...]


@dataclass
class _Round:
    """Everything about the round in progress; replaced wholesale at each commit."""

    number: int
    started_ms: int
    eligible: frozenset[int]
    consensus: Tendermint
    updates: dict[int, dict[bytes, Update]] = field(default_factory=dict)
    own: Update | None = None
    ready_ms: int | None = None  # when we first held n - f updates
    holders: dict[int, int] = field(default_factory=dict)  # peer -> bitmap of senders it announced
    fetching: dict[tuple[int, bytes], int] = field(default_factory=dict)  # wanted -> deadline
    values: dict[bytes, Value] = field(default_factory=dict)
    proposals: dict[int, Proposal] = field(default_factory=dict)
    votes: dict[tuple[Step, int, int], Prevote | Precommit] = field(default_factory=dict)
    second_votes: dict[tuple[Step, int, int], Prevote | Precommit] = field(default_factory=dict)
    validations: dict[bytes, _Validation] = field(default_factory=dict)
    results: dict[bytes, RoundResult] = field(default_factory=dict)
    wanted_views: set[int] = field(default_factory=set)  # views whose value we must build
    building: dict[int, _Build] = field(default_factory=dict)  # compute request -> build
    validating: dict[int, bytes] = field(default_factory=dict)  # compute request -> value id
    timeouts: dict[tuple[Timeout, int], int] = field(default_factory=dict)
    view0_propose_waiting: bool = False
    received: dict[int, int] = field(default_factory=dict)  # peer -> messages this round
    helped: set[tuple[int, int]] = field(default_factory=set)  # (peer, view) we sent our view to
    pruned_below: int = 0
    evidence_sent: int = 0
    last_progress: tuple[int, Any, int] | None = None  # (view, step, updates) at the last gossip tick
    records_sent: set[tuple[int, int]] = field(default_factory=set)  # (peer, round) already helped
    my_messages: dict[tuple[str, int], Message] = field(default_factory=dict)  # for gossip


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
    """

    def __init__(
        self,
        genesis: Genesis,
        identity: Identity,
        *,
        state: AgreedState,
        now_ms: int,
        signed: dict[tuple[str, int, int], bytes] | None = None,
        own_payload: bytes | None = None,
        records: Sequence[Record] = (),
        verifier: Callable[[bytes, bytes, bytes, bytes], None] = verify,
    ) -> None:
        me = genesis.member_index(identity.public_key)
        if me is None:
            raise LocalProtocolError("this identity is not a member of the genesis")
        self.genesis, self.identity, self.me = genesis, identity, me
        self.size = genesis.size
        self.genesis_hash = genesis.hash
        self.keys = [member.public_key for member in genesis.members]
        self.limits = Limits(genesis.size, genesis.model.dimension)
        self.verifier = verifier
        self.state = state
        self.signed: dict[tuple[str, int, int], bytes] = dict(signed or {})
        self.records: deque[Record] = deque(records, maxlen=RECORDS_WINDOW)
        self.evidence_pool: dict[int, Evidence] = {}
        self.future: list[tuple[int, Message]] = []
        self.sync_deadline = 0
        self.sync_pending: int | None = None  # a peer to ask once sync_deadline passes
        self.gossip_deadline = now_ms + GOSSIP_INTERVAL_MS
        self.effects: list[Effect] = []
        self.now_ms = now_ms  # time of the latest input
        self.next_request = 1
        self.round = self._new_round(now_ms)
        self._begin_round(now_ms, own_payload)

    # ---------------------------------------------------------------------------- public inputs

    def drain(self) -> list[Effect]:
        """Effects produced so far, in execution order."""
        effects, self.effects = self.effects, []
        return effects

    def next_deadline(self) -> int:
        """The earliest time `handle_timer` has something to do (always after the last event)."""
        current = self.round
        timing = self.genesis.timing
        deadlines = [self.gossip_deadline, *current.timeouts.values(), *current.fetching.values()]
        if self.sync_pending is not None:
            deadlines.append(max(self.sync_deadline, self.now_ms + 1))
        if current.view0_propose_waiting:
            deadlines.append(current.started_ms + timing.round_timeout_ms)
        if current.consensus.view in current.wanted_views:
            # Moments at which building our proposal may become possible; once past, only new
            # updates (events, not time) can change anything.
            moments = [current.started_ms + timing.round_timeout_ms]
            if current.ready_ms is not None:
                moments.append(current.ready_ms + timing.collect_timeout_ms)
            deadlines += [moment for moment in moments if moment > self.now_ms]
        return min(deadlines)

    def submit_update(self, round_number: int, payload: bytes, now_ms: int) -> None:
        """Our trained update for ``round_number`` (ignored if that round is over)."""
        self.now_ms = max(self.now_ms, now_ms)
        if round_number != self.round.number or self.round.own is not None:
            return
        if len(payload) != self.limits.payload_bytes:
            raise LocalProtocolError(f"update payload must be {self.limits.payload_bytes} bytes, got {len(payload)}")
        update = Update.create(self.identity, self.genesis_hash, round_number, self.state.last_hash, self.me, payload)
        if not self._sign_slot(("update", round_number, 0), update.digest, payload):
            return
        self.round.own = update
        self.effects.append(Broadcast(update))
        self._store_update(update, now_ms)
        self._progress(now_ms)

    def computed(self, request: int, result: RoundResult, now_ms: int) -> None:
        """The result of `Compute` request ``request`` (stale requests of a finished round are ignored)."""
        self.now_ms = max(self.now_ms, now_ms)
        current = self.round
        if request in current.building:
            self._proposal_built(current.building.pop(request), result, now_ms)
            return
        value_id = current.validating.pop(request, None)
        if value_id is None:
            return
        validation = current.validations[value_id]
        value = validation.value
        valid = result.model_digest == value.model_digest and result.ledger_digest == value.ledger_digest
        validation.verdict = valid
        if valid:
            current.results[value_id] = result
        else:
            self._event("invalid_value", value=value_id.hex()[:16], reason="its model or ledger digest is wrong")
        self._consensus(current.consensus.on_validity(value_id, valid), now_ms)

    def handle_timer(self, now_ms: int) -> None:
        """Fire everything due at ``now_ms``."""
        self.now_ms = max(self.now_ms, now_ms)
        if self.sync_pending is not None and now_ms >= self.sync_deadline:
            self._request_sync(self.sync_pending, now_ms)
        current = self.round
        for key, deadline in sorted(current.timeouts.items(), key=lambda item: item[1]):
            if deadline <= now_ms and current is self.round:
                del current.timeouts[key]
                timeout, view = key
                self._consensus(current.consensus.on_timeout(timeout, view), now_ms)
        if current is not self.round:
            return
        if current.view0_propose_waiting and now_ms >= current.started_ms + self.genesis.timing.round_timeout_ms:
            self._arm_view0(now_ms)
        for wanted, deadline in list(current.fetching.items()):
            if deadline <= now_ms:
                del current.fetching[wanted]
                if wanted[1] == NIL:
                    if wanted[0] not in current.updates:
                        self._fetch_from_holders(wanted[0], now_ms)
                else:
                    self._fetch(wanted, now_ms)
        if now_ms >= self.gossip_deadline:
            self.gossip_deadline = now_ms + GOSSIP_INTERVAL_MS
            progress = (current.consensus.view, current.consensus.step, len(current.updates))
            if progress == current.last_progress:
                self._gossip()  # nothing moved for a whole interval: something may have been lost
            current.last_progress = progress
        self._progress(now_ms)

    def receive(self, peer: int, message: Message, now_ms: int) -> None:
        """A message from member ``peer`` (authenticated by the channel)."""
        self.now_ms = max(self.now_ms, now_ms)
        if not 0 <= peer < self.size or peer == self.me:
            raise LocalProtocolError(f"message from {peer}, which is not another member")
        current = self.round
        count = current.received.get(peer, 0) + 1
        current.received[peer] = count
        if count > MESSAGES_PER_PEER_PER_ROUND_MAX:
            if count == MESSAGES_PER_PEER_PER_ROUND_MAX + 1:
                self.effects.append(Penalize(peer, f"more than {MESSAGES_PER_PEER_PER_ROUND_MAX} messages in round {current.number}"))
            return
        try:
            self._dispatch(peer, message, now_ms)
        except (MessageError, SignatureError) as error:
            self.effects.append(Penalize(peer, f"{type(message).__name__}: {error}"))
        self._progress(now_ms)

    def payloads_held(self, round_number: int) -> list[bytes]:
        """Other members' update payloads held for ``round_number`` (one per sender, in member
        order): what a Byzantine test member's forging attack gets to see."""
        if round_number != self.round.number:
            return []
        held = self.round.updates
        return [next(iter(held[sender].values())).payload for sender in sorted(held) if sender != self.me and held[sender]]

    def status(self) -> dict[str, Any]:
        """Where this member stands in its round (for an operator's status line)."""
        current = self.round
        consensus = current.consensus
        return {
            "round": current.number,
            "view": consensus.view,
            "step": getattr(consensus.step, "name", str(consensus.step)),
            "eligible": len(current.eligible),
            "updates": sorted(current.updates),
            "ready": current.ready_ms is not None,
            "view0_waiting": current.view0_propose_waiting,
            "proposals": sorted(current.proposals),
            "validations": {
                value_id.hex()[:8]: {"missing": sorted(sender for sender, _ in validation.missing), "verdict": validation.verdict}
                for value_id, validation in current.validations.items()
            },
            "certified": {view: value_id.hex()[:8] for view, value_id in consensus.certified.items()},
            "fetching": sorted(sender for sender, _ in current.fetching),
            "timeouts": {f"{timeout.name}/{view}": deadline - self.now_ms for (timeout, view), deadline in current.timeouts.items()},
        }

    def hello(self) -> Hello:
        """What to send a peer first, so it knows where we are."""
        return Hello(PROTOCOL_VERSION, self.round.number, self.state.last_hash)

    # ---------------------------------------------------------------------------- round lifecycle

    def _proposer(self, round_number: int) -> Callable[[int], int]:
        size = self.genesis.size
        return lambda view: (round_number + view) % size

    def _new_round(self, now_ms: int) -> _Round:
        number = self.state.round + 1
        consensus = Tendermint(self.genesis.size, self.genesis.faulty, self.genesis.quorum, self._proposer(number), self.me)
        eligible = frozenset(eligible_members(self.genesis, self.state, number))
        return _Round(number, now_ms, eligible, consensus)

    def _begin_round(self, now_ms: int, own_payload: bytes | None = None) -> None:
        current = self.round
        self._event("round_started", round=current.number)
        restored = self._restored_votes(current.number)
        if restored:
            self._resume(restored, now_ms)
        else:
            self._consensus(current.consensus.start(), now_ms)
        if own_payload is not None and ("update", current.number, 0) in self.signed:
            update = Update.create(self.identity, self.genesis_hash, current.number, self.state.last_hash, self.me, own_payload)
            if update.digest == self.signed[("update", current.number, 0)]:
                current.own = update
                self.effects.append(Broadcast(update))
                self._store_update(update, now_ms)
        if current.own is None and ("update", current.number, 0) not in self.signed and self.me in current.eligible:
            self.effects.append(Train(current.number, self.state.model))
        buffered, self.future = self.future, []
        for peer, message in buffered:
            self.receive(peer, message, now_ms)
        self._progress(now_ms)

    def _restored_votes(self, round_number: int) -> dict[tuple[Step, int], bytes]:
        kinds = {"prevote": Step.PREVOTE, "precommit": Step.PRECOMMIT}
        return {(kinds[kind], view): content for (kind, number, view), content in self.signed.items() if number == round_number and kind in kinds}

    def _resume(self, restored: dict[tuple[Step, int], bytes], now_ms: int) -> None:
        """Restart inside a round we had voted in: same view, same lock, same votes (re-signed,
        Ed25519 signatures are deterministic, so they are the very same messages)."""
        current = self.round
        view = max(view for _, view in restored)
        precommits = [(vote_view, content) for (step, vote_view), content in restored.items() if step is Step.PRECOMMIT and content != NIL]
        locked = None
        if precommits:
            locked_view, locked_value = max(precommits)
            locked = (locked_value, locked_view)
        for (step, vote_view), content in sorted(restored.items()):
            kind = Prevote if step is Step.PREVOTE else Precommit
            vote = kind.create(self.identity, self.genesis_hash, current.number, vote_view, content, self.me)
            current.my_messages[(kind.KIND, vote_view)] = vote
            current.votes[(step, vote_view, self.me)] = vote
            current.consensus.on_vote(step, vote_view, self.me, content)
            if vote_view == view:
                self.effects.append(Broadcast(vote))
        self._event("resumed", view=view, locked=locked is not None)
        self._consensus(current.consensus.resume(view, set(restored), locked), now_ms)

    def _help_view(self, peer: int, view: int) -> None:
        """A peer is in an earlier view of our round: send it the view's proposal and our votes in
        it, once, so that it can gather the quorum that moves it on (Tendermint assumes gossip
        delivers everything eventually)."""
        current = self.round
        if (peer, view) in current.helped or len(current.helped) >= MESSAGES_PER_PEER_PER_ROUND_MAX:
            return
        current.helped.add((peer, view))
        proposal = current.proposals.get(view)
        if proposal is not None:
            self.effects.append(Send(peer, proposal))
        # Our own votes only: every honest member does the same, and together they are a quorum.
        for kind in ("prevote", "precommit"):
            message = current.my_messages.get((kind, view))
            if message is not None:
                self.effects.append(Send(peer, message))

    def _advance(self, state: AgreedState, now_ms: int) -> None:
        self.state = state
        self.signed = {slot: content for slot, content in self.signed.items() if slot[1] > state.round}
        if state.ledger is not None:
            self.evidence_pool = {c: e for c, e in self.evidence_pool.items() if not state.ledger.standings[c].proven}
        self.round = self._new_round(now_ms)
        self._begin_round(now_ms)

    # ---------------------------------------------------------------------------- dispatch

    def _dispatch(self, peer: int, message: Message, now_ms: int) -> None:  # noqa: PLR0911, PLR0912
        current = self.round
        if isinstance(message, Hello):
            if message.round > current.number:
                self._request_sync(peer, now_ms)
            elif message.round < current.number:
                self._help_behind(peer, message.round)
            return
        if isinstance(message, SyncRequest):
            self._serve_sync(peer, message)
            return
        if isinstance(message, SyncResponse):
            self._install(peer, message, now_ms)
            return
        if isinstance(message, EvidenceMessage):
            self._accept_evidence(message.evidence, now_ms, detected=False)
            return
        if isinstance(message, Record):
            if message.value.round == current.number:
                self._install(peer, SyncResponse((message,), None), now_ms)
            elif message.value.round > current.number:
                self._request_sync(peer, now_ms)
            return
        round_number = getattr(message, "round", None)
        if round_number is None:
            raise MessageError(f"unexpected message type {type(message).__name__}")
        if round_number < current.number:
            self._help_behind(peer, round_number)
            return
        if round_number > current.number:
            if round_number == current.number + 1 and len(self.future) < FUTURE_MESSAGES_MAX:
                self.future.append((peer, message))
            if round_number > current.number + 1 or isinstance(message, Precommit | Prevote | Proposal):
                self._request_sync(peer, now_ms)
            return
        if isinstance(message, Update):
            self._on_update(message, now_ms)
        elif isinstance(message, Announce):
            self._on_announce(peer, message, now_ms)
        elif isinstance(message, Fetch):
            self._on_fetch(peer, message)
        elif isinstance(message, Proposal):
            self._on_proposal(message, now_ms, peer)
        elif isinstance(message, Prevote | Precommit):
            self._on_vote(message, now_ms, peer)

    # ---------------------------------------------------------------------------- dissemination

    def _on_update(self, update: Update, now_ms: int) -> None:
        current = self.round
        if update.prev_hash != self.state.last_hash:
            raise MessageError(f"update for round {update.round} is on another chain")
        if update.sender not in current.eligible:
            raise MessageError(f"member {update.sender} may not contribute to round {update.round}")
        held = current.updates.get(update.sender, {})
        digest = update.digest
        if digest in held:
            return
        self.verifier(self.keys[update.sender], domain(self.genesis_hash, Update.KIND), update.header().body, update.signature)
        self._store_update(update, now_ms)

    def _store_update(self, update: Update, now_ms: int) -> None:
        current = self.round
        held = current.updates.setdefault(update.sender, {})
        if len(held) >= UPDATES_PER_SENDER_MAX:
            return
        if held:
            other = next(iter(held.values()))
            self._accept_evidence(Evidence(update.sender, other.header(), update.header()), now_ms)
        held[update.digest] = update
        current.fetching.pop((update.sender, update.digest), None)
        current.fetching.pop((update.sender, NIL), None)
        if current.ready_ms is None and len(current.updates) >= self.genesis.inputs_min:
            current.ready_ms = now_ms
            if current.view0_propose_waiting:
                self._arm_view0(now_ms)
        for value_id, validation in current.validations.items():
            if (update.sender, update.digest) in validation.missing:
                validation.missing.discard((update.sender, update.digest))
                self._maybe_compute(value_id, validation)

    def _announcement(self) -> Announce:
        return Announce.of(self.round.number, sorted(self.round.updates), self.genesis.size)

    def _holders_of(self, sender: int) -> list[int]:
        """Peers that announced holding ``sender``'s update, ascending."""
        return sorted(peer for peer, bitmap in self.round.holders.items() if bitmap >> sender & 1)

    def _on_announce(self, peer: int, announce: Announce, now_ms: int) -> None:
        bitmap = int.from_bytes(announce.holders, "little")
        if bitmap >> self.size:
            raise MessageError("announce names members outside the genesis")
        current = self.round
        current.holders[peer] = current.holders.get(peer, 0) | bitmap
        # Missing updates that a peer holds are fetched by digest once a proposal names them; until
        # then the author's own send is presumably in flight, and fetching now would double traffic.

    def _on_fetch(self, peer: int, fetch: Fetch) -> None:
        for sender, digest in fetch.wanted:
            held = self.round.updates.get(sender, {})
            for update in held.values() if digest == NIL else filter(None, [held.get(digest)]):
                self.effects.append(Send(peer, update))

    def _fetch(self, wanted: tuple[int, bytes], now_ms: int) -> None:
        """Ask one holder for an update; a later deadline tries another."""
        current = self.round
        sender, _ = wanted
        candidates = sorted(set(self._holders_of(sender)) | {sender})
        for proposal in current.proposals.values():
            candidates.append(proposal.proposer)
        for (step, _, voter), vote in current.votes.items():
            if step is Step.PREVOTE and vote.value_id != NIL:
                candidates.append(voter)
        candidates = [peer for peer in dict.fromkeys(candidates) if peer != self.me]
        if not candidates:
            return
        attempt = (now_ms // FETCH_RETRY_MS + sender) % len(candidates)
        self.effects.append(Send(candidates[attempt], Fetch(current.number, (wanted,))))
        current.fetching[wanted] = now_ms + FETCH_RETRY_MS

    # ---------------------------------------------------------------------------- evidence

    def _check_evidence(self, evidence: Evidence) -> None:
        """Raise MessageError/SignatureError unless ``evidence`` proves its culprit equivocated."""
        if not conflicting(evidence.first, evidence.second):
            raise MessageError("evidence headers do not conflict")
        key = self.keys[evidence.culprit]
        for header in (evidence.first, evidence.second):
            self.verifier(key, domain(self.genesis_hash, header.kind), header.body, header.signature)
        signer = self._signer_in(evidence.first)
        if signer != evidence.culprit or self._signer_in(evidence.second) != evidence.culprit:
            raise MessageError("evidence headers are not the culprit's own messages")

    @staticmethod
    def _signer_in(header: Any) -> int | None:
        import msgpack  # noqa: PLC0415

        try:
            body = msgpack.unpackb(header.body)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return None
        if not isinstance(body, list) or len(body) < 4:
            return None
        index = {"update": 2, "proposal": 3, "prevote": 3, "precommit": 3}[header.kind]
        member = body[index]
        return member if isinstance(member, int) and not isinstance(member, bool) else None

    def _proven(self, member: int) -> bool:
        return self.state.ledger is not None and self.state.ledger.standings[member].proven

    def _accept_evidence(self, evidence: Evidence, now_ms: int, detected: bool = True) -> None:
        """Keep a proof of equivocation for our proposals. Proofs we detected ourselves are also
        announced (a few per round): members that propose before they detect it themselves learn it
        that way. Received proofs are not relayed: many members detect the same equivocation, and
        flooding every proof to every member would cost O(culprits * n**2) messages."""
        if evidence.culprit in self.evidence_pool or self._proven(evidence.culprit):
            return
        self._check_evidence(evidence)
        if len(self.evidence_pool) >= EVIDENCE_POOL_MAX:
            return
        self.evidence_pool[evidence.culprit] = evidence
        current = self.round
        if detected and current.evidence_sent < EVIDENCE_BROADCASTS_PER_ROUND:
            current.evidence_sent += 1
            self.effects.append(Broadcast(EvidenceMessage(evidence)))
        self._event("equivocation", culprit=evidence.culprit, kind=evidence.first.kind)

    # ---------------------------------------------------------------------------- agreement

    def _on_proposal(self, proposal: Proposal, now_ms: int, peer: int | None = None) -> None:
        current = self.round
        if proposal.view > current.consensus.view + VIEWS_AHEAD_MAX:
            return
        if peer is not None and proposal.view < current.consensus.view:
            self._help_view(peer, proposal.view)
        if proposal.proposer != self._proposer(current.number)(proposal.view):
            raise MessageError(f"member {proposal.proposer} is not the proposer of view {proposal.view}")
        earlier = current.proposals.get(proposal.view)
        value_id = proposal.value.id(self.genesis_hash)
        if earlier is not None:
            if earlier.value.id(self.genesis_hash) != value_id:
                proposal.verify(self.genesis_hash, self.keys[proposal.proposer])
                self._accept_evidence(Evidence(proposal.proposer, earlier.header(self.genesis_hash), proposal.header(self.genesis_hash)), now_ms)
            return
        self.verifier(self.keys[proposal.proposer], domain(self.genesis_hash, Proposal.KIND), proposal.header(self.genesis_hash).body, proposal.signature)
        current.proposals[proposal.view] = proposal
        current.values.setdefault(value_id, proposal.value)
        self._consensus(current.consensus.on_proposal(proposal.view, value_id, proposal.valid_view), now_ms)

    def _on_vote(self, vote: Prevote | Precommit, now_ms: int, peer: int | None = None) -> None:
        current = self.round
        if vote.view > current.consensus.view + VIEWS_AHEAD_MAX:
            return
        if peer is not None and vote.view < current.consensus.view:
            self._help_view(peer, vote.view)
        kind = Step.PREVOTE if isinstance(vote, Prevote) else Step.PRECOMMIT
        key = (kind, vote.view, vote.voter)
        earlier = current.votes.get(key)
        if earlier is not None and (earlier.value_id == vote.value_id or key in current.second_votes):
            return
        self.verifier(self.keys[vote.voter], domain(self.genesis_hash, vote.KIND), vote.header().body, vote.signature)
        if earlier is None:
            current.votes[key] = vote
        else:
            # A second, different signed vote: proof of equivocation, and it still counts for what it
            # names (so that members who saw different halves can justify the same lock).
            current.second_votes[key] = vote
            self._accept_evidence(Evidence(vote.voter, earlier.header(), vote.header()), now_ms)
        self._consensus(current.consensus.on_vote(kind, vote.view, vote.voter, vote.value_id), now_ms)

    def _prune_views(self) -> None:
        current = self.round
        consensus = current.consensus
        below = consensus.view - VIEWS_KEPT
        if below <= current.pruned_below:
            return
        current.pruned_below = below
        consensus.prune(below)
        keep = {consensus.locked_view, consensus.valid_view}
        current.proposals = {view: p for view, p in current.proposals.items() if view >= below or view in keep}
        for table in (current.votes, current.second_votes):
            for key in [key for key in table if key[1] < below and key[1] not in keep]:
                del table[key]
        current.my_messages = {key: m for key, m in current.my_messages.items() if key[1] >= below}
        current.timeouts = {key: deadline for key, deadline in current.timeouts.items() if key[1] >= below}
        referenced = {p.value.id(self.genesis_hash) for p in current.proposals.values()} | set(consensus.certified.values())
        current.values = {value_id: value for value_id, value in current.values.items() if value_id in referenced}
        current.validations = {value_id: v for value_id, v in current.validations.items() if value_id in referenced}
        current.results = {value_id: r for value_id, r in current.results.items() if value_id in referenced}

    def _consensus(self, actions: Iterable[Any], now_ms: int) -> None:  # noqa: PLR0912
        current = self.round
        self._prune_views()
        for action in actions:
            if current is not self.round:
                return  # a decision already moved us on
            if isinstance(action, Schedule):
                self._schedule(action.timeout, action.view, now_ms)
            elif isinstance(action, NeedValidity):
                self._validate(action.value_id, now_ms)
            elif isinstance(action, NeedValue):
                current.wanted_views.add(action.view)
            elif isinstance(action, Propose):
                self._propose(action, now_ms)
            elif isinstance(action, Vote):
                self._vote(action, now_ms)
            elif isinstance(action, Decide):
                self._decide(action.view, action.value_id, now_ms)

    def _schedule(self, timeout: Timeout, view: int, now_ms: int, armed: bool = False) -> None:
        timing = self.genesis.timing
        initial = {
            Timeout.PROPOSE: timing.propose_timeout_ms,
            Timeout.PREVOTE: timing.prevote_timeout_ms,
            Timeout.PRECOMMIT: timing.precommit_timeout_ms,
        }[timeout]
        if timeout is Timeout.PROPOSE and view == 0 and self.round.ready_ms is None and not armed:
            # View 0 starts its clock once this member could judge a proposal (n - f updates held),
            # or after round_timeout_ms: training time must not eat the proposer's timeout.
            self.round.view0_propose_waiting = True
            return
        extra = timing.collect_timeout_ms if timeout is Timeout.PROPOSE and view == 0 else 0
        self.round.timeouts[(timeout, view)] = now_ms + extra + timing.for_view(initial, view)

    def _arm_view0(self, now_ms: int) -> None:
        self.round.view0_propose_waiting = False
        self._schedule(Timeout.PROPOSE, 0, now_ms, armed=True)

    def _sign_slot(self, slot: tuple[str, int, int], content: bytes, payload: bytes | None = None) -> bool:
        """Record a signature for ``slot``; False if we already signed something else there."""
        earlier = self.signed.get(slot)
        if earlier is not None and earlier != content:
            self._event("refused_double_sign", slot=slot)
            return False
        if earlier is None:
            self.signed[slot] = content
            self.effects.append(SignedSlot(slot, content, payload))
        return True

    def _vote(self, action: Vote, now_ms: int) -> None:
        current = self.round
        kind = Prevote if action.kind is Step.PREVOTE else Precommit
        if not self._sign_slot((kind.KIND, current.number, action.view), action.value_id):
            return
        vote = kind.create(self.identity, self.genesis_hash, current.number, action.view, action.value_id, self.me)
        current.my_messages[(kind.KIND, action.view)] = vote
        self.effects.append(Broadcast(vote))
        self._on_vote(vote, now_ms)

    def _propose(self, action: Propose, now_ms: int) -> None:
        current = self.round
        value = current.values.get(action.value_id)
        if value is None:  # a value we locked before a restart and have not seen since
            self._event("cannot_repropose", view=action.view)
            return
        if not self._sign_slot(("proposal", current.number, action.view), action.value_id):
            return
        proposal = Proposal.create(self.identity, self.genesis_hash, action.view, action.valid_view, self.me, value)
        current.my_messages[("proposal", action.view)] = proposal
        self.effects.append(Broadcast(proposal))
        if action.valid_view >= 0:
            # The prevotes that justify re-proposing a locked value travel with it (rule 28).
            for vote in self._votes_of(Step.PREVOTE, action.valid_view, action.value_id):
                self.effects.append(Broadcast(vote))
        self._on_proposal(proposal, now_ms)

    def _votes_of(self, step: Step, view: int, value_id: bytes | None = None) -> list[Prevote | Precommit]:
        current = self.round
        return [
            vote
            for table in (current.votes, current.second_votes)
            for (kind, vote_view, _), vote in sorted(table.items(), key=lambda item: item[0][2])
            if kind is step and vote_view == view and (value_id is None or vote.value_id == value_id)
        ]

    def _progress(self, now_ms: int) -> None:
        """Build values for views we must propose in, once enough updates are here (fetching
        missing ones from members that announced them)."""
        current = self.round
        timing = self.genesis.timing
        current.wanted_views = {view for view in current.wanted_views if view >= current.consensus.view}
        for view in sorted(current.wanted_views):
            if view != current.consensus.view:
                continue
            if len(current.updates) < self.genesis.inputs_min:
                fetching = {wanted[0] for wanted in current.fetching}
                for sender in sorted(current.eligible - set(current.updates) - fetching):
                    self._fetch_from_holders(sender, now_ms)
                continue
            every = all(member in current.updates for member in current.eligible)
            waited = current.ready_ms is not None and now_ms >= current.ready_ms + timing.collect_timeout_ms
            late = now_ms >= current.started_ms + timing.round_timeout_ms
            if every or waited or late or view > 0:
                self._build(view)

    def _fetch_from_holders(self, sender: int, now_ms: int) -> None:
        """Ask an announcer for ``sender``'s update when we do not know its digest yet."""
        current = self.round
        holders = [peer for peer in self._holders_of(sender) if peer != self.me]
        if holders:
            peer = holders[(now_ms // FETCH_RETRY_MS) % len(holders)]
            self.effects.append(Send(peer, Fetch(current.number, ((sender, NIL),))))
            current.fetching[(sender, NIL)] = now_ms + FETCH_RETRY_MS

    def _build(self, view: int) -> None:
        current = self.round
        senders = sorted(current.updates)
        chosen = [min(current.updates[sender].values(), key=lambda update: update.digest) for sender in senders]
        culprits = sorted(culprit for culprit in self.evidence_pool if not self._proven(culprit))[: self.limits.evidence_max]
        request = self._compute(tuple(senders), tuple(update.payload for update in chosen), tuple(culprits))
        inputs = tuple((update.sender, update.digest) for update in chosen)
        current.building[request] = _Build(view, inputs, tuple(self.evidence_pool[culprit] for culprit in culprits))
        current.wanted_views.discard(view)

    def _proposal_built(self, build: _Build, result: RoundResult, now_ms: int) -> None:
        current = self.round
        value = Value(current.number, self.state.last_hash, build.inputs, build.evidence, result.model_digest, result.ledger_digest)
        value_id = value.id(self.genesis_hash)
        current.values[value_id] = value
        current.results[value_id] = result
        current.validations[value_id] = _Validation(value, set(), verdict=True)
        self._consensus(current.consensus.on_value_ready(build.view, value_id), now_ms)

    def _compute(self, senders: tuple[int, ...], payloads: tuple[bytes, ...], culprits: tuple[int, ...]) -> int:
        request = self.next_request
        self.next_request += 1
        self.effects.append(Compute(request, self.state, senders, payloads, culprits))
        return request

    def _validate(self, value_id: bytes, now_ms: int) -> None:
        current = self.round
        value = current.values[value_id]
        problem = self._structural_problem(value)
        if problem is not None:
            current.validations[value_id] = _Validation(value, set(), verdict=False)
            self._event("invalid_value", value=value_id.hex()[:16], reason=problem)
            self._consensus(current.consensus.on_validity(value_id, False), now_ms)
            return
        missing = {(sender, digest) for sender, digest in value.inputs if digest not in current.updates.get(sender, {})}
        validation = _Validation(value, missing)
        current.validations[value_id] = validation
        for wanted in sorted(missing):
            self._fetch(wanted, now_ms)
        self._maybe_compute(value_id, validation)

    def _structural_problem(self, value: Value) -> str | None:
        current = self.round
        if value.round != current.number or value.prev_hash != self.state.last_hash:
            return "not on our chain"
        if len(value.inputs) < self.genesis.inputs_min:
            return f"{len(value.inputs)} inputs, fewer than n - f = {self.genesis.inputs_min}"
        if any(sender not in current.eligible for sender, _ in value.inputs):
            return "an input from a member that may not contribute"
        if len(value.evidence) > self.limits.evidence_max:
            return "too much evidence"
        culprits = [item.culprit for item in value.evidence]
        if culprits != sorted(set(culprits)):
            return "evidence culprits not ascending and distinct"
        for item in value.evidence:
            if self._proven(item.culprit):
                return f"evidence against member {item.culprit}, already banned"
            try:
                self._check_evidence(item)
            except (MessageError, SignatureError) as error:
                return f"invalid evidence: {error}"
        return None

    def _maybe_compute(self, value_id: bytes, validation: _Validation) -> None:
        if validation.missing or validation.request or validation.verdict is not None:
            return
        current = self.round
        value = validation.value
        senders = tuple(sender for sender, _ in value.inputs)
        payloads = tuple(current.updates[sender][digest].payload for sender, digest in value.inputs)
        validation.request = self._compute(senders, payloads, tuple(item.culprit for item in value.evidence))
        current.validating[validation.request] = value_id

    def _decide(self, view: int, value_id: bytes, now_ms: int) -> None:
        current = self.round
        signatures = {}
        for table in (current.votes, current.second_votes):
            for (step, vote_view, voter), vote in table.items():
                if step is Step.PRECOMMIT and vote_view == view and vote.value_id == value_id:
                    signatures[voter] = vote.signature
        certificate = tuple(sorted(signatures.items()))
        record = Record(current.values[value_id], view, certificate)
        result = current.results[value_id]
        state = result.state.committed(value_id)
        self.records.append(record)
        self.effects.append(Commit(record, state, result))
        self._event(
            "committed",
            round=current.number,
            hash=value_id.hex()[:16],
            view=view,
            inputs=len(record.value.inputs),
            banned=list(result.banned),
            proven=list(result.proven),
        )
        self._advance(state, now_ms)

    # ---------------------------------------------------------------------------- gossip and sync

    def _gossip(self) -> None:
        """Re-send what peers may have lost: our holdings, our proposal and votes of this view."""
        current = self.round
        if current.updates:
            self.effects.append(Broadcast(self._announcement()))
        view = current.consensus.view
        for kind in ("proposal", "prevote", "precommit"):
            message = current.my_messages.get((kind, view))
            if message is not None:
                self.effects.append(Broadcast(message))

    def _help_behind(self, peer: int, round_number: int) -> None:
        """A peer is still in an earlier round: send it the record that ends that round (once)."""
        sent = self.round.records_sent
        if (peer, round_number) in sent or len(sent) >= MESSAGES_PER_PEER_PER_ROUND_MAX:
            return
        for record in self.records:
            if record.value.round == round_number:
                sent.add((peer, round_number))
                self.effects.append(Send(peer, record))
                return

    def _request_sync(self, peer: int, now_ms: int) -> None:
        if now_ms < self.sync_deadline:
            self.sync_pending = peer  # asked too soon after the last request: ask when allowed
            return
        self.sync_pending = None
        self.sync_deadline = now_ms + SYNC_RETRY_MS
        self.effects.append(Send(peer, SyncRequest(self.round.number, SYNC_RECORDS_MAX, True)))

    def _serve_sync(self, peer: int, request: SyncRequest) -> None:
        if not self.records:
            return
        wanted = [record for record in self.records if request.first <= record.value.round < request.first + request.count]
        if not wanted:
            wanted = list(self.records)[-min(request.count or 1, SYNC_RECORDS_MAX) :]
        state = None
        if request.want_state and wanted[-1].value.round == self.state.round:
            model, aggregate_bytes, ledger = snapshot_bytes(self.state)
            state = StateSnapshot(self.state.round, model, aggregate_bytes, ledger)
        self.effects.append(Send(peer, SyncResponse(tuple(wanted[: SYNC_RECORDS_MAX]), state)))

    def _install(self, peer: int, response: SyncResponse, now_ms: int) -> None:
        """Adopt certified records (and a snapshot) that take us past our current round."""
        records = sorted(response.records, key=lambda record: record.value.round)
        if not records:
            return
        last = records[-1]
        if last.value.round < self.round.number:
            return
        if response.state is None and last.value.id(self.genesis_hash) in self.round.consensus.certified.values():
            # A certificate for this value is already in hand, yet the round is not over: we
            # cannot validate it (an input no one still in this round can send us). The peer is
            # past it: take its certified state instead.
            self._request_sync(peer, now_ms)
            return
        round_hash = last.verify(self.genesis_hash, self.keys, self.genesis.quorum, self.verifier)
        if response.state is None or response.state.round != last.value.round:
            if last.value.round == self.round.number:
                self._adopt_certified(last, round_hash, now_ms)
            return
        snapshot = response.state
        state = state_from_snapshot(self.genesis, snapshot.round, round_hash, snapshot.model, snapshot.aggregate, snapshot.ledger)
        if state.model_digest() != last.value.model_digest or state.ledger_digest() != last.value.ledger_digest:
            raise MessageError("snapshot does not match the certified round")
        contiguous = [record for record in records if record.value.round > self.state.round]
        self.records.extend(contiguous)
        self.effects.append(Installed(tuple(contiguous), state))
        self._event("caught_up", from_round=self.round.number, to_round=state.round, peer=peer)
        self._advance(state, now_ms)

    def _adopt_certified(self, record: Record, round_hash: bytes, now_ms: int) -> None:
        """A certified value for our own round: validate it like a proposal, then commit it."""
        current = self.round
        current.values.setdefault(round_hash, record.value)
        for voter, signature in record.certificate:
            vote = Precommit(record.value.round, record.view, round_hash, voter, signature)
            current.votes.setdefault((Step.PRECOMMIT, record.view, voter), vote)
        voters = [voter for voter, _ in record.certificate]
        self._consensus(current.consensus.on_certified(record.view, round_hash, voters), now_ms)

    def _event(self, name: str, **fields: Any) -> None:
        self.effects.append(Event(name, {"round": self.round.number, **fields}))
