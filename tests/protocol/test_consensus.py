"""Tendermint (Algorithm 1) as a pure state machine: each rule, locks, timeouts, view changes."""

from hypothesis import given, settings
from hypothesis import strategies as st

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
from qora_p2p.protocol.messages import NIL

V = b"v" * 32
W = b"w" * 32


def machine(me=1, members=4):
    faulty = (members - 1) // 3
    quorum = (members + faulty) // 2 + 1
    return Tendermint(members, faulty, quorum, lambda view: view % members, me)


def votes(actions, kind):
    return [action for action in actions if isinstance(action, Vote) and action.kind is kind]


def echo(consensus, actions):
    """Feed our own emitted votes back, as the node core does; return all actions."""
    result = list(actions)
    for action in list(result):
        if isinstance(action, Vote):
            result += echo(consensus, consensus.on_vote(action.kind, action.view, consensus.me, action.value_id))
    return result


def test_honest_round_decides_the_proposal():
    """Valid proposal -> prevote it; a quorum of prevotes -> lock and precommit; a quorum of
    precommits -> decide; timeouts are scheduled along the way."""
    consensus = machine()
    assert Schedule(Timeout.PROPOSE, 0) in consensus.start()
    assert NeedValidity(V) in consensus.on_proposal(0, V, -1)
    assert votes(echo(consensus, consensus.on_validity(V, True)), Step.PREVOTE) == [Vote(Step.PREVOTE, 0, V)]
    consensus.on_vote(Step.PREVOTE, 0, 0, V)
    actions = echo(consensus, consensus.on_vote(Step.PREVOTE, 0, 2, V))
    assert Vote(Step.PRECOMMIT, 0, V) in actions
    assert (consensus.locked_value, consensus.locked_view) == (V, 0)
    consensus.on_vote(Step.PRECOMMIT, 0, 0, V)
    assert Decide(0, V) in consensus.on_vote(Step.PRECOMMIT, 0, 2, V)


def test_the_proposer_asks_for_a_value_then_proposes_it():
    """As proposer with no valid value, ask for one (getValue) and propose it with valid view -1."""
    consensus = machine(me=0)
    assert NeedValue(0) in consensus.start()
    assert Propose(0, V, -1) in consensus.on_value_ready(0, V)


def test_invalid_value_gets_a_nil_prevote():
    """valid(v) false -> prevote nil."""
    consensus = machine()
    consensus.start()
    consensus.on_proposal(0, V, -1)
    assert votes(consensus.on_validity(V, False), Step.PREVOTE) == [Vote(Step.PREVOTE, 0, NIL)]


def test_timeouts_move_through_nil_votes_to_the_next_view():
    """No proposal: propose timeout -> prevote nil; quorum nil prevotes -> precommit nil;
    precommit timeout -> next view (whose proposer is then asked to build)."""
    consensus = machine(me=1)
    consensus.start()
    assert votes(echo(consensus, consensus.on_timeout(Timeout.PROPOSE, 0)), Step.PREVOTE) == [Vote(Step.PREVOTE, 0, NIL)]
    consensus.on_vote(Step.PREVOTE, 0, 0, NIL)
    actions = echo(consensus, consensus.on_vote(Step.PREVOTE, 0, 2, NIL))
    assert Vote(Step.PRECOMMIT, 0, NIL) in actions
    consensus.on_vote(Step.PRECOMMIT, 0, 0, NIL)
    actions = consensus.on_vote(Step.PRECOMMIT, 0, 2, NIL)
    assert Schedule(Timeout.PRECOMMIT, 0) in actions
    assert NeedValue(1) in consensus.on_timeout(Timeout.PRECOMMIT, 0)
    assert consensus.view == 1


