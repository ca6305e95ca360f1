"""Each Byzantine behaviour produces what its definition says, on synthetic vectors."""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from qora_p2p.aggregation import aggregate
from qora_p2p.errors import ConfigError, LearningError
from qora_p2p.fixedpoint import decode, encode, to_bytes
from qora_p2p.identity import Identity
from qora_p2p.learning import FederationConfig, attacks, run_federation
from qora_p2p.learning.attacks import (
    ATTACKS,
    Attack,
    ReputationFarming,
    RoundView,
    SignFlip,
    alie_z,
    build_attack,
    register_attack,
    resolve_attack,
)
from qora_p2p.node.workload import SyntheticWorkload, WorkloadConfig
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.ledger import Ledger, LedgerParams, Standing
from qora_p2p.protocol.state import genesis_state
from qora_p2p.testnet.profile import parse_profile


def view(honest=None, own=None, rule="median", params=None, members=10):
    rng = np.random.default_rng(5)
    honest = rng.normal(1.0, 0.5, size=(7, 6)) if honest is None else honest
    own = rng.normal(1.0, 0.5, size=(3, 6)) if own is None else own
    return RoundView(honest, own, members, rule, params or {}, 16, np.random.default_rng(9))


def test_simple_model_poisoning_attacks_follow_their_definitions():
    """sign_flip = -own, scaling = k*own, zero = 0, random in range, gaussian has the right spread."""
    state = view()
    assert np.array_equal(build_attack("sign_flip").forge(state), -state.own)
    assert np.array_equal(build_attack("sign_flip", scale=2).forge(state), -2 * state.own)
    assert np.array_equal(build_attack("scaling").forge(state), 10 * state.own)
    assert not build_attack("zero").forge(state).any()
    values = build_attack("random", scale=3).forge(state)
    assert values.shape == state.own.shape and np.abs(values).max() <= 3
    big = view(own=np.zeros((3, 20000)), honest=np.zeros((7, 20000)))
    noise = build_attack("gaussian", std=2.0).forge(big)
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 2.0) < 0.05


def test_alie_uses_the_papers_z_or_a_fixed_one():
    """ALIE sends mu + z*sigma with z = Phi^-1((n - s)/n), s = floor(n/2 + 1) - b; or a given z."""
    state = view()
    assert alie_z(10, 3) == pytest.approx(NormalDist().inv_cdf(0.7))
    mean, spread = state.honest.mean(axis=0), state.honest.std(axis=0)
    forged = build_attack("alie").forge(state)
    assert np.allclose(forged, mean + alie_z(10, 3) * spread) and forged.shape == (3, 6)
    assert np.allclose(build_attack("alie", z=1.5).forge(state)[0], mean + 1.5 * spread)


def test_ipm_sends_minus_epsilon_times_the_honest_mean():
    """IPM: every attacker sends -epsilon * mu."""
    state = view()
    assert np.allclose(build_attack("ipm", epsilon=0.5).forge(state), -0.5 * state.honest.mean(axis=0))


def test_mimic_copies_the_honest_update_farthest_along_the_top_direction():
    """With honest updates spread along one axis, mimic copies the extreme one."""
    honest = np.zeros((7, 4))
    honest[:, 0] = [0.1, -0.2, 0.0, 0.3, -3.0, 0.2, 0.1]
    honest[:, 1] = 0.01 * np.arange(7)
    forged = build_attack("mimic").forge(view(honest=honest))
    assert all(np.array_equal(row, honest[4]) for row in forged)


@pytest.mark.parametrize(("name", "grid_name"), [("adaptive_alie", "z"), ("adaptive_ipm", "epsilon")])
def test_adaptive_attacks_pick_the_factor_that_moves_the_aggregate_most(name, grid_name):
    """The line search returns the candidate whose aggregate lands farthest from the honest mean."""
    state = view(rule="median")
    grid = [0.1, 1.0, 3.0]
    forged = build_attack(name, grid=grid).forge(state)
    base = "alie" if name == "adaptive_alie" else "ipm"

    def distance(factor):
        candidate = build_attack(base, **{grid_name: factor}).forge(state)
        result = aggregate("median", encode(np.concatenate([state.honest, candidate]), 16).values)
        return np.linalg.norm(decode(result.vector, 16) - state.honest.mean(axis=0))

    best = max(grid, key=distance)
    assert np.allclose(forged, build_attack(base, **{grid_name: best}).forge(state))


