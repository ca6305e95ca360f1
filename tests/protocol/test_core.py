"""The node core in isolation: bounded memory across view changes, the last-signed guard across
restarts, and typed handling of bad input."""

import hashlib
from dataclasses import dataclass

import pytest

from qora_p2p.errors import LocalProtocolError
from qora_p2p.identity import Identity
from qora_p2p.protocol import core as core_module
from qora_p2p.protocol import limits
from qora_p2p.protocol.consensus import Step
from qora_p2p.protocol.core import ADMISSION, NodeCore
from qora_p2p.protocol.effects import Broadcast, Compute, Event, Installed, Penalize, Send, SignedSlot, Train
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.messages import (
    MESSAGE_TYPES,
    NIL,
    Fetch,
    Hello,
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
)
from qora_p2p.protocol.state import compute_round, genesis_state, snapshot_bytes

IDENTITIES = [Identity.from_seed(hashlib.sha256(f"core-test-{i}".encode()).digest()) for i in range(4)]
GENESIS = Genesis(
    "core-test",
    tuple(Member(f"m{i}", identity.public_key, "127.0.0.1", 7000 + i) for i, identity in enumerate(IDENTITIES)),
    ModelSpec("synthetic", 4),
    "median",
    {},
)


def fresh(me=1, **kwargs):
    return NodeCore(GENESIS, IDENTITIES[me], state=genesis_state(GENESIS), now_ms=0, **kwargs)


def test_a_new_round_asks_for_training_and_the_update_is_signed_before_it_leaves():
    """Round 1 begins with Train; a submitted update produces SignedSlot strictly before Broadcast."""
    node = fresh()
    assert any(isinstance(effect, Train) and effect.round == 1 for effect in node.drain())
    node.submit_update(1, bytes(16), 10)
    effects = node.drain()
    kinds = [type(effect) for effect in effects]
    assert kinds.index(SignedSlot) < kinds.index(Broadcast)
    assert isinstance(effects[kinds.index(Broadcast)].message, Update)


def test_a_restarted_core_resends_the_same_update_and_never_signs_another():
    """Given back its signed slot and payload, a restarted core re-broadcasts the very same update
    and does not ask to train again; a different payload for that round is refused."""
    node = fresh()
    node.submit_update(1, b"\x01" * 16, 5)
    slot = next(effect for effect in node.drain() if isinstance(effect, SignedSlot))
    restarted = fresh(signed={slot.slot: slot.content}, own_payload=slot.payload)
    effects = restarted.drain()
    assert not any(isinstance(effect, Train) for effect in effects)
    resent = [effect.message for effect in effects if isinstance(effect, Broadcast) and isinstance(effect.message, Update)]
    assert len(resent) == 1 and resent[0].digest == slot.content
    restarted.submit_update(1, b"\x02" * 16, 6)
    assert not any(isinstance(effect, SignedSlot) for effect in restarted.drain())


def test_views_churning_for_long_keep_memory_bounded():
    """Three members voting nil view after view drive the core through 200 views; what it keeps
    per view stays within the window."""
    node = fresh(me=1)
    now = 0
    for view in range(200):
        for voter in (0, 2, 3):
            for kind in (Prevote, Precommit):
                vote = kind.create(IDENTITIES[voter], GENESIS.hash, 1, view, NIL, voter)
                node.receive(voter, vote, now)
        now = node.next_deadline()
        node.handle_timer(now)
        node.drain()
    current = node.round.agreement
    assert current.consensus.view >= 150
    assert len({key[1] for key in current.votes}) <= core_module.VIEWS_KEPT + 3
    assert len(current.consensus.prevotes) <= core_module.VIEWS_KEPT + 3
    assert len(current.consensus._tally) <= 4 * (core_module.VIEWS_KEPT + 3)