def test_a_lock_refuses_other_values_unless_a_later_quorum_justifies_them():
    """Locked on V in view 0: a fresh proposal of W in view 1 gets nil; W re-proposed in view 2
    with valid view 1 and a quorum of view-1 prevotes for W gets a prevote."""
    consensus = machine(me=1)
    consensus.start()
    consensus.on_proposal(0, V, -1)
    echo(consensus, consensus.on_validity(V, True))
    consensus.on_vote(Step.PREVOTE, 0, 0, V)
    echo(consensus, consensus.on_vote(Step.PREVOTE, 0, 2, V))
    assert consensus.locked_value == V
    consensus.on_timeout(Timeout.PRECOMMIT, 0)
    consensus.on_proposal(1, W, -1)
    assert votes(consensus.on_validity(W, True), Step.PREVOTE) == [Vote(Step.PREVOTE, 1, NIL)]
    for voter in (0, 2, 3):
        consensus.on_vote(Step.PREVOTE, 1, voter, W)
    consensus.on_timeout(Timeout.PRECOMMIT, 1)
    assert votes(consensus.on_proposal(2, W, 1), Step.PREVOTE) == [Vote(Step.PREVOTE, 2, W)]


def test_f_plus_one_messages_of_a_higher_view_pull_us_there():
    """f + 1 distinct members speaking in view 5 move us to view 5 (line 55)."""
    consensus = machine(me=1)
    consensus.start()
    consensus.on_vote(Step.PREVOTE, 5, 0, NIL)
    assert consensus.view == 0
    consensus.on_vote(Step.PRECOMMIT, 5, 3, NIL)
    assert consensus.view == 5


def test_a_late_quorum_still_sets_the_valid_value():
    """A quorum of prevotes for a proposal of an earlier view arriving after we left that view
    makes it our valid value, which we then re-propose (with its view) when we are proposer."""
    consensus = machine(me=2)
    consensus.start()
    consensus.on_proposal(0, V, -1)
    consensus.on_validity(V, True)
    consensus.on_timeout(Timeout.PREVOTE, 0)
    consensus.on_timeout(Timeout.PRECOMMIT, 0)  # now in view 1
    for voter in (0, 1, 3):
        consensus.on_vote(Step.PREVOTE, 0, voter, V)
    assert (consensus.valid_value, consensus.valid_view) == (V, 0)
    assert Propose(2, V, 0) in consensus.on_timeout(Timeout.PRECOMMIT, 1)  # member 2 proposes view 2


def test_equivocating_votes_count_for_each_value_they_name():
    """A voter that signed both V and nil counts toward both tallies (each is a signed vote)."""
    consensus = machine(me=1)
    consensus.start()
    consensus.on_vote(Step.PREVOTE, 0, 3, V)
    consensus.on_vote(Step.PREVOTE, 0, 3, NIL)
    assert consensus._count(consensus.prevotes, 0, V) == 1 and consensus._count(consensus.prevotes, 0, NIL) == 1
    assert consensus._count(consensus.prevotes, 0) == 1


def test_resume_keeps_the_lock_and_never_votes_twice():
    """After a restart inside view 3 with a prevote and a precommit for V already signed, the
    machine is locked on V, in precommit step, and emits no second vote for view 3."""
    consensus = machine(me=1)
    actions = consensus.resume(3, {(Step.PREVOTE, 3), (Step.PRECOMMIT, 3)}, (V, 3))
    assert consensus.step is Step.PRECOMMIT and consensus.locked_value == V
    assert not votes(actions, Step.PREVOTE) and not votes(actions, Step.PRECOMMIT)
    assert not votes(consensus.on_proposal(3, W, -1) + consensus.on_validity(W, True), Step.PREVOTE)


def inputs(last_view, last_voter, size):
    """Lists of consensus inputs in views 0..last_view from voters 0..last_voter."""
    return st.lists(
        st.one_of(
            st.tuples(st.just("proposal"), st.integers(0, last_view), st.sampled_from([V, W]), st.integers(-1, last_view - 1)),
            st.tuples(st.just("vote"), st.sampled_from([Step.PREVOTE, Step.PRECOMMIT]), st.integers(0, last_view), st.integers(0, last_voter), st.sampled_from([V, W, NIL])),
            st.tuples(st.just("validity"), st.sampled_from([V, W]), st.booleans()),
            st.tuples(st.just("timeout"), st.sampled_from(list(Timeout)), st.integers(0, last_view)),
        ),
        max_size=size,
    )


def feed(consensus, event):
    """One input of `inputs` (a proposal's valid view must be below its view); its actions."""
    if event[0] == "proposal":
        _, view, value, valid_view = event
        return consensus.on_proposal(view, value, valid_view) if valid_view < view else []
    if event[0] == "vote":
        _, kind, view, voter, value = event
        return consensus.on_vote(kind, view, voter % consensus.members, value)
    if event[0] == "validity":
        return consensus.on_validity(event[1], event[2])
    return consensus.on_timeout(event[1], event[2])


