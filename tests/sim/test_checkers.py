"""Each simulator checker fails when its property is broken (the sweeps prove they hold; this
proves they would notice), and Byzantine members are exempt."""

import hashlib

from qora_p2p.identity import Identity
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.messages import Precommit, Record, Value
from qora_p2p.protocol.state import genesis_state
from qora_p2p.sim.checkers import Checkers

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
