"""The reputation ledger: its rules, its bounds, its determinism."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qora_p2p.errors import ConfigError, LocalProtocolError
from qora_p2p.protocol.ledger import (
    ALIGNED,
    NO_DIRECTION,
    ONE,
    OPPOSING,
    Ledger,
    LedgerParams,
    Observation,
    apply_round,
)

PARAMS = LedgerParams()


def conforming(members, deviation=100):
    return [Observation(member, deviation, ALIGNED) for member in members]


def test_only_outlying_and_opposing_together_cost_reputation():
    """Within 12x the median deviation and aligned earns the reward; outlying and opposing together
    cost the penalty; outlying alone costs the outlier penalty, opposing alone nothing (by default,
    each settable); no direction (round 1, a
    zero update, the previous aggregate resent) earns nothing; an absent member keeps its
    reputation (no absence penalty by default)."""
    ledger = Ledger.genesis(8, PARAMS)
    observations = [
        *conforming([0, 1, 2]),
        Observation(3, 1201, ALIGNED),
        Observation(4, 100, OPPOSING),
        Observation(5, 1201, OPPOSING),
        Observation(6, 100, NO_DIRECTION),
    ]
    after, effects = apply_round(ledger, PARAMS, 1, observations, ban_capacity=1)
    reputation = [standing.reputation for standing in after.standings]
    start = PARAMS.initial
    assert reputation == [start + PARAMS.reward] * 3 + [start - PARAMS.outlier_penalty, start, start - PARAMS.penalty, start, start]
    strict = LedgerParams(outlier_penalty=1000, opposing_penalty=2000)
    after, _ = apply_round(ledger, strict, 1, observations, ban_capacity=1)
    assert [standing.reputation for standing in after.standings][3:7] == [start - 1000, start - 2000, start - strict.penalty, start]
    assert effects.banned == ()


def test_the_outlier_line_is_twelve_medians():
    """12 medians exactly is not outlying; one unit more is (with opposing, that costs the penalty)."""
    ledger = Ledger.genesis(4, PARAMS)
    base = [*conforming([0, 1, 2])]
    on_line, _ = apply_round(ledger, PARAMS, 1, [*base, Observation(3, 1200, OPPOSING)], ban_capacity=1)
    past_line, _ = apply_round(ledger, PARAMS, 1, [*base, Observation(3, 1201, OPPOSING)], ban_capacity=1)
    assert on_line.standings[3].reputation == PARAMS.initial - PARAMS.opposing_penalty
    assert past_line.standings[3].reputation == PARAMS.initial - PARAMS.penalty


def test_free_riders_do_not_lower_the_outlier_line():
    """Updates with no direction (zeros, the previous aggregate resent) are left out of the median:
    four free riders next to the aggregate do not make an honest member 12 medians away."""
    ledger = Ledger.genesis(8, PARAMS)
    honest = [*conforming([0, 1, 2]), Observation(3, 1000, OPPOSING)]
    riders = [Observation(member, 1, NO_DIRECTION) for member in (4, 5, 6, 7)]
    after, _ = apply_round(ledger, PARAMS, 2, [*honest, *riders], ban_capacity=2)
    assert after.standings[3].reputation == PARAMS.initial - PARAMS.opposing_penalty
    with_directions = [Observation(member, 1, ALIGNED) for member in (4, 5, 6, 7)]
    after, _ = apply_round(ledger, PARAMS, 2, [*honest, *with_directions], ban_capacity=2)
    assert after.standings[3].reputation == PARAMS.initial - PARAMS.penalty


def test_outlying_is_relative_to_the_rounds_median():
    """Scaling every deviation by the same factor changes nothing: the test is relative."""
    ledger = Ledger.genesis(4, PARAMS)
    small = [Observation(0, 10, OPPOSING), Observation(1, 12, ALIGNED), Observation(2, 11, OPPOSING), Observation(3, 140, OPPOSING)]
    large = [Observation(o.member, 1000 * o.deviation, o.direction) for o in small]
    assert apply_round(ledger, PARAMS, 1, small, ban_capacity=1)[0] == apply_round(ledger, PARAMS, 1, large, ban_capacity=1)[0]


def test_a_persistent_attacker_is_banned_then_readmitted():
    """Penalised every round, a member falls below ban_below, sits out ban_rounds rounds, and comes
    back with the initial reputation."""
    params = LedgerParams(ban_rounds=3)
    ledger = Ledger.genesis(4, params)
    round_number = 0
    while 3 in ledger.eligible(round_number + 1):
        round_number += 1
        ledger, effects = apply_round(ledger, params, round_number, [*conforming([0, 1, 2]), Observation(3, 10_000, OPPOSING)], ban_capacity=1)
    banned_at = round_number
    assert effects.banned == (3,) and banned_at == 3  # 32768 - 3 * 6554 = 13106 < ban_below 13107
    for round_number in range(banned_at + 1, banned_at + 4):
        assert 3 not in ledger.eligible(round_number)
        ledger, effects = apply_round(ledger, params, round_number, conforming([0, 1, 2]), ban_capacity=1)
    assert effects.readmitted == (3,)
    assert 3 in ledger.eligible(banned_at + 4)
    assert ledger.standings[3].reputation == params.initial


def test_bans_never_exceed_the_capacity_and_take_the_worst_first():
    """With capacity 1, only the lowest reputation is banned; ties go to the lower member index."""
    ledger = Ledger(tuple(Ledger.genesis(4, PARAMS).standings[i].__class__(r) for i, r in enumerate([100, 50, 50, ONE])))
    after, effects = apply_round(ledger, PARAMS, 1, conforming([3]), ban_capacity=1)
    assert effects.banned == (1,)
    assert after.eligible(2) == (0, 2, 3)


def test_evidence_bans_for_good_even_past_capacity():
    """A proven equivocator is banned permanently, whatever the capacity and its reputation."""
    ledger = Ledger.genesis(4, PARAMS)
    after, effects = apply_round(ledger, PARAMS, 1, conforming([0, 1, 2, 3]), evidence=[2], ban_capacity=0)
    assert effects.proven == (2,) and after.standings[2].proven
    assert 2 not in after.eligible(10**6)


def test_weights_are_the_capped_cube_of_reputation():
    """w = max(1, min(r^3, cap)) in Q16: 1.0 gives the cap, 0.5 gives 1/8, 0 gives 1."""
    standings = Ledger.genesis(3, PARAMS).standings[0].__class__
    ledger = Ledger((standings(ONE), standings(ONE // 2), standings(0)))
    assert ledger.weights([0, 1, 2], PARAMS) == [PARAMS.weight_cap, ONE // 8, 1]


def test_digest_commits_to_every_field():
    """The digest changes with any standing and is stable for equal ledgers."""
    ledger = Ledger.genesis(3, PARAMS)
    assert ledger.digest() == Ledger.genesis(3, PARAMS).digest()
    after, _ = apply_round(ledger, PARAMS, 1, conforming([0]), ban_capacity=1)
    assert after.digest() != ledger.digest()


@pytest.mark.parametrize(
    "observations",
    [
        [Observation(0, 1, ALIGNED), Observation(0, 1, ALIGNED)],
        [Observation(7, 1, ALIGNED)],
        [Observation(0, -1, ALIGNED)],
        [Observation(0, 1, 2)],
        [Observation(0, 1, True)],
    ],
)
def test_impossible_observations_are_local_errors(observations):
    """Repeated, out-of-range or negative observations, or a direction other than -1, 0 or 1, are
    bugs in the caller."""
    with pytest.raises(LocalProtocolError):
        apply_round(Ledger.genesis(3, PARAMS), PARAMS, 1, observations, ban_capacity=1)


def test_banned_members_cannot_be_observed():
    """Including a banned member is a protocol bug, reported as such."""
    ledger, _ = apply_round(Ledger.genesis(3, PARAMS), PARAMS, 1, conforming([0]), evidence=[1], ban_capacity=1)
    with pytest.raises(LocalProtocolError, match="banned"):
        apply_round(ledger, PARAMS, 2, conforming([1]), ban_capacity=1)


@pytest.mark.parametrize(
    "settings", [{"reward": -1}, {"initial": ONE + 1}, {"outlier_ratio": ONE - 1}, {"ban_rounds": 0}, {"weight_cap": 0}]
)
def test_bad_parameters_are_config_errors(settings):
    """Out-of-range ledger parameters name themselves."""
    with pytest.raises(ConfigError):
        LedgerParams(**settings)


@given(
    st.lists(st.tuples(st.integers(0, 10**9), st.sampled_from([OPPOSING, NO_DIRECTION, ALIGNED])), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
    st.integers(0, 4),
    st.lists(st.integers(0, 11), max_size=3),
)
def test_order_independent_and_bounded(entries, random, capacity, evidence):
    """The result ignores observation order; reputation stays in [0, ONE]; bans respect capacity
    (proven bans aside)."""
    count = len(entries)
    observations = [Observation(member, deviation, direction) for member, (deviation, direction) in enumerate(entries)]
    evidence = [member for member in evidence if member < count]
    ledger = Ledger.genesis(count, PARAMS)
    for round_number in range(1, 6):
        eligible = set(ledger.eligible(round_number))
        present = [o for o in observations if o.member in eligible]
        shuffled = present[:]
        random.shuffle(shuffled)
        after, _effects = apply_round(ledger, PARAMS, round_number, present, evidence, ban_capacity=capacity)
        again, _ = apply_round(ledger, PARAMS, round_number, shuffled, evidence, ban_capacity=capacity)
        assert after == again and after.digest() == again.digest()
        assert all(0 <= standing.reputation <= ONE for standing in after.standings)
        reputation_bans = sum(1 for s in after.standings if not s.proven and s.banned_until >= round_number + 1)
        assert reputation_bans <= capacity
        ledger = after
