"""The in-process federation learns, is reproducible, runs the protocol's own round transition,
and shows robust rules holding where the mean fails."""

import hashlib
import tomllib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from qora_p2p.errors import AggregationError, LearningError
from qora_p2p.learning import FederationConfig, build_model, federation, run_federation
from qora_p2p.learning.attacks import ATTACKS, Attack
from qora_p2p.learning.genesis_model import initial_model
from qora_p2p.protocol import state as protocol_state
from qora_p2p.protocol.genesis import dump_genesis, parse_genesis
from qora_p2p.protocol.ledger import LedgerParams
from qora_p2p.protocol.messages import Value
from qora_p2p.protocol.state import eligible_members, genesis_state


def test_fedavg_federation_learns_digits():
    """Ten honest members on Dirichlet shards pass 90% test accuracy in 15 rounds."""
    result = run_federation(FederationConfig(rounds=15))
    assert result.final_accuracy > 0.9
    assert result.records[0].accuracy < result.final_accuracy


def test_same_seed_same_model():
    """A run is a function of its configuration: same seed, same parameters bytes."""
    config = FederationConfig(rule="median", byzantine=2, attack="ipm", rounds=3, seed=11)
    assert run_federation(config).parameters.tobytes() == run_federation(config).parameters.tobytes()


@pytest.mark.parametrize(
    ("rule", "params"),
    [("median", {}), ("trimmed_mean", {"trim": 3}), ("centered_clipping", {"tau_scale": 1.0, "center": "previous"})],
)
def test_robust_rules_hold_where_fedavg_fails_under_scaling(rule, params):
    """Three attackers scaling their updates by 100 wreck fedavg; median, trimmed mean and
    centered clipping still learn."""
    def run(rule, params):
        config = FederationConfig(
            rule=rule, rule_params=params, byzantine=3, attack="scaling", attack_params={"factor": 100.0}, rounds=10, partition="iid"
        )
        return run_federation(config).final_accuracy

    assert run("fedavg", {}) < 0.5
    assert run(rule, params) > 0.85


def test_the_ledger_bans_gross_attackers_and_no_honest_member():
    """With the reputation ledger, the three Gaussian-noise attackers (outlying every round, and
    opposing about half of them) are banned and nobody else."""
    config = FederationConfig(
        rule="centered_clipping",
        rule_params={"tau_scale": 1.0, "center": "previous"},
        byzantine=3,
        attack="gaussian",
        rounds=12,
        ledger=LedgerParams(),
    )
    result = run_federation(config)
    assert set(result.records[-1].banned) == set(result.byzantine)
    assert result.final_accuracy > 0.85
    assert all(0 <= value <= 65536 for value in result.records[-1].reputation)


def test_backdoor_success_rate_is_reported():
    """A backdoor run reports the share of triggered test samples classified as the target."""
    result = run_federation(FederationConfig(byzantine=3, attack="backdoor", rounds=5))
    assert all(record.attack_success is not None for record in result.records)
    assert run_federation(FederationConfig(rounds=2)).records[-1].attack_success is None


def test_the_coordinate_clamp_stops_a_trigger_backdoor_that_clipping_lets_through():
    """The backdoor mode (README, Robustness): three colluders train a trigger into pixels honest
    digits never light. Clipping with the ledger lets it in; the same rule with ``clamp = 3`` holds
    it at the rate of a model that never saw the trigger, at no cost in clean accuracy here."""

    def federation(**extra):
        params = {"tau_scale": 1.0, "center": "previous", **extra}
        config = FederationConfig(
            rule="centered_clipping", rule_params=params, members=10, byzantine=3, attack="backdoor", alpha=0.5, rounds=15, ledger=LedgerParams(), seed=7
        )
        return run_federation(config).records[-1]

    clipped, clamped = federation(), federation(clamp=3)
    assert clipped.attack_success > 0.5
    assert clamped.attack_success < 0.1
    assert clamped.accuracy >= clipped.accuracy - 0.02


def test_a_custom_model_replaces_the_configured_one():
    """run_federation(model=...) trains the given model (here an MLP built by hand)."""
    model = build_model("mlp", 64, 10, hidden=(16,))
    result = run_federation(FederationConfig(rounds=3), model=model)
    assert result.parameters.shape == (model.layout.dimension,)


def test_invalid_configurations_fail_before_training():
    """Rules that cannot run on the input count and bad settings are reported up front."""
    with pytest.raises(AggregationError, match="krum needs"):
        run_federation(FederationConfig(rule="krum", rule_params={"f": 3}, ledger=LedgerParams(), rounds=1))
    with pytest.raises(LearningError, match="byzantine"):
        FederationConfig(byzantine=10)
    with pytest.raises(LearningError, match="'center'"):
        run_federation(FederationConfig(rule="centered_clipping", rule_params={"tau_scale": 1.0, "center": "origin"}, rounds=1))


def _replayable(monkeypatch):
    """Run the federation with `compute_round` spied on; returns the result and each round's inputs."""
    inputs = []

    def spy(genesis, state, senders, payloads, culprits=()):
        inputs.append((tuple(senders), tuple(payloads)))
        return protocol_state.compute_round(genesis, state, senders, payloads, culprits)

    monkeypatch.setattr(federation, "compute_round", spy)
    config = FederationConfig(
        members=7,
        byzantine=2,
        attack="gaussian",
        rule="centered_clipping",
        rule_params={"tau_scale": 1.0, "center": "previous"},
        ledger=LedgerParams(),
        rounds=7,
        seed=3,
    )
    return run_federation(config), inputs


