"""Min-max, min-sum, Fang (trimmed mean, median, Krum) and the line-searched ALIE/IPM have their defining properties, and each
moves robust rules farther from the honest mean than a naive attack does."""

import numpy as np
import pytest

from qora_p2p.errors import LearningError
from qora_p2p.learning.attacks import RoundView, build_attack, line_maximise
from qora_p2p.learning.attacks.classic import distance_after_aggregation
from qora_p2p.learning.attacks.optimised import FangKrum, _largest_gamma, perturbation

RULES = [("multi_krum", {"f": 3}), ("trimmed_mean", {"trim": 3}), ("median", {})]


def view(rule="median", params=None, seed=1):
    rng = np.random.default_rng(seed)
    honest = rng.normal(0.3, 1.0, size=(7, 20))
    own = rng.normal(0.3, 1.0, size=(3, 20))
    return RoundView(honest, own, 10, rule, params or {}, 16, np.random.default_rng(2))


def naive_distances(state):
    return [distance_after_aggregation(state, build_attack(name, **params).forge(state)) for name, params in (("sign_flip", {}), ("gaussian", {"std": 1.0}), ("ipm", {}))]


def squared_distances(point, rows):
    return ((rows - point) ** 2).sum(axis=1)


def test_the_gamma_search_finds_the_largest_accepted_gamma_within_its_tolerance():
    """The paper's halving search ends within tolerance below the acceptance threshold, reaches
    up to twice gamma_init, and returns 0 when nothing is accepted."""
    assert 3.21 - 1e-5 <= _largest_gamma(lambda gamma: gamma <= 3.21, 10.0, 1e-5) <= 3.21
    assert _largest_gamma(lambda gamma: gamma <= 25.0, 10.0, 1e-5) == pytest.approx(20.0, abs=1e-4)
    assert _largest_gamma(lambda gamma: False, 10.0, 1e-5) == 0.0


@pytest.mark.parametrize("kind", ["unit", "std"])
def test_min_max_stays_within_the_honest_diameter_and_moves_robust_rules_more(kind):
    """Min-max sends mu + gamma * p with the forgery's farthest honest update no farther than the
    honest diameter, gamma as large as that allows (within the search's tolerance), and it moves
    multi-Krum, trimmed mean and median more than sign flip, Gaussian noise or IPM."""
    state = view()
    forged = build_attack("min_max", perturbation=kind).forge(state)
    mean, direction = state.honest.mean(axis=0), perturbation(state.honest, kind)
    assert np.allclose(forged, forged[0]) and forged.shape == (3, 20)
    gamma = float((forged[0] - mean) @ direction / (direction @ direction))
    assert np.allclose(forged[0], mean + gamma * direction) and gamma > 0
    diameter = max(squared_distances(row, state.honest).max() for row in state.honest)
    assert squared_distances(forged[0], state.honest).max() <= diameter
    assert squared_distances(mean + (gamma + 1e-3) * direction, state.honest).max() > diameter
    for rule, params in RULES:
        ruled = view(rule, params)
        moved = distance_after_aggregation(ruled, build_attack("min_max", perturbation=kind).forge(ruled))
        assert moved > max(naive_distances(ruled)), rule


@pytest.mark.parametrize("kind", ["unit", "std"])
def test_min_sum_keeps_its_sum_of_squared_distances_within_the_honest_largest(kind):
    """Min-sum's forgery has a sum of squared distances to the honest updates no larger than the
    largest honest one's, gamma as large as that allows; it moves the robust rules more than the
    naive attacks."""
    state = view()
    forged = build_attack("min_sum", perturbation=kind).forge(state)[0]
    mean, direction = state.honest.mean(axis=0), perturbation(state.honest, kind)
    gamma = float((forged - mean) @ direction / (direction @ direction))
    largest = max(squared_distances(row, state.honest).sum() for row in state.honest)
    assert squared_distances(forged, state.honest).sum() <= largest
    assert squared_distances(mean + (gamma + 1e-3) * direction, state.honest).sum() > largest
    for rule, params in RULES:
        ruled = view(rule, params)
        assert distance_after_aggregation(ruled, build_attack("min_sum", perturbation=kind).forge(ruled)) > max(naive_distances(ruled)), rule


def test_min_max_perturbations_are_the_papers_in_delta_terms():
    """unit = -mu/||mu||, std = +sigma (the paper's -sigma on gradients), sign = -sign(mu); an
    unknown one is refused by name."""
    honest = np.array([[1.0, -2.0, 0.0], [3.0, -2.0, 0.0]])
    assert np.allclose(perturbation(honest, "unit"), -np.array([2.0, -2.0, 0.0]) / np.sqrt(8))
    assert np.allclose(perturbation(honest, "std"), [1.0, 0.0, 0.0])
    assert np.allclose(perturbation(honest, "sign"), [-1.0, 1.0, 0.0])
    with pytest.raises(LearningError, match="'perturbation' must be one of unit, std, sign"):
        build_attack("min_max", perturbation="inverse")