def test_proposals_naming_bogus_digests_stop_costing_fetches_once_pruned():
    """Every other member proposes, view after view, values naming updates nobody holds, while we
    vote in every view. Fetches for them are retried only while their view is kept, and our signed
    slots of pruned views are dropped: both tables stay bounded."""
    node = fresh(me=1)
    now = 0
    chain = node.state.last_hash
    node.submit_update(1, bytes(16), 0)
    for sender in (0, 2, 3):
        node.receive(sender, Update.create(IDENTITIES[sender], GENESIS.hash, 1, chain, sender, bytes([sender]) * 16), 0)
    signed_most = 0
    for view in range(200):
        proposer = node.round.agreement.proposer(view)
        if proposer != 1:
            inputs = tuple((sender, hashlib.sha256(f"bogus-{view}-{sender}".encode()).digest()) for sender in (0, 2, 3))
            value = Value(1, chain, inputs, (), bytes(32), bytes(32))
            node.receive(proposer, Proposal.create(IDENTITIES[proposer], GENESIS.hash, view, -1, proposer, value), now)
        for voter in (0, 2, 3):
            for kind in (Prevote, Precommit):
                node.receive(voter, kind.create(IDENTITIES[voter], GENESIS.hash, 1, view, NIL, voter), now)
        now = node.next_deadline()
        node.handle_timer(now)
        for effect in node.drain():
            if isinstance(effect, Compute):
                result = compute_round(GENESIS, effect.state, effect.senders, effect.payloads, effect.culprits)
                node.computed(effect.request, result, now)
        node.drain()
        signed_most = max(signed_most, len(node.signed))
    assert node.round.number == 1 and node.round.agreement.consensus.view >= 150
    assert len(node.round.updates.fetching) <= 3 * (core_module.VIEWS_KEPT + 3)
    assert 0 < signed_most <= 3 * (core_module.VIEWS_KEPT + 3) + 1


def test_bad_messages_are_penalised_not_raised():
    """A vote with a forged signature from a member is penalised; the core carries on."""
    node = fresh()
    vote = Prevote.create(IDENTITIES[2], GENESIS.hash, 1, 0, NIL, 0)  # member 2's key, claims voter 0
    node.receive(0, vote, 1)
    assert any(isinstance(effect, Penalize) and effect.peer == 0 for effect in node.drain())


def test_flooding_peers_are_cut_off_after_the_per_window_budget(monkeypatch):
    """Past MESSAGES_PER_PEER_PER_WINDOW_MAX in one window a peer's messages are dropped, penalised once."""
    monkeypatch.setattr(core_module, "MESSAGES_PER_PEER_PER_WINDOW_MAX", 5)
    node = fresh()
    vote = Prevote.create(IDENTITIES[0], GENESIS.hash, 1, 0, NIL, 0)
    for _ in range(20):
        node.receive(0, vote, 1)
    penalties = [effect for effect in node.drain() if isinstance(effect, Penalize)]
    assert len(penalties) == 1 and "more than 5" in penalties[0].reason


def test_a_long_stall_does_not_cut_peers_off_for_good(monkeypatch):
    """A round that never commits: once a peer spent its budget, its messages are handled again in
    the next window (before, the budget only reset at a commit, so after a long stall without quorum
    honest members ignored each other for good)."""
    monkeypatch.setattr(core_module, "MESSAGES_PER_PEER_PER_WINDOW_MAX", 5)
    node = fresh(me=1)
    node.drain()
    for view in range(6):
        node.receive(0, Prevote.create(IDENTITIES[0], GENESIS.hash, 1, view, NIL, 0), 10)
    assert (Step.PREVOTE, 5, 0) not in node.round.agreement.votes, "the sixth message is over budget"
    later = limits.BUDGET_WINDOW_MS + 10
    node.receive(0, Prevote.create(IDENTITIES[0], GENESIS.hash, 1, 5, NIL, 0), later)
    assert (Step.PREVOTE, 5, 0) in node.round.agreement.votes
    assert node.round.number == 1, "still the same round: no commit reset the budget"


def test_messages_from_ourselves_or_strangers_are_driver_bugs():
    """The driver must only pass messages from other members."""
    node = fresh(me=1)
    vote = Prevote.create(IDENTITIES[1], GENESIS.hash, 1, 0, NIL, 1)
    with pytest.raises(LocalProtocolError):
        node.receive(1, vote, 0)
    with pytest.raises(LocalProtocolError):
        node.receive(9, vote, 0)


@dataclass(frozen=True)
class Stray(Message):
    """A message type no codec produces (as a new type would be, before the core handles it)."""

    round: int = 1


def test_a_message_type_without_a_handler_is_a_local_error_not_the_peers_fault():
    """A type the admission table does not know is a driver bug: it raises LocalProtocolError and
    charges nothing to the peer that sent it."""
    node = fresh()
    node.drain()
    with pytest.raises(LocalProtocolError, match="no handler for message type Stray"):
        node.receive(0, Stray(), 1)
    assert not any(isinstance(effect, Penalize) for effect in node.drain())


def test_every_decodable_message_type_is_admitted():
    """The admission table covers exactly the codec's message types."""
    assert set(ADMISSION) == set(MESSAGE_TYPES)


def signed_update(sender: int, payload: bytes, node: NodeCore) -> Update:
    return Update.create(IDENTITIES[sender], GENESIS.hash, 1, node.state.last_hash, sender, payload)