def test_label_flip_and_backdoor_poison_the_data():
    """label_flip maps y to C-1-y; backdoor stamps the trigger on a fraction and relabels it."""
    features = np.zeros((10, 6))
    labels = np.arange(10) % 3
    _, flipped = build_attack("label_flip").poison_data(features, labels, 3, np.random.default_rng(0))
    assert flipped.tolist() == (2 - labels).tolist()
    backdoor = build_attack("backdoor", target=1, fraction=0.5, trigger_size=2, trigger_value=0.9)
    stamped, relabelled = backdoor.poison_data(features, labels, 3, np.random.default_rng(0))
    changed = np.flatnonzero((stamped[:, -2:] == 0.9).all(axis=1))
    assert changed.size == 5 and (relabelled[changed] == 1).all()
    assert (stamped[:, :-2] == 0).all() and features.max() == 0  # input untouched


def test_every_attack_is_buildable_and_bad_parameters_are_named():
    """The registry builds each attack; unknown names and parameters raise LearningError."""
    for name in ATTACKS:
        build_attack(name)
    with pytest.raises(LearningError, match="unknown attack"):
        build_attack("teleport")
    with pytest.raises(LearningError, match="takes no parameter 'factor'"):
        build_attack("sign_flip", factor=3)
    with pytest.raises(LearningError, match="finite number"):
        build_attack("scaling", factor="big")
    with pytest.raises(LearningError, match="'fraction'"):
        build_attack("backdoor", fraction=1.5)


def test_adaptive_attacks_run_the_weighted_rule_with_the_views_weights():
    """With weights in the view, the line search aggregates honest then forged rows with those
    weights, in that order; a view weighs all its rows or none."""
    state = view(rule="fedavg")
    grid = [0.1, 1.0, 3.0]
    weighted = RoundView(state.honest, state.own, 10, "fedavg", {}, 16, state.rng, (52429,) * 7, (1, 1, 1))
    forged = build_attack("adaptive_ipm", grid=grid).forge(weighted)
    candidates = [build_attack("ipm", epsilon=epsilon).forge(weighted) for epsilon in grid]
    weights = weighted.rule_arguments()["weights"]
    assert weights == [52429] * 7 + [1, 1, 1]

    def distance(candidate):
        result = aggregate("fedavg", encode(np.concatenate([state.honest, candidate]), 16).values, weights=weights)
        return np.linalg.norm(decode(result.vector, 16) - state.honest.mean(axis=0))

    assert np.allclose(forged, max(candidates, key=distance))
    with pytest.raises(LearningError, match="one weight per"):
        RoundView(state.honest, state.own, 10, "fedavg", {}, 16, state.rng, (1,) * 6, (1, 1, 1))
    with pytest.raises(LearningError, match="or neither"):
        RoundView(state.honest, state.own, 10, "fedavg", {}, 16, state.rng, (1,) * 7, None)


