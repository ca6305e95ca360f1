"""Each simulator checker fails when its property is broken (the sweeps prove they hold; this
proves they would notice), and Byzantine members are exempt."""

import hashlib
from dataclasses import replace

from qora_p2p.identity import Identity
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.ledger import Ledger, Standing
from qora_p2p.protocol.messages import Limits, Precommit, Record, Value
from qora_p2p.protocol.state import genesis_state
from qora_p2p.sim.checkers import Checkers, progress_bound_ms
from qora_p2p.sim.storage import SLOT_BYTES_MAX, StoredBytes, storage_bound

IDENTITIES = [Identity.from_seed(hashlib.sha256(f"checkers-{i}".encode()).digest()) for i in range(4)]
GENESIS = Genesis(
    "checkers",
    tuple(Member(f"m{i}", identity.public_key, "127.0.0.1", 7300 + i) for i, identity in enumerate(IDENTITIES)),
    ModelSpec("synthetic", 4),
    "median",
    {},
)
STATE = genesis_state(GENESIS)
DIGEST = bytes(32)


def record(inputs, signers=(0, 1, 2)):
    value = Value(1, STATE.last_hash, tuple((sender, DIGEST) for sender in inputs), (), DIGEST, DIGEST)
    value_id = value.id(GENESIS.hash)
    certificate = tuple((voter, Precommit.create(IDENTITIES[voter], GENESIS.hash, 1, 0, value_id, voter).signature) for voter in signers)
    return Record(value, 0, certificate)


def test_two_hashes_for_one_round_break_agreement_unless_byzantine():
    """Members 0 and 1 hold different hashes for round 1: a violation; member 3 (Byzantine) may."""
    checkers = Checkers(GENESIS, {3})
    checkers.agreement(0, 1, b"a" * 32, None)
    checkers.agreement(3, 1, b"b" * 32, None)
    assert checkers.violations == []
    checkers.agreement(1, 1, b"b" * 32, None)
    assert checkers.violations and checkers.violations[0].startswith("agreement: round 1")


def test_equal_hashes_with_different_states_break_state_equality():
    """The same round hash with different model digests is caught."""
    checkers = Checkers(GENESIS, set())
    checkers.agreement(0, 1, b"a" * 32, (b"m" * 32, b"l" * 32))
    checkers.agreement(1, 1, b"a" * 32, (b"x" * 32, b"l" * 32))
    assert checkers.violations == ["state equality: round 1: members 1 and 0 differ"]


def test_fewer_than_n_minus_f_inputs_break_validity():
    """n = 4, f = 1: a round committed with two inputs is invalid; three are enough."""
    checkers = Checkers(GENESIS, set())
    checkers.committed(0, STATE, record([0, 1, 2]), STATE)
    assert checkers.violations == []
    checkers.committed(1, STATE, record([0, 1]), STATE)
    assert "validity: round 1 committed with 2 inputs" in checkers.violations


def test_a_second_content_for_a_slot_or_a_refusing_store_is_double_signing():
    """The same content twice is fine; another content, or a store that refused, is a violation."""
    checkers = Checkers(GENESIS, set())
    checkers.signed(0, ("prevote", 1, 0), b"v", None)
    checkers.signed(0, ("prevote", 1, 0), b"v", None)
    assert checkers.violations == []
    checkers.signed(0, ("prevote", 1, 0), b"w", None)
    checkers.signed(2, ("update", 1, 0), b"u", "already signed")
    assert len(checkers.violations) == 2 and all(v.startswith("double signing") for v in checkers.violations)


def test_an_honest_member_short_of_the_rounds_breaks_liveness_only_when_nothing_else_failed():
    """Liveness names the honest laggard; a Byzantine laggard is fine; an earlier failure hides it."""
    checkers = Checkers(GENESIS, {3})
    checkers.liveness({0: 5, 1: 5, 2: 4, 3: 0}, 5)
    assert checkers.violations == ["liveness: member 2 committed 4 of 5 rounds"]
    earlier = Checkers(GENESIS, set())
    earlier.violations.append("agreement: round 1: ...")
    earlier.liveness({0: 0}, 5)
    assert earlier.violations == ["agreement: round 1: ..."]


