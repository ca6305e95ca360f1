"""Agreement on one FL round: the glue between a Tendermint instance and the round's updates.

Theory of operation
-------------------
One `Agreement` lives as long as its FL round (the core makes a new one at every commit). It owns
the round's `Tendermint` (`qora_p2p.protocol.consensus`) and everything consensus needs that is not
pure voting logic:

* **Proposals and votes**, checked (proposer of the view, signature) and stored *before* they are
  counted; a second, different signed message in a slot is equivocation evidence and still counts
  for what it names (members that saw different halves can justify the same lock).
* **Values**: a proposal's value is *valid* only once every listed update is held (missing ones are
  fetched through `qora_p2p.protocol.dissemination`) and our own `compute_round` gives its model and
  ledger digests; the verdict arrives asynchronously (a `Compute` effect, then `computed`).
* **Building**: when consensus asks for our value in a view (`NeedValue`), it is built once enough
  updates are here (every contributing member that was an input of the previous round or has
  spoken since it began, or ``collect_timeout_ms`` after ``n - f``, or the round timeout), from one update per sender (the
  lowest digest of an equivocator's two).
* **Proposers** rotate with the round, members absent from the previous round's inputs last.
* **Timeouts** ``init + view * delta`` (capped). View 0's propose clock starts only once this member
  holds ``n - f`` updates or after ``round_timeout_ms`` (`view0_waiting`): training time must not
  eat the proposer's timeout. `_schedule` defers it and `view0_clock` alone decides when it starts.
* **Pruning**: messages of views more than `VIEWS_KEPT` behind are forgotten (except the lock's and
  the valid value's view), so a long stall keeps memory bounded.

Invariants (asserted): an agreement acts only while its round is open; a vote counts only once it
is stored; nothing is kept for a pruned view.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, assert_never

from qora_p2p.errors import MessageError, SignatureError
from qora_p2p.protocol.consensus import (
    Action,
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
from qora_p2p.protocol.effects import Broadcast, Send
from qora_p2p.protocol.limits import HELPED_PER_ROUND_MAX, VIEWS_AHEAD_MAX, VIEWS_KEPT
from qora_p2p.protocol.messages import (
    NIL,
    VIEW_MAX,
    Evidence,
    Message,
    Precommit,
    Prevote,
    Proposal,
    Record,
    Value,
    domain,
)
from qora_p2p.protocol.state import RoundResult

if TYPE_CHECKING:
    from qora_p2p.protocol.core import NodeCore, Round

__all__ = ["Agreement"]


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


Vote_ = Prevote | Precommit


class Agreement:
    """Consensus on one round's value. Created by the core with the round it belongs to."""

    def __init__(self, core: NodeCore, round_: Round) -> None:
        self.core, self.round = core, round_
        genesis = core.genesis
        number = round_.number
        # Proposers rotate with the round; members that were not inputs of the previous round
        # (down, or silent) come last, so they cost a view timeout only in the round they first miss.
        rotation = [(number + offset) % genesis.size for offset in range(genesis.size)]
        self.order = [member for member in rotation if member in round_.active] + [member for member in rotation if member not in round_.active]
        order = self.order
        self.consensus = Tendermint(genesis.size, genesis.faulty, genesis.quorum, lambda view: order[view % len(order)], core.me)
        self.values: dict[bytes, Value] = {}
        self.proposals: dict[int, Proposal] = {}
        self.votes: dict[tuple[Step, int, int], Vote_] = {}
        self.second_votes: dict[tuple[Step, int, int], Vote_] = {}
        self.validations: dict[bytes, _Validation] = {}
        self.results: dict[bytes, RoundResult] = {}
        self.wanted_views: set[int] = set()  # views whose value we must build
        self.building: dict[int, _Build] = {}  # compute request -> build
        self.validating: dict[int, bytes] = {}  # compute request -> value id
        self.timeouts: dict[tuple[Timeout, int], int] = {}
        self.view0_waiting = False
        self.helped: set[tuple[int, int]] = set()  # (peer, view) we sent our view to
        self.pruned_below = 0
        self.my_messages: dict[tuple[str, int], Message] = {}  # for gossip
        # Precommit signatures of certificates adopted whole (catch-up): a voter's signature for
        # the certified value is kept even when we hold another precommit of its (an equivocator).
        self.certified_signatures: dict[tuple[int, bytes], dict[int, bytes]] = {}  # (view, value) -> voter -> signature

    def proposer(self, view: int) -> int:
        return self.consensus.proposer(view)

    # ---------------------------------------------------------------------------- start and resume

    def start(self, now_ms: int) -> None:
        """Enter the round: view 0, or the view and votes we had signed before a restart."""
        restored = self._restored_votes()
        if restored:
            self._resume(restored, now_ms)
        else:
            self.run(self.consensus.start(), now_ms)

    def _restored_votes(self) -> dict[tuple[Step, int], bytes]:
        kinds = {"prevote": Step.PREVOTE, "precommit": Step.PRECOMMIT}
        number = self.round.number
        return {(kinds[kind], view): content for (kind, slot_round, view), content in self.core.signed.items() if slot_round == number and kind in kinds}

    def _resume(self, restored: dict[tuple[Step, int], bytes], now_ms: int) -> None:
        """Restart inside a round we had voted in: same view, same lock, same votes (re-signed,
        Ed25519 signatures are deterministic, so they are the very same messages)."""
        core = self.core
        view = max(view for _, view in restored)
        precommits = [(vote_view, content) for (step, vote_view), content in restored.items() if step is Step.PRECOMMIT and content != NIL]
        locked = None
        if precommits:
            locked_view, locked_value = max(precommits)
            locked = (locked_value, locked_view)
        for (step, vote_view), content in sorted(restored.items()):
            kind = Prevote if step is Step.PREVOTE else Precommit
            vote = kind.create(core.identity, core.genesis_hash, self.round.number, vote_view, content, core.me)
            self.my_messages[(kind.KIND, vote_view)] = vote
            self.votes[(step, vote_view, core.me)] = vote
            self.consensus.on_vote(step, vote_view, core.me, content)
            if vote_view == view:
                core.emit(Broadcast(vote))
        core.event("resumed", view=view, locked=locked is not None)
        self.run(self.consensus.resume(view, set(restored), locked), now_ms)

    # ---------------------------------------------------------------------------- messages

    def on_proposal(self, proposal: Proposal, now_ms: int, peer: int | None = None) -> None:
        """A proposal for this round (from ``peer``, or our own when ``peer`` is None).

        Raises:
            MessageError, SignatureError: not the view's proposer, or a bad signature.
        """
        core = self.core
        if proposal.view > self.consensus.view + VIEWS_AHEAD_MAX:
            return
        if peer is not None and proposal.view < self.consensus.view:
            self._help_view(peer, proposal.view)
        if proposal.proposer != self.proposer(proposal.view):
            raise MessageError(f"member {proposal.proposer} is not the proposer of view {proposal.view}")
        earlier = self.proposals.get(proposal.view)
        value_id = proposal.value.id(core.genesis_hash)
        if earlier is not None:
            if earlier.value.id(core.genesis_hash) != value_id:
                proposal.verify(core.genesis_hash, core.keys[proposal.proposer])
                core.evidence.accept(Evidence(proposal.proposer, earlier.header(core.genesis_hash), proposal.header(core.genesis_hash)), now_ms)
            return
        core.verifier(core.keys[proposal.proposer], domain(core.genesis_hash, Proposal.KIND), proposal.header(core.genesis_hash).body, proposal.signature)
        self.proposals[proposal.view] = proposal
        self.values.setdefault(value_id, proposal.value)
        self.run(self.consensus.on_proposal(proposal.view, value_id, proposal.valid_view), now_ms)

    def on_vote(self, vote: Vote_, now_ms: int, peer: int | None = None) -> None:
        """A prevote or precommit for this round (ours when ``peer`` is None).

        Raises:
            SignatureError: a bad signature.
        """
        core = self.core
        if vote.view > self.consensus.view + VIEWS_AHEAD_MAX:
            return
        if peer is not None and vote.view < self.consensus.view:
            self._help_view(peer, vote.view)
        kind = Step.PREVOTE if isinstance(vote, Prevote) else Step.PRECOMMIT
        key = (kind, vote.view, vote.voter)
        earlier = self.votes.get(key)
        if earlier is not None and (earlier.value_id == vote.value_id or key in self.second_votes):
            return
        core.verifier(core.keys[vote.voter], domain(core.genesis_hash, vote.KIND), vote.header().body, vote.signature)
        if earlier is None:
            self.votes[key] = vote
        else:
            # A second, different signed vote: proof of equivocation, and it still counts for what it
            # names (so that members who saw different halves can justify the same lock).
            self.second_votes[key] = vote
            core.evidence.accept(Evidence(vote.voter, earlier.header(), vote.header()), now_ms)
        assert self.votes.get(key) is vote or self.second_votes.get(key) is vote, "a vote is stored before it counts"
        if actions := self.consensus.on_vote(kind, vote.view, vote.voter, vote.value_id):  # most votes change nothing
            self.run(actions, now_ms)

    def _help_view(self, peer: int, view: int) -> None:
        """A peer is in an earlier view of our round: send it the view's proposal and our votes in
        it, once, so that it can gather the quorum that moves it on (Tendermint assumes gossip
        delivers everything eventually)."""
        if (peer, view) in self.helped or len(self.helped) >= HELPED_PER_ROUND_MAX:
            return
        self.helped.add((peer, view))
        proposal = self.proposals.get(view)
        if proposal is not None:
            self.core.emit(Send(peer, proposal))
        # Our own votes only: every honest member does the same, and together they are a quorum.
        for kind in ("prevote", "precommit"):
            message = self.my_messages.get((kind, view))
            if message is not None:
                self.core.emit(Send(peer, message))

    def own_messages(self) -> list[Message]:
        """Our proposal and votes of the current view (what gossip re-sends when stalled)."""
        view = self.consensus.view
        return [message for kind in ("proposal", "prevote", "precommit") if (message := self.my_messages.get((kind, view))) is not None]

    def likely_holders(self) -> list[int]:
        """Members that must hold a proposed value's inputs: proposers, then non-nil prevoters."""
        candidates = [proposal.proposer for proposal in self.proposals.values()]
        candidates += [voter for (step, _, voter), vote in self.votes.items() if step is Step.PREVOTE and vote.value_id != NIL]
        return candidates

    # ---------------------------------------------------------------------------- consensus glue

    def run(self, actions: Iterable[Action], now_ms: int) -> None:
        """Carry out what consensus asked for, in order, until the round closes (a decision)."""
        assert not self.round.closed, "a closed round's agreement never acts"
        self._prune_views()
        for action in actions:
            if self.round.closed:
                return  # a decision already moved us on
            match action:
                case Schedule():
                    self._schedule(action.timeout, action.view, now_ms)
                case NeedValidity():
                    self._validate(action.value_id, now_ms)
                case NeedValue():
                    self.wanted_views.add(action.view)
                case Propose():
                    self._propose(action, now_ms)
                case Vote():
                    self._vote(action, now_ms)
                case Decide():
                    self._decide(action.view, action.value_id, now_ms)
                case _:
                    assert_never(action)

    def _schedule(self, timeout: Timeout, view: int, now_ms: int, armed: bool = False) -> None:
        if view > VIEW_MAX:
            return  # nothing can be signed there (`_beyond_views`): no timer either
        timing = self.core.genesis.timing
        initial = {
            Timeout.PROPOSE: timing.propose_timeout_ms,
            Timeout.PREVOTE: timing.prevote_timeout_ms,
            Timeout.PRECOMMIT: timing.precommit_timeout_ms,
        }[timeout]
        if timeout is Timeout.PROPOSE and view == 0 and self.round.updates.ready_ms is None and not armed:
            # View 0 starts its clock once this member could judge a proposal (n - f updates held),
            # or after round_timeout_ms: training time must not eat the proposer's timeout.
            self.view0_waiting = True
            return
        extra = timing.collect_timeout_ms if timeout is Timeout.PROPOSE and view == 0 else 0
        self.timeouts[(timeout, view)] = now_ms + extra + timing.for_view(initial, view)

    def view0_clock(self, now_ms: int) -> None:
        """Start view 0's propose clock once it is due: this member holds n - f updates (it could
        judge a proposal) or the round has run for ``round_timeout_ms``."""
        if self.view0_waiting and (self.round.updates.ready_ms is not None or now_ms >= self._view0_latest()):
            self.view0_waiting = False
            self._schedule(Timeout.PROPOSE, 0, now_ms, armed=True)
        assert not (self.view0_waiting and self.round.updates.ready_ms is not None), "the clock starts as soon as n - f updates are here"

    def _view0_latest(self) -> int:
        return self.round.started_ms + self.core.genesis.timing.round_timeout_ms

    def _beyond_views(self, view: int) -> bool:
        """Views past VIEW_MAX cannot be signed (the codec refuses them): the round waits there
        for a certificate or catch-up. Honest members never get near it (2**31 timeouts); only a
        quorum certificate at VIEW_MAX, which needs honest signatures there, could move us to it."""
        if view <= VIEW_MAX:
            return False
        self.core.event("view_limit", view=view)
        return True

    def _vote(self, action: Vote, now_ms: int) -> None:
        core = self.core
        if self._beyond_views(action.view):
            return
        kind = Prevote if action.kind is Step.PREVOTE else Precommit
        if not core.sign_slot((kind.KIND, self.round.number, action.view), action.value_id):
            return
        vote = kind.create(core.identity, core.genesis_hash, self.round.number, action.view, action.value_id, core.me)
        self.my_messages[(kind.KIND, action.view)] = vote
        core.emit(Broadcast(vote))
        self.on_vote(vote, now_ms)

    def _propose(self, action: Propose, now_ms: int) -> None:
        core = self.core
        if self._beyond_views(action.view):
            return
        value = self.values.get(action.value_id)
        if value is None:  # a value we locked before a restart and have not seen since
            core.event("cannot_repropose", view=action.view)
            return
        if not core.sign_slot(("proposal", self.round.number, action.view), action.value_id):
            return
        proposal = Proposal.create(core.identity, core.genesis_hash, action.view, action.valid_view, core.me, value)
        self.my_messages[("proposal", action.view)] = proposal
        core.emit(Broadcast(proposal))
        if action.valid_view >= 0:
            # The prevotes that justify re-proposing a locked value travel with it (rule 28).
            for vote in self._votes_of(Step.PREVOTE, action.valid_view, action.value_id):
                core.emit(Broadcast(vote))
        self.on_proposal(proposal, now_ms)

    def _votes_of(self, step: Step, view: int, value_id: bytes | None = None) -> list[Vote_]:
        return [
            vote
            for table in (self.votes, self.second_votes)
            for (kind, vote_view, _), vote in sorted(table.items(), key=lambda item: item[0][2])
            if kind is step and vote_view == view and (value_id is None or vote.value_id == value_id)
        ]

    def _decide(self, view: int, value_id: bytes, now_ms: int) -> None:
        signatures = dict(self.certified_signatures.get((view, value_id), {}))
        for table in (self.votes, self.second_votes):
            for (step, vote_view, voter), vote in table.items():
                if step is Step.PRECOMMIT and vote_view == view and vote.value_id == value_id:
                    signatures[voter] = vote.signature
        certificate = tuple(sorted(signatures.items()))
        self.core.commit(Record(self.values[value_id], view, certificate), value_id, self.results[value_id], now_ms)

    # ---------------------------------------------------------------------------- building our value

    def progress(self, now_ms: int) -> None:
        """Build values for views we must propose in, once enough updates are here (fetching
        missing ones from members that announced them)."""
        if self.round.closed:
            return
        # Called after every input, so the common case (nothing wanted in this view) returns early.
        view = self.consensus.view
        wanted = self.wanted_views
        if wanted and min(wanted) < view:
            self.wanted_views = wanted = {other for other in wanted if other >= view}
        if view not in wanted:
            return  # only the current view is ever built; later ones wait until we are in them
        timing = self.core.genesis.timing
        updates = self.round.updates
        if len(updates.held) < self.core.genesis.inputs_min:
            # Senders with a fetch by sender in flight; a fetch by digest (a value's input,
            # perhaps a bogus one) must not hold back fetching that sender's update by sender.
            fetching = {sender for sender, digest in updates.fetching if digest == NIL}
            for sender in sorted(self.round.contributors - set(updates.held) - fetching):
                updates.fetch_from_holders(sender, now_ms)
            return
        # Stragglers are waited for (up to collect_timeout_ms) if they were inputs of the
        # previous round or spoke since it began (a slow member stays in); a member that is
        # down or silent is not waited for round after round.
        current = self.round
        waited = current.contributors & (current.active | self.core.heard_before | current.heard)
        every = all(member in updates.held for member in waited)
        collected = updates.ready_ms is not None and now_ms >= updates.ready_ms + timing.collect_timeout_ms
        late = now_ms >= self.round.started_ms + timing.round_timeout_ms
        if every or collected or late or view > 0:
            self._build(view)

    def _build(self, view: int) -> None:
        core = self.core
        held = self.round.updates.held
        senders = sorted(held)
        chosen = [min(held[sender].values(), key=lambda update: update.digest) for sender in senders]
        culprits = core.evidence.unproven(core.limits.evidence_max)
        request = core.compute(tuple(senders), tuple(update.payload for update in chosen), tuple(culprits))
        inputs = tuple((update.sender, update.digest) for update in chosen)
        self.building[request] = _Build(view, inputs, tuple(core.evidence.pending[culprit] for culprit in culprits))
        self.wanted_views.discard(view)

    def computed(self, request: int, result: RoundResult, now_ms: int) -> None:
        """The result of one of this round's `Compute` requests."""
        if request in self.building:
            self._proposal_built(self.building.pop(request), result, now_ms)
            return
        value_id = self.validating.pop(request, None)
        if value_id is None:
            return
        validation = self.validations[value_id]
        value = validation.value
        valid = result.model_digest == value.model_digest and result.ledger_digest == value.ledger_digest
        validation.verdict = valid
        if valid:
            self.results[value_id] = result
        else:
            self.core.event("invalid_value", value=value_id.hex()[:16], reason="its model or ledger digest is wrong")
        self.run(self.consensus.on_validity(value_id, valid), now_ms)

    def compute_failed(self, request: int, reason: str, now_ms: int) -> None:
        """The round transition refused a request's inputs. A value to validate is invalid; a value
        we were building is not proposed (the view's timeout moves consensus on)."""
        build = self.building.pop(request, None)
        if build is not None:
            self.core.event("build_failed", view=build.view, reason=reason)
            return
        value_id = self.validating.pop(request, None)
        if value_id is None:
            return
        self.validations[value_id].verdict = False
        self.core.event("invalid_value", value=value_id.hex()[:16], reason=f"the round transition refused it: {reason}")
        self.run(self.consensus.on_validity(value_id, False), now_ms)

    def _proposal_built(self, build: _Build, result: RoundResult, now_ms: int) -> None:
        core = self.core
        value = Value(self.round.number, core.state.last_hash, build.inputs, build.evidence, result.model_digest, result.ledger_digest)
        value_id = value.id(core.genesis_hash)
        self.values[value_id] = value
        self.results[value_id] = result
        self.validations[value_id] = _Validation(value, set(), verdict=True)
        self.run(self.consensus.on_value_ready(build.view, value_id), now_ms)

    # ---------------------------------------------------------------------------- validating values

    def _validate(self, value_id: bytes, now_ms: int) -> None:
        value = self.values[value_id]
        problem = self._structural_problem(value)
        if problem is not None:
            self.validations[value_id] = _Validation(value, set(), verdict=False)
            self.core.event("invalid_value", value=value_id.hex()[:16], reason=problem)
            self.run(self.consensus.on_validity(value_id, False), now_ms)
            return
        held = self.round.updates.held
        missing = {(sender, digest) for sender, digest in value.inputs if digest not in held.get(sender, {})}
        validation = _Validation(value, missing)
        self.validations[value_id] = validation
        for wanted in sorted(missing):
            self.round.updates.fetch(wanted, now_ms)
        self._maybe_compute(value_id, validation)

    def _structural_problem(self, value: Value) -> str | None:  # noqa: PLR0911 (one return per check, in order)
        core = self.core
        if value.round != self.round.number or value.prev_hash != core.state.last_hash:
            return "not on our chain"
        if len(value.inputs) < core.genesis.inputs_min:
            return f"{len(value.inputs)} inputs, fewer than n - f = {core.genesis.inputs_min}"
        if any(sender not in self.round.contributors for sender, _ in value.inputs):
            return "an input from a member that may not contribute"
        if len(value.evidence) > core.limits.evidence_max:
            return "too much evidence"
        culprits = [item.culprit for item in value.evidence]
        if culprits != sorted(set(culprits)):
            return "evidence culprits not ascending and distinct"
        for item in value.evidence:
            if core.evidence.proven(item.culprit):
                return f"evidence against member {item.culprit}, already banned"
            try:
                core.evidence.check(item)
            except (MessageError, SignatureError) as error:
                return f"invalid evidence: {error}"
        return None

    def _maybe_compute(self, value_id: bytes, validation: _Validation) -> None:
        if validation.missing or validation.request or validation.verdict is not None:
            return
        held = self.round.updates.held
        value = validation.value
        senders = tuple(sender for sender, _ in value.inputs)
        payloads = tuple(held[sender][digest].payload for sender, digest in value.inputs)
        validation.request = self.core.compute(senders, payloads, tuple(item.culprit for item in value.evidence))
        self.validating[validation.request] = value_id

    def missing_inputs(self) -> set[tuple[int, bytes]]:
        """Inputs of values we still validate that are not here yet."""
        return {wanted for validation in self.validations.values() for wanted in validation.missing}

    def update_stored(self, sender: int, digest: bytes) -> None:
        """An update arrived: values waiting for it may now be computed."""
        for value_id, validation in self.validations.items():
            if (sender, digest) in validation.missing:
                validation.missing.discard((sender, digest))
                self._maybe_compute(value_id, validation)

    # ---------------------------------------------------------------------------- certified values

    def certified(self, value_id: bytes) -> bool:
        """Whether a commit certificate for ``value_id`` is already in hand."""
        return value_id in self.consensus.certified.values()

    def adopt_certified(self, record: Record, round_hash: bytes, now_ms: int) -> None:
        """A certified value for our own round: validate it like a proposal, then commit it."""
        self.values.setdefault(round_hash, record.value)
        self.certified_signatures.setdefault((record.view, round_hash), {}).update(record.certificate)
        for voter, signature in record.certificate:
            vote = Precommit(record.value.round, record.view, round_hash, voter, signature)
            self.votes.setdefault((Step.PRECOMMIT, record.view, voter), vote)
        voters = [voter for voter, _ in record.certificate]
        self.run(self.consensus.on_certified(record.view, round_hash, voters), now_ms)

    # ---------------------------------------------------------------------------- time

    def fire_timeouts(self, now_ms: int) -> None:
        """Every timeout due at ``now_ms``, earliest first, until one closes the round."""
        for key, deadline in sorted(self.timeouts.items(), key=lambda item: item[1]):
            if deadline <= now_ms and not self.round.closed:
                del self.timeouts[key]
                timeout, view = key
                self.run(self.consensus.on_timeout(timeout, view), now_ms)
        if not self.round.closed:
            self.view0_clock(now_ms)

    def earliest(self, deadline: int, now_ms: int) -> int:
        """``deadline``, or the first moment at which `fire_timeouts` or `progress` may have
        something to do if that is earlier."""
        if self.timeouts:
            deadline = min(deadline, min(self.timeouts.values()))
        if self.view0_waiting:
            deadline = min(deadline, self._view0_latest())
        if self.consensus.view in self.wanted_views:
            # Moments at which building our proposal may become possible; once past, only new
            # updates (events, not time) can change anything.
            timing = self.core.genesis.timing
            late = self.round.started_ms + timing.round_timeout_ms
            if late > now_ms:
                deadline = min(deadline, late)
            ready_ms = self.round.updates.ready_ms
            if ready_ms is not None and ready_ms + timing.collect_timeout_ms > now_ms:
                deadline = min(deadline, ready_ms + timing.collect_timeout_ms)
        return deadline

    # ---------------------------------------------------------------------------- bounded memory

    def _prune_views(self) -> None:
        consensus = self.consensus
        below = consensus.view - VIEWS_KEPT
        if below <= self.pruned_below:
            return
        self.pruned_below = below
        consensus.prune(below)
        keep = {consensus.locked_view, consensus.valid_view}
        self.proposals = {view: p for view, p in self.proposals.items() if view >= below or view in keep}
        for table in (self.votes, self.second_votes):
            for key in [key for key in table if key[1] < below and key[1] not in keep]:
                del table[key]
        self.my_messages = {key: m for key, m in self.my_messages.items() if key[1] >= below}
        self.certified_signatures = {key: held for key, held in self.certified_signatures.items() if key[0] >= below or key[0] in keep}
        self.timeouts = {key: deadline for key, deadline in self.timeouts.items() if key[1] >= below}
        # Our signed slots of pruned views: consensus never votes or proposes in a view behind it
        # again, so only the lock's precommit (restored after a restart) must stay in memory.
        number = self.round.number
        lock = ("precommit", number, consensus.locked_view)
        signed = self.core.signed
        for slot in [slot for slot in signed if slot[1] == number and slot[0] != "update" and slot[2] < below and slot != lock]:
            del signed[slot]
        genesis_hash = self.core.genesis_hash
        referenced = {p.value.id(genesis_hash) for p in self.proposals.values()} | set(consensus.certified.values())
        # A value no kept view refers to is forgotten whole: its result, its validation and
        # consensus's verdict on it (a certificate for it later makes us validate it again, rather
        # than decide a value whose result we no longer hold).
        forgotten = set(self.values) - referenced
        consensus.forget_values(forgotten)
        self.validating = {request: value_id for request, value_id in self.validating.items() if value_id not in forgotten}
        self.values = {value_id: value for value_id, value in self.values.items() if value_id in referenced}
        self.validations = {value_id: v for value_id, v in self.validations.items() if value_id in referenced}
        self.results = {value_id: r for value_id, r in self.results.items() if value_id in referenced}
        assert all(view >= below or view in keep for view in self.proposals), "nothing is kept for a pruned view"
        assert all(key[1] >= below or key[1] in keep for key in self.votes), "nothing is kept for a pruned view"

    # ---------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        consensus = self.consensus
        return {
            "view": consensus.view,
            "step": getattr(consensus.step, "name", str(consensus.step)),
            "view0_waiting": self.view0_waiting,
            "proposals": sorted(self.proposals),
            "validations": {
                value_id.hex()[:8]: {"missing": sorted(sender for sender, _ in validation.missing), "verdict": validation.verdict}
                for value_id, validation in self.validations.items()
            },
            "certified": {view: value_id.hex()[:8] for view, value_id in consensus.certified.items()},
            "timeouts": {f"{timeout.name}/{view}": deadline - self.core.now_ms for (timeout, view), deadline in self.timeouts.items()},
        }
