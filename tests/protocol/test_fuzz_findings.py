"""Bugs the core fuzzer (test_fuzz.py) found, each reduced to a minimal input sequence and fixed:
each test states the correct behaviour and failed before its fix.

A new finding goes here as a strict xfail, with an entry in `fuzz_properties.KNOWN_FINDINGS` (and,
if long runs must explore past it, steering in test_fuzz.STEERING) until the core is fixed.
"""

import hashlib

from qora_p2p.protocol.effects import Compute, Installed, Send
from qora_p2p.protocol.limits import VIEWS_KEPT
from qora_p2p.protocol.messages import (
    NIL,
    VIEW_MAX,
    Hello,
    Precommit,
    Prevote,
    Proposal,
    Record,
    StateSnapshot,
    SyncRequest,
    SyncResponse,
    Value,
)
from qora_p2p.protocol.state import compute_round, genesis_state, snapshot_bytes
from tests.protocol.test_core import GENESIS, IDENTITIES, certified, fresh, signed_update


def certificate(
    value_id: bytes, round_number: int, view: int, voters: tuple[int, ...]
) -> tuple[tuple[int, bytes], ...]:
    return tuple(
        (voter, Precommit.create(IDENTITIES[voter], GENESIS.hash, round_number, view, value_id, voter).signature)
        for voter in voters
    )


def test_a_core_at_the_last_view_keeps_running_when_that_view_times_out():
    """A certified value the core cannot validate (it holds none of its inputs) in view VIEW_MAX:
    the core jumps there; its timers then fire without any exception escaping."""
    node = fresh(me=1)
    node.drain()
    inputs = tuple((sender, hashlib.sha256(bytes([sender])).digest()) for sender in (0, 2, 3))
    value = Value(1, node.state.last_hash, inputs, (), bytes(32), bytes(32))
    record = Record(value, VIEW_MAX, certificate(value.id(GENESIS.hash), 1, VIEW_MAX, (0, 2, 3)))
    node.receive(0, record, 1)
    node.drain()
    assert node.round.agreement.consensus.view == VIEW_MAX
    now = 1
    while now < 100_000:  # past the capped timeouts of VIEW_MAX and of the view after it
        now = max(now + 1, node.next_deadline())
        node.handle_timer(now)
        node.drain()
    assert node.round.number == 1


def test_a_value_validated_before_its_view_was_pruned_can_still_be_decided():
    """Member 2 validates value X in view 0, then VIEWS_KEPT + 6 views pass with nil votes (its
    view-0 messages are pruned); a certificate for X in the current view commits X."""
    node = fresh(me=2)
    node.drain()
    updates = [signed_update(sender, bytes([sender + 1]) * 16, node) for sender in (0, 1, 3)]
    for update in updates:
        node.receive(update.sender, update, 1)
    senders, payloads = [0, 1, 3], [update.payload for update in updates]
    result = compute_round(GENESIS, node.state, senders, payloads)
    value = Value(
        1,
        node.state.last_hash,
        tuple((update.sender, update.digest) for update in updates),
        (),
        result.model_digest,
        result.ledger_digest,
    )
    value_id = value.id(GENESIS.hash)
    node.receive(1, Proposal.create(IDENTITIES[1], GENESIS.hash, 0, -1, 1, value), 2)  # member 1 proposes view 0
    (compute,) = [effect for effect in node.drain() if isinstance(effect, Compute)]
    node.computed(
        compute.request, compute_round(GENESIS, compute.state, compute.senders, compute.payloads, compute.culprits), 3
    )
    node.drain()
    agreement = node.round.agreement
    assert agreement.results[value_id] is not None and agreement.consensus.validity[value_id]
    for view in range(VIEWS_KEPT + 6):  # the other members vote nil, view after view
        for voter in (0, 1, 3):
            node.receive(voter, Prevote.create(IDENTITIES[voter], GENESIS.hash, 1, view, NIL, voter), 4)
            node.receive(voter, Precommit.create(IDENTITIES[voter], GENESIS.hash, 1, view, NIL, voter), 4)
        node.drain()
    view = agreement.consensus.view
    assert view > VIEWS_KEPT and value_id not in agreement.results, "the value was pruned"
    node.receive(0, Record(value, view, certificate(value_id, 1, view, (0, 1, 3))), 5)
    for effect in node.drain():  # the forgotten value is validated again before it is decided
        if isinstance(effect, Compute):
            node.computed(effect.request, compute_round(GENESIS, effect.state, effect.senders, effect.payloads, effect.culprits), 6)
    node.drain()
    assert node.state.round == 1 and node.state.last_hash == value_id


def test_catch_up_persists_only_records_whose_certificates_verify():
    """Member 3, still in round 1, asks member 1, which answers rounds 1 and 2 with the state after
    round 2: round 2 genuine, round 1 its genuine value with junk signatures. Whatever the core
    installs verifies."""
    first, after_first = certified(genesis_state(GENESIS), 1)
    second, after_second = certified(after_first, 2)
    junk = Record(first.value, first.view, tuple((voter, bytes(64)) for voter, _ in first.certificate))
    node = fresh(me=3)
    node.drain()
    node.receive(1, Hello(1, 3, bytes(32)), 1)  # member 1 says it is past us: we ask it
    assert any(isinstance(effect, Send) and isinstance(effect.message, SyncRequest) for effect in node.drain())
    node.receive(1, SyncResponse((junk, second), StateSnapshot(2, *snapshot_bytes(after_second))), 2)
    keys = [member.public_key for member in GENESIS.members]
    for effect in node.drain():
        if isinstance(effect, Installed):
            for record in effect.records:
                record.verify(GENESIS.hash, keys, GENESIS.quorum)


def test_fetches_for_a_value_that_was_pruned_stop():
    """Member 3 proposes in view 2 a value naming updates nobody has; the others vote nil view
    after view. Once that value is pruned, nothing is fetched for it any more."""
    node = fresh(me=1)
    node.drain()
    inputs = tuple((sender, hashlib.sha256(b"never sent %d" % sender).digest()) for sender in (0, 2, 3))
    value = Value(1, node.state.last_hash, inputs, (), bytes(32), bytes(32))
    now = 1

    def nil_votes(view: int) -> None:
        for voter in (0, 2, 3):
            node.receive(voter, Prevote.create(IDENTITIES[voter], GENESIS.hash, 1, view, NIL, voter), now)
            node.receive(voter, Precommit.create(IDENTITIES[voter], GENESIS.hash, 1, view, NIL, voter), now)

    nil_votes(0)
    nil_votes(1)
    node.receive(3, Proposal.create(IDENTITIES[3], GENESIS.hash, 2, -1, 3, value), now)  # member 3 proposes view 2
    assert set(inputs) <= set(node.round.updates.fetching)
    for view in range(2, VIEWS_KEPT + 10):
        nil_votes(view)
        now += 600
        node.handle_timer(now)
        node.drain()
    assert value.id(GENESIS.hash) not in node.round.agreement.values, "the value was pruned"
    assert not set(inputs) & set(node.round.updates.fetching)