def test_a_record_below_quorum_or_with_a_bad_signature_breaks_the_certificate_check():
    """n = 4: three signers make a quorum; two do not, and neither does a signature over another value."""
    checkers = Checkers(GENESIS, set())
    checkers.certificate(0, record([0, 1, 2]))
    assert checkers.violations == []
    checkers.certificate(0, record([0, 1, 2], signers=(0, 1)))
    assert checkers.violations and "certificate: round 1" in checkers.violations[0]
    good, other = record([0, 1, 2]), record([0, 1, 3])
    forged = Record(other.value, 0, good.certificate)
    checkers.certificate(1, forged)
    assert len(checkers.violations) == 2


def chain(length, strip=()):
    """Records of rounds 1..length, each linked to the one before and certified by members 0-2
    (rounds in ``strip`` keep no signatures)."""
    records, previous = [], STATE.last_hash
    for round_number in range(1, length + 1):
        value = Value(round_number, previous, tuple((sender, DIGEST) for sender in (0, 1, 2)), (), DIGEST, DIGEST)
        value_id = value.id(GENESIS.hash)
        signers = () if round_number in strip else (0, 1, 2)
        certificate = tuple((voter, Precommit.create(IDENTITIES[voter], GENESIS.hash, round_number, 0, value_id, voter).signature) for voter in signers)
        records.append((Record(value, 0, certificate), value_id))
        previous = value_id
    return records


def test_a_stored_chain_must_verify_and_link_wherever_the_predecessor_is_stored():
    """A linked, certified chain passes, and so does one restarting after a gap at a certified
    record (a member that caught up from far); a stripped certificate, a repeat, a broken link or
    a record stored under another hash is named."""
    checkers = Checkers(GENESIS, {3})
    checkers.stored(0, chain(3))
    checkers.stored(1, chain(4)[2:])
    checkers.stored(2, [chain(4)[0], *chain(4)[2:]])
    assert checkers.violations == []
    elsewhere = Value(2, b"y" * 32, ((0, DIGEST), (1, DIGEST), (2, DIGEST)), (), DIGEST, DIGEST)  # round 2 of another chain
    signatures = tuple((voter, Precommit.create(IDENTITIES[voter], GENESIS.hash, 2, 0, elsewhere.id(GENESIS.hash), voter).signature) for voter in (0, 1, 2))
    cases = [
        (chain(3, strip=(2,)), "certificate: round 2"),
        (chain(4, strip=(3,))[2:], "certificate: round 3"),
        ([*chain(2), chain(2)[1]], "stored chain: round 2: member 0's stored record repeats or precedes the stored round 2"),
        ([chain(2)[0], (Record(elsewhere, 0, signatures), elsewhere.id(GENESIS.hash))], "does not link to the stored round 1"),
        ([(chain(1)[0][0], b"x" * 32)], "is stored under another round hash"),
    ]
    for records, expected in cases:
        checkers = Checkers(GENESIS, {3})
        checkers.stored(0, records)
        checkers.stored(3, records)  # Byzantine: exempt
        assert len(checkers.violations) == 1 and expected in checkers.violations[0], checkers.violations


def test_a_stored_record_other_than_the_committed_one_is_named():
    """The store holds the record the member committed, not another one for that round."""
    checkers = Checkers(GENESIS, set())
    checkers.agreement(0, 1, b"c" * 32, None)
    checkers.stored(0, chain(1))
    assert checkers.violations and "differs from the record the member committed" in checkers.violations[0]