def test_a_nodes_attacker_sees_the_rule_the_protocol_runs_after_the_agreed_state():
    """Workload.forge gives the attack the genesis rule with the previous aggregate as centre and,
    each held update's reputation weight from the ledger, by its sender."""
    members = tuple(Member(f"m{k}", Identity.from_seed(bytes([k + 1]) * 32).public_key, "127.0.0.1", 9200 + k) for k in range(4))
    genesis = Genesis("forge", members, ModelSpec("synthetic", 8), "centered_clipping", {"tau_scale": 1.0, "center": "previous"})
    start = genesis_state(genesis)
    ledger = Ledger(tuple(Standing(reputation) for reputation in (65536, 40000, 30000, 65536)))
    state = replace(start, round=2, aggregate=np.arange(8, dtype=np.int32), ledger=ledger)
    views = []

    class Spy(Attack):
        def forge(self, view):
            views.append(view)
            return view.own

    workload = SyntheticWorkload(genesis, 2, WorkloadConfig(attack="ipm"))
    workload.attack = Spy()
    own = np.ones(8)
    others = {k: to_bytes(encode(np.full(8, float(k)), 16).values) for k in (0, 1, 3)}
    assert genesis.ledger is not None
    workload.forge(own, others, state)
    workload.forge(own, {k: others[k] for k in (0, 3)}, state)  # not every other member's update held
    seen, partial = views
    assert seen.honest_weights == tuple(ledger.weights([0, 1, 3], genesis.ledger))
    assert partial.honest_weights == tuple(ledger.weights([0, 3], genesis.ledger)), "each held update at its sender's weight"
    assert seen.own_weights == tuple(ledger.weights([2], genesis.ledger))
    assert np.array_equal(seen.rule_params["center"], state.aggregate)
    assert seen.rule_params["tau_scale"] == genesis.fixed_rule_params()["tau_scale"]


def test_a_nodes_attacker_leaves_its_colluders_and_banned_members_out_of_the_honest_rows():
    """Colluders' (forged) payloads among the updates a node attacker holds are not honest rows:
    the honest rows are the honest senders' updates, each at its own weight, and the forged rows
    carry the coalition's weights, not copies of the forger's own; a banned sender is no row."""
    members = tuple(Member(f"m{k}", Identity.from_seed(bytes([k + 1]) * 32).public_key, "127.0.0.1", 9300 + k) for k in range(7))
    genesis = Genesis("coalition", members, ModelSpec("synthetic", 4), "fedavg", {}, ledger=LedgerParams())
    reputations = (65536, 50000, 60000, 30000, 20000, 45000, 65536)
    ledger = Ledger(tuple(Standing(reputation, banned_until=9 if k == 6 else 0) for k, reputation in enumerate(reputations)))
    state = replace(genesis_state(genesis), round=3, ledger=ledger)
    assert genesis.ledger is not None and genesis.weighted
    views = []

    class Spy(Attack):
        def forge(self, view):
            views.append(view)
            return view.own

    workload = SyntheticWorkload(genesis, 3, WorkloadConfig(attack="ipm", colluder_members=(3, 4)))
    workload.attack = Spy()
    others = {k: to_bytes(encode(np.full(4, float(k)), 16).values) for k in (0, 1, 2, 4, 5, 6)}
    workload.forge(np.full(4, 3.0), others, state)
    (seen,) = views
    assert seen.honest[:, 0].tolist() == [0.0, 1.0, 2.0, 5.0], "colluder 4 and banned member 6 are not honest rows"
    assert seen.honest_weights == tuple(ledger.weights([0, 1, 2, 5], genesis.ledger))
    assert seen.own_weights == tuple(ledger.weights([3, 4], genesis.ledger))
    assert seen.own.shape == (2, 4)


def test_registered_attacks_keep_their_option_types(monkeypatch):
    """register_attack makes a class buildable by name; its options are checked against the
    fields' declared types (ints, bools, strings and tables survive, floats take any number),
    and a name is registered to one class only."""
    monkeypatch.setattr(attacks.base, "ATTACKS", dict(ATTACKS))

    @dataclass(frozen=True)
    class Typed(Attack):
        rounds: int = 3
        loud: bool = False
        mode: str = "a"
        factor: float = 1.0
        inner: Mapping[str, Any] = field(default_factory=dict)
        grid: tuple[float, ...] = (1.0,)
        z: float | None = None

    assert register_attack("typed", Typed) is Typed and Typed.name == "typed"
    built = attacks.build_attack("typed", rounds=7, loud=True, mode="b", factor=2, inner={"k": 1}, grid=[1, 2.5], z=None)
    assert built == Typed(7, True, "b", 2.0, {"k": 1}, (1.0, 2.5), None)
    assert type(built.rounds) is int and type(built.factor) is float and built.loud is True
    for key, value, expected in [("rounds", 2.0, "an integer"), ("rounds", True, "an integer"), ("loud", 1, "true or false"), ("mode", 3, "a string"), ("factor", float("nan"), "a finite number"), ("grid", [], "a non-empty list of finite numbers"), ("inner", [1], "a table"), ("z", "x", "a finite number or none")]:
        with pytest.raises(LearningError, match=f"attack 'typed': '{key}' must be {expected}"):
            attacks.build_attack("typed", **{key: value})
    with pytest.raises(LearningError, match="already registered"):
        register_attack("typed", SignFlip)
    with pytest.raises(LearningError, match="must match"):
        register_attack("Bad Name", Typed)
    with pytest.raises(LearningError, match="not a subclass of Attack"):
        register_attack("plain", dict)  # type: ignore[arg-type]

    class Plain(Attack):  # not a dataclass: options go to the constructor
        def __init__(self, strength: int = 1) -> None:
            self.strength = strength

    register_attack("plain", Plain)
    plain = attacks.build_attack("plain", strength=4)
    assert isinstance(plain, Plain) and plain.strength == 4
    with pytest.raises(LearningError, match="attack 'plain'"):
        attacks.build_attack("plain", power=4)


