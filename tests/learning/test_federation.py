"""The in-process federation learns, is reproducible, and shows robust rules holding where the
mean fails."""

import pytest

from qora_p2p.errors import AggregationError, LearningError
from qora_p2p.learning import FederationConfig, build_model, run_federation
from qora_p2p.protocol.ledger import LedgerParams


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
    """With the reputation ledger, the three scaling attackers are banned and nobody else."""
    config = FederationConfig(
        rule="centered_clipping",
        rule_params={"tau_scale": 1.0, "center": "previous"},
        byzantine=3,
        attack="scaling",
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