def test_stored_bytes_over_the_bound_or_a_guard_of_another_round_break_the_storage_check():
    """Each table is held to its own bound; guard rows of a finished round are a violation."""
    bound = storage_bound(GENESIS, 2, 3)
    checkers = Checkers(GENESIS, {3})
    checkers.storage(0, StoredBytes(bound.meta, bound.records, bound.state, 0, bound.signed, (3,)), 2, 3)
    assert checkers.violations == []
    checkers.storage(0, StoredBytes(bound.meta, bound.records + 1, bound.state, 0, 0), 2, 3)
    checkers.storage(1, StoredBytes(0, 0, 0, 0, 10, (2, 3)), 2, 3)
    checkers.storage(3, StoredBytes(0, bound.records * 9, 0, 0, 0, (1,)), 2, 3)  # Byzantine: exempt
    assert len(checkers.violations) == 2
    assert "bytes of records after 2 rounds" in checkers.violations[0] and "rounds [2, 3], not only round 3" in checkers.violations[1]


def test_the_storage_bound_grows_with_rounds_and_views_only():
    """Records grow by one record's bound per round, the guard by three slots per view."""
    one, two = storage_bound(GENESIS, 1, 2), storage_bound(GENESIS, 2, 2)
    assert two.records - one.records == 8 + 32 + Limits(4, 4).record_bytes_max and two.state == one.state
    assert storage_bound(GENESIS, 1, 3).signed - one.signed == 3 * SLOT_BYTES_MAX


def test_a_ledger_banning_an_honest_member_breaks_the_ban_check():
    """Banning the Byzantine member is fine; banning an honest one, on an honest member's ledger, is not."""
    assert STATE.ledger is not None
    standings = list(STATE.ledger.standings)
    standings[3] = Standing(0, 10)
    checkers = Checkers(GENESIS, {3})
    checkers.honest_bans(0, replace(STATE, ledger=Ledger(tuple(standings))))
    assert checkers.violations == []
    standings[1] = Standing(0, 0, proven=True)
    checkers.honest_bans(3, replace(STATE, ledger=Ledger(tuple(standings))))  # a Byzantine member's ledger
    checkers.honest_bans(0, replace(STATE, ledger=Ledger(tuple(standings))))
    assert checkers.violations == ["honest ban: round 0: member 0's ledger bans honest member 1 for good (evidence)"]


def test_no_progress_for_longer_than_the_bound_after_stabilisation_breaks_liveness():
    """Progress is measured from the later of the last fault and the member's previous commit."""
    checkers = Checkers(GENESIS, {3})
    checkers.stable_ms, checkers.progress_bound_ms = 1_000, 500
    checkers.progress(0, 1_400)
    checkers.progress(0, 1_800)
    checkers.progress(3, 9_000)  # Byzantine: exempt
    checkers.stalled(1_500, [0, 1])
    assert checkers.violations == []
    checkers.stalled(1_600, [0, 1])
    assert checkers.violations and "member 1 made no progress from 1000 to 1600 ms" in checkers.violations[0]
    checkers.progress(0, 2_500)
    assert "member 0 made no progress from 1800 to 2500 ms" in checkers.violations[1]


def test_the_progress_bound_covers_f_plus_two_capped_views():
    """n = 4 (f = 1): round timeout, collection, three capped views of three steps, catch-up."""
    timing = GENESIS.timing
    assert progress_bound_ms(GENESIS) == 1_000 + timing.round_timeout_ms + timing.collect_timeout_ms + 3 * 3 * timing.timeout_cap_ms + 3_000


def test_an_exception_is_recorded_with_member_time_and_traceback():
    """The checker keeps the innermost frames and says whose code raised."""
    checkers = Checkers(GENESIS, set())
    checkers.exception(2, 1500, "deliver", "Traceback (most recent call last):\n  File x\nValueError: boom")
    checkers.exception(1, 1600, "Flood.wake", "Traceback\nKeyError: 3", adversary=True)
    assert checkers.violations[0].startswith("exception: member 2 at 1500 ms, handling deliver:") and "ValueError: boom" in checkers.violations[0]
    assert checkers.violations[1].startswith("adversary exception: member 1 at 1600 ms, handling Flood.wake")