def test_a_signed_update_the_decoder_refuses_is_the_senders_fault_at_admission():
    """int32 -2**31 (which encode never produces) in a validly signed update: the sender is
    penalised and the update is never held, so no value can list it (before, every member that
    validated such a value crashed in compute_round)."""
    node = fresh(me=2)
    node.drain()
    refused = (-(2**31)).to_bytes(4, "little", signed=True) + bytes(12)
    node.receive(0, signed_update(0, refused, node), 1)
    effects = node.drain()
    assert any(isinstance(effect, Penalize) and effect.peer == 0 and "-2**31" in effect.reason for effect in effects)
    assert 0 not in node.round.updates.held
    node.receive(1, signed_update(1, bytes(16), node), 2)
    assert 1 in node.round.updates.held, "a decodable update is still admitted"


def test_a_value_the_round_transition_refuses_is_invalid_not_a_crash():
    """When compute_round refuses a proposed value's inputs, the driver reports it and the core
    treats the value as invalid: an invalid_value event and a nil prevote."""
    node = fresh(me=2)
    node.drain()
    updates = [signed_update(sender, bytes([sender]) * 16, node) for sender in (0, 1, 3)]
    for update in updates:
        node.receive(update.sender, update, 1)
    value = Value(1, node.state.last_hash, tuple((update.sender, update.digest) for update in updates), (), bytes(32), bytes(32))
    node.receive(1, Proposal.create(IDENTITIES[1], GENESIS.hash, 0, -1, 1, value), 2)  # member 1 proposes view 0 of round 1
    (compute,) = [effect for effect in node.drain() if isinstance(effect, Compute)]
    node.compute_failed(compute.request, "refused", 3)
    effects = node.drain()
    assert any(isinstance(effect, Event) and effect.kind == "invalid_value" and "refused" in effect.fields["reason"] for effect in effects)
    prevotes = [effect.message for effect in effects if isinstance(effect, Broadcast) and isinstance(effect.message, Prevote)]
    assert [vote.value_id for vote in prevotes] == [NIL]


def certified(previous, round_number, payload_byte=0):
    """A round on top of ``previous``, its record certified by members 0-2, and the state after it."""
    payloads = [bytes([payload_byte + sender]) * 16 for sender in (0, 1, 2)]
    result = compute_round(GENESIS, previous, [0, 1, 2], payloads)
    inputs = tuple((sender, hashlib.sha256(payload).digest()) for sender, payload in zip((0, 1, 2), payloads, strict=True))
    value = Value(round_number, previous.last_hash, inputs, (), result.model_digest, result.ledger_digest)
    value_id = value.id(GENESIS.hash)
    certificate = tuple((voter, Precommit.create(IDENTITIES[voter], GENESIS.hash, round_number, 0, value_id, voter).signature) for voter in (0, 1, 2))
    return Record(value, 0, certificate), result.state.committed(value_id)


def test_catch_up_reads_only_asked_for_linked_history():
    """Forged history through catch-up is refused: an unsolicited response is ignored; a response
    whose earlier record does not link to the certified last one is penalised and installs nothing;
    the genuine chain, asked for, installs."""
    first, after_first = certified(genesis_state(GENESIS), 1)
    second, after_second = certified(after_first, 2)
    forged_first, _ = certified(genesis_state(GENESIS), 1, payload_byte=9)
    snapshot = StateSnapshot(2, *snapshot_bytes(after_second))
    node = fresh(me=3)
    node.drain()
    node.receive(1, SyncResponse((first, second), snapshot), 1)
    assert not any(isinstance(effect, Installed) for effect in node.drain()), "nobody asked for it"
    node.receive(1, Hello(1, 3, bytes(32)), 2)  # peer 1 says it is past us: we ask it
    assert any(isinstance(effect, Send) and isinstance(effect.message, SyncRequest) for effect in node.drain())
    node.receive(1, SyncResponse((forged_first, second), snapshot), 3)
    effects = node.drain()
    assert not any(isinstance(effect, Installed) for effect in effects)
    assert any(isinstance(effect, Penalize) and "does not link" in effect.reason for effect in effects)
    node.receive(1, Hello(1, 3, bytes(32)), 2_000)
    node.drain()
    node.receive(1, SyncResponse((first, second), snapshot), 2_001)
    (installed,) = [effect for effect in node.drain() if isinstance(effect, Installed)]
    assert [record.value.round for record in installed.records] == [1, 2] and installed.state.round == 2