def test_an_attack_object_is_used_as_given_and_its_parameters_stay_in_it():
    """resolve_attack returns an Attack object unchanged, builds a name, and refuses parameters
    given next to an object or anything that is neither."""
    flip = SignFlip(scale=3.0)
    assert resolve_attack(flip) is flip
    assert resolve_attack("scaling", {"factor": 2}) == build_attack("scaling", factor=2.0)
    with pytest.raises(LearningError, match="constructor"):
        resolve_attack(flip, {"scale": 2})
    with pytest.raises(LearningError, match="registered name or an Attack object"):
        resolve_attack(3)  # type: ignore[arg-type]


def test_a_nodes_view_carries_the_round_the_members_the_previous_aggregate_and_reputations():
    """The node's forge path builds the federation's RoundView: round r = state.round + 1, each
    row's member, the previous aggregate decoded, every member's reputation; an Attack object in
    the WorkloadConfig is used as it is."""
    members = tuple(Member(f"m{k}", Identity.from_seed(bytes([k + 1]) * 32).public_key, "127.0.0.1", 9400 + k) for k in range(4))
    genesis = Genesis("viewed", members, ModelSpec("synthetic", 4), "median", {})
    ledger = Ledger(tuple(Standing(reputation) for reputation in (65536, 40000, 30000, 65536)))
    state = replace(genesis_state(genesis), round=4, aggregate=encode(np.array([0.5, -1.0, 0.0, 2.0]), 16).values, ledger=ledger)
    views = []

    class Spy(Attack):
        reads_honest = True

        def forge(self, view):
            views.append(view)
            return view.own

    workload = SyntheticWorkload(genesis, 2, WorkloadConfig(attack=Spy(), colluders=2))
    assert workload.wants_view
    others = {k: to_bytes(encode(np.full(4, float(k)), 16).values) for k in (0, 3)}
    workload.forge(np.ones(4), others, state)
    (seen,) = views
    assert seen.round == 5 and seen.members == 4
    assert seen.honest_members == (0, 3) and seen.attacker_members == (2, 2)
    assert np.array_equal(seen.previous, [0.5, -1.0, 0.0, 2.0])
    assert seen.reputations == (65536, 40000, 30000, 65536)


def test_free_riders_send_the_previous_aggregate_or_a_copy_of_an_honest_update():
    """stale sends the previous round's aggregate (zero when the view has none), copy an honest
    update drawn at random for each attacker; neither trains on anything."""
    state = view()
    previous = np.linspace(-1.0, 1.0, 6)
    stale = build_attack("stale").forge(replace(state, previous=previous))
    assert stale.shape == (3, 6) and all(np.array_equal(row, previous) for row in stale)
    assert not build_attack("stale").forge(state).any()
    many = view(own=np.zeros((40, 6)))
    copies = build_attack("copy").forge(many)
    rows = {tuple(row) for row in many.honest}
    assert all(tuple(row) in rows for row in copies)
    assert len({tuple(row) for row in copies}) > 1, "each attacker draws its own honest update"
    assert build_attack("copy").wants_view and not build_attack("stale").wants_view


