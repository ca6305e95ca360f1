"""Local configuration a node reads: fault files, node profiles, workloads. Bad input is a
ConfigError that says what is wrong, never a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qora_p2p.errors import ConfigError
from qora_p2p.identity import Identity
from qora_p2p.node.workload import SyntheticWorkload, WorkloadConfig, build_workload
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.state import genesis_state
from qora_p2p.sim import SimConfig, Simulation
from qora_p2p.testnet.faults import LinkFaults, read_fault_file
from qora_p2p.testnet.profile import load_profile, parse_profile

ROOT = Path(__file__).resolve().parents[2]


def _genesis(model: ModelSpec) -> Genesis:
    keys = [Identity.from_seed(bytes([7, index]) * 16).public_key for index in range(4)]
    return Genesis("local-config", tuple(Member(f"m{i}", key, "127.0.0.1", 9100 + i) for i, key in enumerate(keys)), model, "median", {})


def test_fault_file_round_trip_and_errors(tmp_path):
    """A valid fault file gives its LinkFaults; every kind of bad content is a ConfigError."""
    path = tmp_path / "faults.json"
    path.write_text('{"blocked": [1, 3], "delay_ms": 50, "drop": 0.1}')
    assert read_fault_file(path, 4) == LinkFaults(frozenset({1, 3}), 50, 0.1)
    path.write_text("")
    assert read_fault_file(path, 4) == LinkFaults()
    for content, problem in [
        ("{not json", "fault file"),
        ('{"blocked": [4]}', "member indices"),
        ('{"blocked": "all"}', "member indices"),
        ('{"delay_ms": 20000}', "delay_ms"),
        ('{"drop": 2}', "drop"),
        ('{"drop": true}', "drop"),
        ('{"colour": 1}', "unknown key"),
        ("[1, 2]", "JSON object"),
    ]:
        path.write_text(content)
        with pytest.raises(ConfigError, match=problem):
            read_fault_file(path, 4)


def test_every_shipped_profile_loads_and_bad_profiles_name_the_key(tmp_path):
    """nodes/*.toml all validate; unknown keys, attacks, behaviours and bad types are named."""
    shipped = sorted((ROOT / "nodes").glob("*.toml"))
    assert len(shipped) >= 15
    byzantine = [load_profile(path).byzantine for path in shipped]
    assert byzantine.count(False) == 1  # honest.toml
    bad_profiles: list[tuple[dict[str, Any], str]] = [
        ({"attack": "teleport"}, "attack 'teleport'"),
        ({"behaviour": "teleport"}, "behaviour 'teleport'"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"training": {"epochs": -1}}, "epochs"),
        ({"training": {"steps": 0}}, "steps"),
        ({"training": {"speed": 1}}, "training.speed"),
        ({"colluders": "three"}, "colluders"),
        ({"attack": "alie", "attack_params": {"z": "big"}}, "'z'"),
    ]
    for document, problem in bad_profiles:
        with pytest.raises(ConfigError, match=problem):
            parse_profile(document, "p.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("attack = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_profile(broken)


def test_learning_workload_checks_the_dataset_against_the_genesis_model():
    """A dataset whose shape does not fit the genesis model is refused with both shapes named."""
    genesis = _genesis(ModelSpec("logistic", 31 * 2, 0, 30, 2))
    with pytest.raises(ConfigError, match="64 features and 10 classes"):
        build_workload(genesis, 0, WorkloadConfig(dataset="digits"))


def test_a_backdoor_attacker_scores_its_trigger_and_an_honest_member_does_not():
    """A backdoor member reports the share of triggered test samples the agreed model sends to its
    target (the scenario report's attack success); an honest member reports none."""
    genesis = _genesis(ModelSpec("logistic", 65 * 10, 0, 64, 10))
    attacker = build_workload(genesis, 1, WorkloadConfig(dataset="digits", attack="backdoor", attack_params={"target": 3}))
    assert build_workload(genesis, 0, WorkloadConfig(dataset="digits")).attack_success(np.zeros(650, dtype=np.int64)) is None
    rows = np.zeros((65, 10), dtype=np.int64)  # (features + bias) x classes, as the logistic model lays them out
    rows[-1, 3] = 1 << genesis.frac_bits  # every sample's bias favours class 3: the trigger "always works"
    assert attacker.attack_success(rows.reshape(-1)) == 1.0
    rows[-1, 3], rows[-1, 5] = 0, 1 << genesis.frac_bits  # now everything is class 5: never the target
    assert attacker.attack_success(rows.reshape(-1)) == 0.0


def test_synthetic_workload_matches_the_simulator_and_attacks_forge():
    """The node's synthetic updates are the simulator's; a sign-flip member sends minus its update."""
    config = SimConfig(nodes=4, dimension=32, seed=5)
    simulation = Simulation(config)
    genesis = simulation.genesis
    honest = SyntheticWorkload(genesis, 2, WorkloadConfig())
    update = honest.train(3, np.zeros(32, dtype=np.int64))
    assert honest.forge(update, {}, genesis_state(genesis)) == simulation._payload(2, 3, None)
    flipping = SyntheticWorkload(genesis, 2, WorkloadConfig(attack="sign_flip"))
    assert flipping.forge(update, {}, genesis_state(genesis)) == simulation._payload(2, 3, "sign_flip")
