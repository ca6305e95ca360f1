"""One Tendermint instance per FL round: Algorithm 1 of "The latest gossip on BFT consensus"
(Buchman, Kwon, Milosevic, 2018), as a pure state machine.

Theory of operation
-------------------
Tendermint's *height* is an FL round; its *rounds* are called **views** here (a view change is a new
proposer for the same FL round). This module never reads a clock, sends, or verifies anything: the
node core (`qora_p2p.protocol.core`) feeds it proposals and votes whose signatures it has checked, verdicts on
whether a value is valid, and timeout firings; it answers with `Action`s (propose, prevote,
precommit, schedule a timeout, ask for a value or a verdict, decide).

Values are identified by their id (the round hash); ``NIL`` is the nil vote. ``valid(v)`` is
asynchronous: a validator must fetch every listed update and recompute the round hash, so the
rules that need it wait until `validity` delivers a verdict.

After every input the upon-rules of Algorithm 1 run in its order until none fires:

====  =================================================================================
line  rule
====  =================================================================================
22    proposal(view, v, -1) in propose step: prevote v if valid and not locked on another
28    proposal(view, v, vr) + quorum prevotes(vr, v), vr < view: prevote v if valid and
      the lock allows it
34    quorum prevotes(view, any) in prevote step, first time: schedule prevote timeout
36    proposal(view, v) + quorum prevotes(view, v), v valid, first time: lock and
      precommit v (if in prevote step); remember v as the valid value (also for an
      earlier view above the valid view, when the quorum arrives late)
44    quorum prevotes(view, nil) in prevote step: precommit nil
47    quorum precommits(view, any), first time: schedule precommit timeout
49    proposal(r, v) + quorum precommits(r, v), v valid: decide v (any view r)
55    f + 1 messages of a higher view: start that view
====  =================================================================================

Safety needs only the quorum rules (any two quorums share an honest member) and the lock; the
timeouts ``init + view * delta`` (capped, see `Timing.for_view`) give liveness after the network
stabilises. Invariants are asserted: one prevote and one precommit per view, never decided twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from qora_p2p.protocol.messages import NIL

__all__ = [
    "Decide",
    "NeedValidity",
    "NeedValue",
    "Propose",
    "Schedule",
    "Step",
    "Tendermint",
    "Timeout",
    "Vote",
]


class Step(IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


class Timeout(IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(frozen=True, slots=True)
class Propose:
    view: int
    value_id: bytes
    valid_view: int


@dataclass(frozen=True, slots=True)
class Vote:
    kind: Step  # PREVOTE or PRECOMMIT
    view: int
    value_id: bytes  # NIL for nil


@dataclass(frozen=True, slots=True)
class Schedule:
    timeout: Timeout
    view: int


@dataclass(frozen=True, slots=True)
class NeedValue:
    """We are the proposer of ``view`` and hold no valid value: build one (``getValue()``)."""

    view: int


@dataclass(frozen=True, slots=True)
class NeedValidity:
    value_id: bytes


@dataclass(frozen=True, slots=True)
class Decide:
    view: int
    value_id: bytes


Action = Propose | Vote | Schedule | NeedValue | NeedValidity | Decide


@dataclass(slots=True)
class _ProposalSeen:
    value_id: bytes
    valid_view: int


class Tendermint:
    """The consensus state of one FL round at one member.

    Args:
        members: n.
        faulty: f.
        quorum: votes of a certificate (any two quorums share an honest member).
        proposer: maps a view to the proposing member.
        me: our member index.
    """

    def __init__(self, members: int, faulty: int, quorum: int, proposer: Callable[[int], int], me: int) -> None:
        assert 2 * quorum - members > faulty, "quorums must intersect in an honest member"
        self.members, self.faulty, self.quorum, self.proposer, self.me = members, faulty, quorum, proposer, me
        self.view = -1
        self.step = Step.PROPOSE
        self.locked_value: bytes | None = None
        self.locked_view = -1
        self.valid_value: bytes | None = None
        self.valid_view = -1
        self.decision: bytes | None = None
        self.decided_view = -1
        self.proposals: dict[int, _ProposalSeen] = {}
        # view -> voter -> the values that voter signed in that view (two means it equivocated; each
        # signed vote counts for what it names, as Tendermint's quorum intersection assumes).
        self.prevotes: dict[int, dict[int, set[bytes]]] = {}
        self.precommits: dict[int, dict[int, set[bytes]]] = {}
        # Running tallies, so that every rule check is O(1): (step, view) -> voters, and
        # (step, view, value) -> voters who signed that value.
        self._voters: dict[tuple[Step, int], int] = {}
        self._tally: dict[tuple[Step, int, bytes], int] = {}
        self._senders_above: dict[int, set[int]] = {}  # view -> members heard from in that view
        self._ripe: set[int] = set()  # views that f + 1 members have been heard from in
        self.validity: dict[bytes, bool] = {}
        self.certified: dict[int, bytes] = {}  # view -> value a quorum certificate arrived for
        self.requested: set[bytes] = set()
        self._fired: set[tuple[int, int]] = set()  # (rule line, view) of the "first time" rules
        self._voted: set[tuple[Step, int]] = set()
        self._actions: list[Action] = []

    # ---- inputs -------------------------------------------------------------------------------

    def start(self) -> list[Action]:
        """Enter view 0 (the round starts)."""
        self._start_view(0)
        return self._run()

    def resume(self, view: int, voted: set[tuple[Step, int]], locked: tuple[bytes, int] | None) -> list[Action]:
        """Re-enter ``view`` after a restart, knowing the votes we signed before the crash (from the
        durable last-signed slots) and the lock they imply: never a second vote in a slot, never a
        prevote against the value we last precommitted."""
        self._voted = set(voted)
        if locked is not None:
            self.locked_value, self.locked_view = locked
        self._start_view(view)
        if (Step.PRECOMMIT, view) in voted:
            self.step = Step.PRECOMMIT
        elif (Step.PREVOTE, view) in voted:
            self.step = Step.PREVOTE
        return self._run()

    def on_proposal(self, view: int, value_id: bytes, valid_view: int) -> list[Action]:
        """A correctly signed proposal from ``proposer(view)`` (the first one; the core keeps
        evidence of any second)."""
        if view not in self.proposals:
            self.proposals[view] = _ProposalSeen(value_id, valid_view)
            self._heard(view, self.proposer(view))
            self._ask_validity(value_id)
        return self._run()

    def on_vote(self, kind: Step, view: int, voter: int, value_id: bytes) -> list[Action]:
        """A correctly signed prevote or precommit (the core forwards at most two per voter and view).

        Most votes change no rule's outcome, and the rules are not run for them: every input ends
        with the rules settled (`_run` fires until none applies), a vote only raises counts, and
        every rule compares a count with ``>= quorum`` or asks whether a view is ripe. So a rule
        can fire after a vote only if one of its counts reached the quorum with it, or a view
        became ripe; `_record_vote` says whether either happened. (In a network of 1000, about
        two votes in 1000 do.)"""
        if not self._record_vote(kind, view, voter, value_id):
            assert not self._actions, "the rules were settled before this vote"
            return []
        return self._run()

    def _record_vote(self, kind: Step, view: int, voter: int, value_id: bytes) -> bool:
        """Count a vote; True if a count it raised reached the quorum or a view became ripe."""
        table = self.prevotes if kind is Step.PREVOTE else self.precommits
        values = table.setdefault(view, {}).setdefault(voter, set())
        quorum = self.quorum
        reached = False
        if not values:
            voters = self._voters.get((kind, view), 0) + 1
            self._voters[(kind, view)] = voters
            reached = voters == quorum
        if value_id not in values:
            values.add(value_id)
            tally = self._tally.get((kind, view, value_id), 0) + 1
            self._tally[(kind, view, value_id)] = tally
            reached = reached or tally == quorum
        return self._heard(view, voter) or reached

    def _heard(self, view: int, member: int) -> bool:
        """Note a message of ``member`` in ``view``; True if that made the view ripe."""
        senders = self._senders_above.setdefault(view, set())
        senders.add(member)
        if len(senders) >= self.faulty + 1 and view > self.view and view not in self._ripe:
            self._ripe.add(view)  # views at or below ours can never move us (line 55)
            return True
        return False

    def on_certified(self, view: int, value_id: bytes, voters: list[int]) -> list[Action]:
        """A commit certificate for ``value_id`` in ``view`` arrived whole (catch-up): it stands in for
        the proposal that line 49 needs, since a quorum of precommits means honest members saw it."""
        for voter in voters:
            self._record_vote(Step.PRECOMMIT, view, voter, value_id)
        self.certified.setdefault(view, value_id)
        self._ask_validity(value_id)
        return self._run()

    def on_validity(self, value_id: bytes, valid: bool) -> list[Action]:
        """The verdict on a value: every update fetched and the round hash recomputed (or not)."""
        self.validity.setdefault(value_id, valid)
        return self._run()

    def on_value_ready(self, view: int, value_id: bytes) -> list[Action]:
        """The value built after `NeedValue` (already known valid, since we computed it)."""
        self.validity[value_id] = True
        if view == self.view and self.proposer(view) == self.me and view not in self.proposals and self.decision is None:
            self._actions.append(Propose(view, value_id, -1))
        return self._run()

    def on_timeout(self, timeout: Timeout, view: int) -> list[Action]:
        if view == self.view and self.decision is None:
            if timeout is Timeout.PROPOSE and self.step is Step.PROPOSE:
                self._vote(Step.PREVOTE, NIL)
            elif timeout is Timeout.PREVOTE and self.step is Step.PREVOTE:
                self._vote(Step.PRECOMMIT, NIL)
            elif timeout is Timeout.PRECOMMIT:
                self._start_view(self.view + 1)
        return self._run()

    # ---- the algorithm -----------------------------------------------------------------------

    def prune(self, below: int) -> None:
        """Forget views under ``below`` (bounded memory in long stalls), except those of the lock
        and the valid value, which later rules still consult."""
        keep = {self.locked_view, self.valid_view}
        for table in (self.proposals, self.prevotes, self.precommits, self._senders_above, self.certified):
            for view in [view for view in table if view < below and view not in keep]:
                del table[view]
        self._ripe = {view for view in self._ripe if view in self._senders_above and view > self.view}
        self._voters = {key: count for key, count in self._voters.items() if key[1] >= below or key[1] in keep}
        self._tally = {key: count for key, count in self._tally.items() if key[1] >= below or key[1] in keep}
        self._fired = {key for key in self._fired if key[1] >= below}
        self._voted = {key for key in self._voted if key[1] >= below}  # we never vote behind our view

    def forget_values(self, value_ids: set[bytes]) -> None:
        """Forget the verdicts on values no kept view refers to any more (the caller pruned them);
        a value that comes back (a certificate for it) is asked about again."""
        for value_id in value_ids:
            self.validity.pop(value_id, None)
            self.requested.discard(value_id)

    def _start_view(self, view: int) -> None:
        assert view > self.view
        self.view = view
        self._ripe = {ripe for ripe in self._ripe if ripe > view}
        self.step = Step.PROPOSE
        if self.proposer(view) == self.me:
            if self.valid_value is not None:
                self._actions.append(Propose(view, self.valid_value, self.valid_view))
            else:
                self._actions.append(NeedValue(view))
        self._actions.append(Schedule(Timeout.PROPOSE, view))

    def _vote(self, kind: Step, value_id: bytes) -> None:
        key = (kind, self.view)
        assert key not in self._voted, "never two votes of one kind in one view"
        self._voted.add(key)
        self._actions.append(Vote(kind, self.view, value_id))
        self.step = Step.PREVOTE if kind is Step.PREVOTE else Step.PRECOMMIT

    def _ask_validity(self, value_id: bytes) -> None:
        if value_id not in self.validity and value_id not in self.requested:
            self.requested.add(value_id)
            self._actions.append(NeedValidity(value_id))

    def _count(self, table: dict[int, dict[int, set[bytes]]], view: int, value_id: bytes | None = None) -> int:
        kind = Step.PREVOTE if table is self.prevotes else Step.PRECOMMIT
        if value_id is None:
            return self._voters.get((kind, view), 0)
        return self._tally.get((kind, view, value_id), 0)

    def _first(self, line: int, view: int) -> bool:
        if (line, view) in self._fired:
            return False
        self._fired.add((line, view))
        return True

    def _step_once(self) -> bool:  # noqa: PLR0911, PLR0912 (one branch per rule, in the paper's order)
        """Fire the first applicable rule; False when none applies."""
        if self.decision is not None:
            return False
        view = self.view
        proposal = self.proposals.get(view)
        # line 22
        if proposal is not None and proposal.valid_view == -1 and self.step is Step.PROPOSE:
            verdict = self.validity.get(proposal.value_id)
            if verdict is not None:
                allowed = verdict and (self.locked_view == -1 or self.locked_value == proposal.value_id)
                self._vote(Step.PREVOTE, proposal.value_id if allowed else NIL)
                return True
        # line 28
        if (
            proposal is not None
            and 0 <= proposal.valid_view < view
            and self.step is Step.PROPOSE
            and self._count(self.prevotes, proposal.valid_view, proposal.value_id) >= self.quorum
        ):
            verdict = self.validity.get(proposal.value_id)
            if verdict is not None:
                allowed = verdict and (self.locked_view <= proposal.valid_view or self.locked_value == proposal.value_id)
                self._vote(Step.PREVOTE, proposal.value_id if allowed else NIL)
                return True
        # line 34
        if self.step is Step.PREVOTE and self._count(self.prevotes, view) >= self.quorum and self._first(34, view):
            self._actions.append(Schedule(Timeout.PREVOTE, view))
            return True
        # line 36
        if (
            proposal is not None
            and self.step >= Step.PREVOTE
            and self.validity.get(proposal.value_id)
            and self._count(self.prevotes, view, proposal.value_id) >= self.quorum
            and self._first(36, view)
        ):
            if self.step is Step.PREVOTE:
                self.locked_value, self.locked_view = proposal.value_id, view
                self._vote(Step.PRECOMMIT, proposal.value_id)
            self.valid_value, self.valid_view = proposal.value_id, view
            return True
        # line 36, for earlier views: a quorum of prevotes for a proposal of a view between our
        # valid view and now makes it our valid value (Tendermint's Go implementation does the
        # same), so that what a locked minority waits for gets re-proposed even when the quorum
        # arrived after we left its view. Locks, not valid values, carry safety.
        for seen_view, seen in sorted(self.proposals.items()):
            if (
                self.valid_view < seen_view < view
                and self.validity.get(seen.value_id)
                and self._count(self.prevotes, seen_view, seen.value_id) >= self.quorum
            ):
                self.valid_value, self.valid_view = seen.value_id, seen_view
                return True
        # line 44
        if self.step is Step.PREVOTE and self._count(self.prevotes, view, NIL) >= self.quorum:
            self._vote(Step.PRECOMMIT, NIL)
            return True
        # line 47
        if self._count(self.precommits, view) >= self.quorum and self._first(47, view):
            self._actions.append(Schedule(Timeout.PRECOMMIT, view))
            return True
        # line 49: any view
        candidates = [(seen_view, seen.value_id) for seen_view, seen in self.proposals.items()]
        candidates += list(self.certified.items())
        for seen_view, value_id in candidates:
            if self._count(self.precommits, seen_view, value_id) >= self.quorum and self.validity.get(value_id):
                self.decision, self.decided_view = value_id, seen_view
                self._actions.append(Decide(seen_view, value_id))
                return True
        # line 55
        higher = self._higher_view()
        if higher is not None:
            self._start_view(higher)
            return True
        return False

    def _higher_view(self) -> int | None:
        """The lowest view above ours that f + 1 distinct members have sent messages for (kept as
        they arrive: this runs after every input, and a flood of votes for many views must not
        make it scan them all)."""
        return min(self._ripe, default=None)

    def _run(self) -> list[Action]:
        for _ in range(10_000):  # every firing changes state monotonically; far fewer in practice
            if not self._step_once():
                break
        else:
            raise AssertionError("consensus rules did not settle")
        actions, self._actions = self._actions, []
        return actions