def test_fang_pushes_every_coordinate_just_past_the_honest_extreme_against_the_mean():
    """Per coordinate: where the honest mean is non-negative every forged value lies in
    [min/b, min] (positive min) or [b*min, min]; where it is negative, in [max, b*max] (positive
    max) or [max, max/b]. It moves trimmed mean and median more than the naive attacks."""
    rng = np.random.default_rng(4)
    honest = rng.normal(0.0, 1.0, size=(7, 400)) + rng.choice([-3.0, 0.2, 3.0], size=400)
    state = RoundView(honest, np.zeros((3, 400)), 10, "median", {}, 16, np.random.default_rng(2))
    forged = build_attack("fang", spread=2).forge(state)
    rising = honest.mean(axis=0) >= 0
    low, high = honest.min(axis=0), honest.max(axis=0)
    up, down = forged[:, rising], forged[:, ~rising]
    assert (up <= low[rising]).all() and (down >= high[~rising]).all()
    assert (up >= np.where(low[rising] > 0, low[rising] / 2, 2 * low[rising])).all()
    assert (down <= np.where(high[~rising] > 0, 2 * high[~rising], high[~rising] / 2)).all()
    assert len({tuple(row) for row in forged}) == 3, "each attacker draws its own values"
    for rule, params in RULES[1:]:
        ruled = view(rule, params)
        assert distance_after_aggregation(ruled, build_attack("fang").forge(ruled)) > max(naive_distances(ruled)), rule
    with pytest.raises(LearningError, match="'spread' must be a number above 1"):
        build_attack("fang", spread=1)


def test_fang_krum_gets_its_crafted_update_picked_by_krum_against_the_mean():
    """Against Krum (f = 3 of 10), the first attacker sends ``mu - lam * sign(mu)`` with lam > 0,
    the others sit within epsilon of it, the aggregate is one of the forged updates, and Krum moves farther from the
    honest mean than under the naive attacks. When even the smallest lam is not picked (a rule
    that does not select), the attack stops at the threshold."""
    state = view("krum", {"f": 3})
    attack = FangKrum()
    forged = attack.forge(state)
    mean = state.honest.mean(axis=0)
    direction = np.sign(mean)
    lam = float((mean - forged[0]) @ direction / (direction @ direction))
    assert lam > 1e-4 and np.allclose(forged[0], mean - lam * direction)
    assert np.abs(forged[1:] - forged[0]).max() <= 1e-4
    assert np.abs(forged - state.aggregate(forged)).max(axis=1).min() <= 2 * 2.0**-16
    assert lam <= attack.upper_bound(state.honest, 3)
    assert distance_after_aggregation(state, forged) > max(naive_distances(state))
    averaged = view("fedavg")
    stopped = build_attack("fang_krum").forge(averaged)
    assert float((mean - stopped[0]) @ direction / (direction @ direction)) < 1e-4
    with pytest.raises(LearningError, match="'epsilon' must be a positive number"):
        build_attack("fang_krum", epsilon=0)


def test_line_maximise_expands_then_contracts_within_its_budget():
    """ByzFL's line maximisation: never more evaluations than allowed, the best point it tried,
    close to a concave objective's maximum given enough evaluations, past the first step too."""
    tried = []

    def value(x):
        return -((x - 3.7) ** 2)

    def objective(x):
        tried.append(x)
        return value(x)

    best = line_maximise(objective, 0.0, 10.0, 0.8, 40)
    assert len(tried) == 40 and best in tried and abs(best - 3.7) < 0.1
    assert max(tried, key=value) == best
    assert abs(line_maximise(lambda x: -((x - 37.0) ** 2), 0.0, 10.0, 0.8, 40) - 37.0) < 1.0
    with pytest.raises(LearningError, match="ratio in"):
        line_maximise(objective, 0.0, 10.0, 0.4, 10)


@pytest.mark.parametrize(("name", "base", "factor"), [("optimal_alie", "alie", "z"), ("optimal_ipm", "ipm", "epsilon")])
def test_optimal_alie_and_ipm_send_the_base_attack_at_the_factor_their_search_finds(name, base, factor):
    """The forgery is the base attack at the factor line_maximise returns on the rule's distance
    from mu; it moves each robust rule at least as far as the base attack's default factor and as
    the search's start."""
    for rule, params in RULES:
        state = view(rule, params)
        attack = build_attack(name)
        found = attack.factor(state)  # type: ignore[attr-defined]
        forged = attack.forge(state)
        assert np.allclose(forged, build_attack(base, **{factor: found}).forge(state))
        moved = distance_after_aggregation(state, forged)
        assert moved >= distance_after_aggregation(state, build_attack(base).forge(state)), rule
        assert moved >= distance_after_aggregation(state, build_attack(base, **{factor: 0.0}).forge(state)), rule