@settings(max_examples=300)
@given(inputs(last_view=4, last_voter=3, size=60))
def test_never_two_votes_in_a_slot_and_at_most_one_decision(events):
    """Whatever arrives in whatever order: one prevote and one precommit per view at most, at most
    one decision, and a prevote for a value only when that value was judged valid."""
    consensus = machine(me=1)
    emitted = list(consensus.start())
    for event in events:
        emitted += feed(consensus, event)
    slots = [(action.kind, action.view) for action in emitted if isinstance(action, Vote)]
    assert len(slots) == len(set(slots))
    assert sum(isinstance(action, Decide) for action in emitted) <= 1
    for action in emitted:
        if isinstance(action, Vote) and action.value_id != NIL:
            assert consensus.validity.get(action.value_id) is True


class AlwaysRunsTheRules(Tendermint):
    """The reference: runs every rule after every vote (what `Tendermint.on_vote` skips)."""

    def on_vote(self, kind, view, voter, value_id):
        self._record_vote(kind, view, voter, value_id)
        return self._run()


@settings(max_examples=500)
@given(st.sampled_from([4, 7, 10]), inputs(last_view=2, last_voter=9, size=120))
def test_votes_that_reach_no_quorum_skip_the_rules_without_changing_anything(members, events):
    """Skipping the rules after a vote that raised no count to the quorum (and made no view ripe)
    gives the same actions, step by step, as running them after every vote."""
    faulty = (members - 1) // 3
    quorum = (members + faulty) // 2 + 1
    fast = Tendermint(members, faulty, quorum, lambda view: view % members, 1)
    reference = AlwaysRunsTheRules(members, faulty, quorum, lambda view: view % members, 1)
    assert echo(fast, fast.start()) == echo(reference, reference.start())
    for event in events:
        assert echo(fast, feed(fast, event)) == echo(reference, feed(reference, event))
        assert (fast.view, fast.step, fast.decision, fast.locked_value, fast.valid_value) == (reference.view, reference.step, reference.decision, reference.locked_value, reference.valid_value)


def _both(members, inputs):
    """``inputs`` (method name, arguments) fed to the fast machine and to the reference."""
    faulty = (members - 1) // 3
    quorum = (members + faulty) // 2 + 1
    runs = []
    for kind in (Tendermint, AlwaysRunsTheRules):
        consensus = kind(members, faulty, quorum, lambda view: view % members, 1)
        runs.append([echo(consensus, consensus.start())] + [echo(consensus, getattr(consensus, name)(*arguments)) for name, arguments in inputs])
    return runs


def test_a_quorum_of_one_value_after_a_quorum_of_voters_still_fires():
    # Four members, quorum 3: the voters reach the quorum first (split), then V's tally does.
    prevotes = [("on_vote", (Step.PREVOTE, 0, voter, value)) for voter, value in ((0, W), (2, V), (3, V))]
    fast, reference = _both(4, [("on_proposal", (0, V, -1)), ("on_validity", (V, True)), *prevotes])
    assert fast == reference
    assert any(isinstance(action, Vote) and action.kind is Step.PRECOMMIT and action.value_id == V for step in fast for action in step)


def test_precommits_split_then_a_quorum_decides_and_a_ripe_view_moves_us():
    # Seven members, quorum 5, f + 1 = 3: precommits for V arrive after a split quorum of voters.
    inputs = [("on_proposal", (0, V, -1)), ("on_validity", (V, True))]
    inputs += [("on_vote", (Step.PRECOMMIT, 0, voter, NIL if voter == 0 else V)) for voter in (0, 2, 3, 4, 5, 6)]
    fast, reference = _both(7, inputs)
    assert fast == reference
    assert any(isinstance(action, Decide) for step in fast for action in step)
    ripe = [("on_vote", (Step.PREVOTE, 3, voter, NIL)) for voter in (0, 2, 3)]
    fast, reference = _both(7, ripe)
    assert fast == reference
    assert any(isinstance(action, Schedule) and action.view == 3 for action in fast[-1])