def test_norm_matched_sign_flip_sends_minus_own_at_the_median_honest_norm():
    """Every forged row points against the attacker's own update and has the honest updates'
    median norm; a zero own update stays zero."""
    own = np.random.default_rng(3).normal(0.0, 5.0, size=(3, 6))
    own[2] = 0.0
    state = view(own=own)
    forged = build_attack("norm_sign_flip").forge(state)
    median = np.median(np.linalg.norm(state.honest, axis=1))
    assert np.allclose(np.linalg.norm(forged[:2], axis=1), median)
    assert np.allclose([row @ mine / (np.linalg.norm(row) * np.linalg.norm(mine)) for row, mine in zip(forged[:2], own[:2], strict=True)], -1.0)
    assert not forged[2].any()


def test_reputation_farming_is_honest_for_its_rounds_then_runs_its_inner_attack():
    """Rounds 1..K send the attackers' own updates; from K + 1 the inner attack forges (its
    options typed as its own); a data-poisoning inner attack or a farming inner is refused;
    a node waits for others' updates only when the inner attack reads them."""
    farming = build_attack("reputation_farming", rounds=2, inner="ipm", inner_params={"epsilon": 2})
    for round_number in (0, 1, 2):
        assert np.array_equal(farming.forge(replace(view(), round=round_number)), view().own)
    attacking = replace(view(), round=3)
    assert np.allclose(farming.forge(attacking), build_attack("ipm", epsilon=2.0).forge(attacking))
    assert farming.wants_view and not build_attack("reputation_farming", inner="sign_flip").wants_view
    assert np.allclose(build_attack("reputation_farming", rounds=0, inner=SignFlip(scale=3.0)).forge(attacking), -3.0 * attacking.own)
    with pytest.raises(LearningError, match="poisons data"):
        build_attack("reputation_farming", inner="label_flip")
    with pytest.raises(LearningError, match="cannot farm itself"):
        build_attack("reputation_farming", inner="reputation_farming")
    with pytest.raises(LearningError, match="'rounds' must be an integer"):
        build_attack("reputation_farming", rounds=2.5)


def test_farming_attackers_are_indistinguishable_from_honest_members_until_they_strike():
    """A federation whose attackers farm for every round commits exactly what an honest one
    does; farming for 2 rounds, the models part from round 3."""
    honest = run_federation(FederationConfig(rounds=4, members=7))
    patient = run_federation(FederationConfig(rounds=4, members=7, byzantine=2, attack="reputation_farming", attack_params={"rounds": 4, "inner": "sign_flip"}))
    eager = run_federation(FederationConfig(rounds=4, members=7, byzantine=2, attack="reputation_farming", attack_params={"rounds": 2, "inner": "sign_flip"}))
    assert [record.model_digest for record in patient.records] == [record.model_digest for record in honest.records]
    assert [record.model_digest for record in eager.records][:2] == [record.model_digest for record in honest.records][:2]
    assert eager.records[2].model_digest != honest.records[2].model_digest


def test_a_profile_keeps_attack_options_typed():
    """A node profile's attack_params reach the attack with their TOML types: an inner attack
    named by a string, its own table of options, an integer round count."""
    document = {"attack": "reputation_farming", "attack_params": {"rounds": 5, "inner": "min_max", "inner_params": {"perturbation": "std"}}}
    profile = parse_profile(document)
    workload = SyntheticWorkload(Genesis("typed", tuple(Member(f"m{k}", Identity.from_seed(bytes([k + 1]) * 32).public_key, "127.0.0.1", 9500 + k) for k in range(4)), ModelSpec("synthetic", 4), "median", {}), 1, profile.workload)
    assert workload.attack == build_attack("reputation_farming", rounds=5, inner="min_max", inner_params={"perturbation": "std"})
    assert isinstance(workload.attack, ReputationFarming) and workload.attack.attack == build_attack("min_max", perturbation="std")
    with pytest.raises(ConfigError, match="'perturbation' must be a string, got 1"):
        parse_profile({"attack": "min_max", "attack_params": {"perturbation": 1}})