def test_one_member_cannot_fill_the_next_rounds_buffer():
    """A member flooding next-round updates and votes gets at most its per-peer share buffered
    (two updates, 64 messages), and another member's next-round message still finds room."""
    node = fresh(me=1)
    node.drain()
    chain = bytes(32)
    for index in range(3000):
        node.receive(0, Update.create(IDENTITIES[0], GENESIS.hash, 2, chain, 0, index.to_bytes(16, "little")), 1)
        node.receive(0, Prevote.create(IDENTITIES[0], GENESIS.hash, 2, index, NIL, 0), 1)
    from_flooder = [message for peer, message in node.future if peer == 0]
    assert len(from_flooder) == limits.FUTURE_MESSAGES_PER_PEER_MAX
    assert sum(isinstance(message, Update) for message in from_flooder) == limits.FUTURE_UPDATES_PER_PEER_MAX
    honest = Update.create(IDENTITIES[2], GENESIS.hash, 2, chain, 2, bytes(16))
    node.receive(2, honest, 2)
    assert (2, honest) in node.future


def test_a_member_that_claims_to_be_ahead_and_never_answers_cannot_hold_catch_up_off():
    """Peer 0 keeps saying it is ahead and never answers; once our request to it is overdue, the
    next request goes to peer 2, which also said it is ahead."""
    node = fresh(me=3)
    node.drain()

    def asked(effects):
        return [effect.peer for effect in effects if isinstance(effect, Send) and isinstance(effect.message, SyncRequest)]

    node.receive(2, Hello(1, 4, bytes(32)), 1)
    assert asked(node.drain()) == [2]
    node.receive(2, SyncResponse((), None), 2)  # peer 2 answers (with nothing useful)
    node.receive(0, Hello(1, 9, bytes(32)), 1_500)
    assert asked(node.drain()) == [0]
    for now in (3_000, 4_500, 6_000):
        node.receive(0, Hello(1, 9, bytes(32)), now)
        assert asked(node.drain()) == [2], "peer 0 left our request unanswered"
        node.receive(2, SyncResponse((), None), now + 1)


def chain_of(rounds):
    """``rounds`` certified records on top of genesis, and the state after each."""
    records, states = [], [genesis_state(GENESIS)]
    for number in range(1, rounds + 1):
        record, state = certified(states[-1], number, payload_byte=number % 200)
        records.append(record)
        states.append(state)
    return records, states


@pytest.mark.parametrize("behind", [70, 200])
def test_a_member_catches_up_from_any_distance_in_one_response(behind):
    """A member ``behind`` rounds back (more than one response's records, fewer than the server
    keeps) gets the server's newest records and the state after them, and installs them."""
    records, states = chain_of(behind)
    server = NodeCore(GENESIS, IDENTITIES[0], state=states[-1], now_ms=0, records=records)
    server.drain()
    server.receive(3, SyncRequest(1, 64, True), 1)
    (response,) = [effect.message for effect in server.drain() if isinstance(effect, Send)]
    assert isinstance(response, SyncResponse)
    assert response.state is not None and response.state.round == behind
    assert response.records[-1].value.round == behind
    node = fresh(me=3)
    node.drain()
    node.receive(0, Hello(1, behind + 1, bytes(32)), 2)
    node.drain()
    node.receive(0, response, 3)
    (installed,) = [effect for effect in node.drain() if isinstance(effect, Installed)]
    assert installed.state.round == behind and node.round.number == behind + 1


def test_small_requests_cannot_be_amplified_past_the_served_bytes_budget():
    """A peer repeating sync requests and duplicate-laden fetches gets at most its window's
    served-bytes budget; the next window serves it again."""
    records, states = chain_of(3)
    server = NodeCore(GENESIS, IDENTITIES[0], state=states[-1], now_ms=0, records=records)
    server.drain()

    def served_bytes(effects):
        return sum(len(effect.message.encode()) for effect in effects if isinstance(effect, Send))

    for _ in range(2000):
        server.receive(3, SyncRequest(1, 64, True), 5)
    first_window = server.drain()
    assert 0 < served_bytes(first_window) <= server.limits.served_bytes_per_window
    assert len([effect for effect in first_window if isinstance(effect, Send)]) < 2000
    server.receive(3, SyncRequest(1, 64, True), 5 + limits.BUDGET_WINDOW_MS)
    assert served_bytes(server.drain()) > 0, "a new window serves the peer again"
    round_number = server.round.number
    update = Update.create(IDENTITIES[1], GENESIS.hash, round_number, states[-1].last_hash, 1, bytes(16))
    server.receive(1, update, 6 + limits.BUDGET_WINDOW_MS)
    server.drain()
    server.receive(3, Fetch(round_number, ((1, NIL),) * 1024), 7 + limits.BUDGET_WINDOW_MS)
    assert [effect.message for effect in server.drain() if isinstance(effect, Send)] == [update], "one copy per fetch"