def test_the_federation_is_the_protocols_round_transition(monkeypatch):
    """Replaying the federation's payloads through protocol.state.compute_round from the genesis
    state gives, round after round, its input sets, model and ledger digests, round hashes and model."""
    result, inputs = _replayable(monkeypatch)
    genesis = result.genesis
    assert parse_genesis(tomllib.loads(dump_genesis(genesis))).hash == genesis.hash
    assert len(inputs) == len(result.records)
    state = genesis_state(genesis, initial_model(genesis))
    for record, (senders, payloads) in zip(result.records, inputs, strict=True):
        assert senders == record.inputs == eligible_members(genesis, state, record.round)
        step = protocol_state.compute_round(genesis, state, senders, payloads)
        assert (step.model_digest, step.ledger_digest) == (record.model_digest, record.ledger_digest)
        digests = tuple((sender, hashlib.sha256(payload).digest()) for sender, payload in zip(senders, payloads, strict=True))
        value = Value(record.round, state.last_hash, digests, (), step.model_digest, step.ledger_digest)
        state = step.state.committed(value.id(genesis.hash))
        assert record.round_hash == state.last_hash
        assert record.banned == tuple(k for k in range(genesis.size) if k not in eligible_members(genesis, state, record.round + 1))
    assert state.model_digest() == result.state.model_digest() and state.ledger_digest() == result.state.ledger_digest()
    assert np.array_equal(result.parameters, state.model / 2.0**genesis.frac_bits)
    assert any(len(record.inputs) < genesis.size for record in result.records), "bans shrink the input set"


def test_the_genesis_is_a_function_of_the_configuration():
    """Same configuration, same genesis hash and member keys; another seed, other keys."""
    config = FederationConfig(rounds=1)
    first, again = run_federation(config).genesis, run_federation(config).genesis
    assert first.hash == again.hash
    other = run_federation(FederationConfig(rounds=1, seed=1)).genesis
    assert {member.public_key for member in first.members}.isdisjoint(member.public_key for member in other.members)


def test_attackers_plan_against_the_weighted_rule_the_protocol_runs(monkeypatch):
    """With a weighted rule, the attackers' view carries every input's reputation weight and the
    previous aggregate as the centre, exactly as compute_round aggregates them."""
    views = []

    @dataclass(frozen=True)
    class Spy(Attack):
        name: ClassVar[str] = "spy"

        def forge(self, view):
            views.append(view)
            return view.own

    monkeypatch.setitem(ATTACKS, "spy", Spy)
    states = []
    real = protocol_state.compute_round

    def spying(genesis, state, *rest):
        states.append(state)
        return real(genesis, state, *rest)

    monkeypatch.setattr(federation, "compute_round", spying)
    config = FederationConfig(
        members=7, byzantine=2, attack="spy", rule="centered_clipping", rule_params={"tau_scale": 1.0, "center": "previous"},
        ledger=LedgerParams(), rounds=3,
    )
    result = run_federation(config)
    assert result.genesis.weighted and len(views) == 3
    for view, state, record in zip(views, states, result.records, strict=True):
        honest = [k for k in record.inputs if k not in result.byzantine]
        attackers = [k for k in record.inputs if k in result.byzantine]
        weights = state.ledger.weights
        assert view.honest_weights == tuple(weights(honest, config.ledger))
        assert view.own_weights == tuple(weights(attackers, config.ledger))
        assert np.array_equal(view.rule_params["center"], state.aggregate)
        assert view.rule_arguments()["weights"] == [*view.honest_weights, *view.own_weights]


def test_an_attack_object_in_the_config_sees_rounds_members_previous_aggregates_and_reputations():
    """An Attack object passed as ``attack`` forges every round; its view names the round, the
    member of every row (honest and forged, as in the input set), the previous round's aggregate
    decoded and the reputations the round starts from."""
    views = []
    states = []

    class Spy(Attack):
        def forge(self, view):
            views.append(view)
            return -view.own

    real = protocol_state.compute_round

    def spying(genesis, state, *rest):
        states.append(state)
        return real(genesis, state, *rest)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(federation, "compute_round", spying)
        config = FederationConfig(members=7, byzantine=2, attack=Spy(), rule="median", ledger=LedgerParams(), rounds=3)
        result = run_federation(config)
    assert [view.round for view in views] == [1, 2, 3]
    for view, state, record in zip(views, states, result.records, strict=True):
        assert view.honest_members == tuple(k for k in record.inputs if k not in result.byzantine)
        assert view.attacker_members == tuple(k for k in record.inputs if k in result.byzantine)
        assert np.array_equal(view.previous, state.aggregate / 2**16)
        assert state.ledger is not None and view.reputations == tuple(standing.reputation for standing in state.ledger.standings)
    assert not views[0].previous.any() and views[1].previous.any()
    with pytest.raises(LearningError, match="constructor"):
        run_federation(FederationConfig(attack=Spy(), attack_params={"scale": 2}, byzantine=1, rounds=1))


def test_settings_the_protocol_does_not_have_are_refused():
    """A server learning rate, unweighted reputation rules and a ban capacity other than f do not
    exist in the protocol's round transition."""
    with pytest.raises(LearningError, match="server_learning_rate"):
        FederationConfig(server_learning_rate=0.5)
    with pytest.raises(LearningError, match="ban_capacity"):
        FederationConfig(ban_capacity=2)
    assert FederationConfig(ban_capacity=3).tolerated == 3
    with pytest.raises(LearningError, match="reputation-weighted"):
        run_federation(FederationConfig(rule="centered_clipping", ledger=LedgerParams(), reputation_weights=False, rounds=1))
