"""Scenario files: every shipped one loads to the genesis it had; invalid ones fail with the field named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qora_p2p.cli.node import _profile, run_parser
from qora_p2p.errors import ConfigError
from qora_p2p.identity import Identity
from qora_p2p.protocol.genesis import Member, dump_genesis, genesis_from_fragment, load_genesis
from qora_p2p.protocol.ledger import ONE
from qora_p2p.testnet.scenario import _node_args, assign_roles, coalitions, load_scenario, parse_scenario, with_genesis

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.toml"))
BASE: dict[str, Any] = {"name": "t", "network": {"nodes": 4}, "genesis": {"model": {"kind": "synthetic", "dimension": 10}}}
MEMBERS = tuple(Member(f"node-{index:02d}", Identity.from_seed(bytes([index + 1]) * 32).public_key, "127.0.0.1", 7000 + index) for index in range(10))
# The genesis hash of every shipped scenario with MEMBERS, recorded from the scenario format that
# spelled the genesis differently (model = "logistic", rule_params = {...}, timing = {...}):
# the migration to peers.toml names kept every value.
SHIPPED_GENESIS_HASHES = {
    "attack-alie": "0781f7c812132102043436bb920581025da58dada5fc8f2717e153abfcec9d23",
    "attack-backdoor": "2f6742f4d4f9b9fb3a58620d12c890d60faaa42f3182e8e0c8d4ad9a503e9d57",
    "attack-gaussian": "20ff39b82d53df15e85941c549fce6cdea61ca087f4008459f7cf7fb22634475",
    "attack-ipm": "4e4e22ef5fd3b0ddab83526cf31ee3170d13dead316951b8c34302c45bea74ad",
    "attack-label-flip": "a912e75128c6f4b33d8c3ff15748dec5f9cef3ce22dd1978b69ca5fb774f9d36",
    "attack-mimic": "441b6371db8c76d1ffcfaac86346cead3951c9a5e713d4870d00b5dd42b5cfb0",
    "attack-scaling": "a51ba0e337c87d83f9a7d9a1401c223a42609328bff0cc66fff04db2e8c17a7b",
    "attack-sign-flip": "bf346f4df85441460017ca801cafb561171166ab06abdea1a6e764758a83e2f5",
    "backdoor-mode": "3549d617b7a2953e074605e5a89c8d4bdb42420278883a4a5a387eab49e93c74",
    "crash-restart": "b4c7789dd5348467f4051dc0ada4bc9726d6bff16619788a82a4597f018d4b8a",
    "equivocation": "96bc70f1a407c874d0537e5a0678af5831dd14f5f8a3f2c1c89b25d08856d823",
    "late-join": "521b15eeba11a28bd141f3de1016b043b516665d39aa7510630f26e7a4328671",
    "no-attack": "f1df1b1ba583971f93c2d31ded396faae6e4766f7df58d69e9a7ba900f36e7e6",
    "packet-faults": "98b3a107703c8ddd929cd40c24e6c20484cb40ae86ef46db0cbf2b018cdeb9d8",  # new with packet-level networks (no old spelling)
    "partition-heal": "4cf59d27c84aabddbe1693a562b768817be325e275c65f6bda703efd05030c78",
    "quickstart": "389c3923598396817d853f06e4169dca220e5468026326f7eea4b242eb0addee",
}


def test_every_shipped_scenario_loads_and_names_known_profiles():
    """All shipped scenarios validate, resolve their profiles, and leave an honest majority."""
    assert len(SHIPPED) >= 10
    for path in SHIPPED:
        scenario = load_scenario(path)
        assert scenario.byzantine_count <= (scenario.nodes - 1) // 3, path
        assert set(scenario.profiles) == {profile for profile, _ in scenario.byzantine}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"network": {"nodes": 0}}, "network.nodes"),
        ({"network": {"nodes": 4, "extra": 1}}, "network.extra"),
        ({"rounds": "ten"}, "rounds"),
        ({"genesis": {"model": {"kind": "transformer"}}}, "genesis.model.kind: must be one of"),
        ({"genesis": {"model": "logistic"}}, "genesis.model: must be a table"),
        ({"genesis": {"model": {"kind": "synthetic"}, "rule_params": {"f": 1}}}, "genesis.rule_params: unknown key"),
        ({"genesis": {"model": {"kind": "synthetic", "dimension": 10}, "timing": {"propose_timeout_ms": -1}}}, "genesis.timing.propose_timeout_ms"),
        ({"genesis": {"reputation": {"opposing_penalty": 2}}}, r"genesis.reputation.opposing_penalty: must be in 0.0..1.0, got 2"),
        ({"genesis": {"members": []}}, "genesis.members: is filled in"),
        ({"genesis": {"model": {"features": 30}}}, "genesis.model.features: digits has 64 features"),
        ({"faults": [{"at_round": 2, "action": "explode", "nodes": [1]}]}, "faults[0].action"),
        ({"faults": [{"at_round": 2, "action": "kill", "nodes": [9]}]}, "faults[0].nodes"),
        ({"faults": [{"action": "kill", "nodes": [1]}]}, "faults[0].at_round"),
        ({"faults": [{"at_s": 1, "action": "partition", "groups": [[0, 1], [1, 2]]}]}, "faults[0].groups"),
        ({"byzantine": [{"profile": "no_such_profile", "count": 1}]}, "no_such_profile"),
        ({"byzantine": [{"profile": "sign_flip", "count": 4}]}, "byzantine"),
        ({"workload": {"epochs": 2, "colour": "red"}}, "workload.colour"),
    ],
)
def test_invalid_scenarios_name_the_field(change, field):
    """Each mistake is a ConfigError whose message starts from the field at fault."""
    document = {**BASE, **change}
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]").replace("..", r"\.\.")):
        parse_scenario(document, ROOT / "scenarios" / "test.toml")


def test_roles_follow_the_seed():
    """Byzantine placement is a function of the seed: same seed, same members; counts respected."""
    document = {**BASE, "network": {"nodes": 10}, "seed": 3, "byzantine": [{"profile": "sign_flip", "count": 2}, {"profile": "silent", "count": 1}]}
    scenario = parse_scenario(document, ROOT / "scenarios" / "test.toml")
    roles = assign_roles(scenario)
    assert roles == assign_roles(scenario)
    assert sorted(roles.values()).count("sign_flip") == 2 and sorted(roles.values()).count("silent") == 1
    placements = {tuple(sorted(assign_roles(parse_scenario({**document, "seed": seed}, ROOT / "scenarios" / "test.toml")).items())) for seed in range(5)}
    assert len(placements) > 1  # the seed moves the attackers


def test_learning_attackers_are_told_their_coalition():
    """Members running the same attacking profile form a coalition, passed to each of them on its
    command line (so none takes another's forgery for an honest update); protocol misbehaviours
    and honest members get none."""
    document = {**BASE, "network": {"nodes": 10}, "seed": 3, "byzantine": [{"profile": "alie", "count": 2}, {"profile": "sign_flip", "count": 1}, {"profile": "silent", "count": 1}]}
    scenario = parse_scenario(document, ROOT / "scenarios" / "test.toml")
    roles = assign_roles(scenario)
    coalition = coalitions(scenario, roles)
    alie = tuple(sorted(member for member, role in roles.items() if role == "alie"))
    (flipper,) = (member for member, role in roles.items() if role == "sign_flip")
    assert coalition == {**dict.fromkeys(alie, alie), flipper: (flipper,)}
    args = _node_args(scenario, "alie", Path("faults.json"), coalition[alie[0]])
    parsed = run_parser().parse_args(["--peers", "p", "--key", "k", *args])
    assert _profile(parsed).workload.colluder_members == alie


def test_every_workload_training_key_reaches_the_nodes():
    """A scenario's [workload] accepts every local SGD setting; each one is passed to the node
    processes (a key accepted but dropped would silently run a different experiment)."""
    training = {"epochs": 3, "steps": 7, "batch_size": 16, "learning_rate": 0.05, "momentum": 0.5, "weight_decay": 0.001, "update_momentum": 0.25}
    document = {**BASE, "workload": {**BASE.get("workload", {}), **training}}
    scenario = parse_scenario(document, ROOT / "scenarios" / "test.toml")
    args = _node_args(scenario, "honest", Path("faults.json"))
    parsed = run_parser().parse_args(["--peers", "p", "--key", "k", *args])
    config = _profile(parsed).workload.training
    assert {name: getattr(config, name) for name in training} == training


def test_shipped_scenarios_keep_their_genesis():
    """Each shipped scenario, given the same members, hashes to the genesis its old spelling made."""
    assert sorted(path.stem for path in SHIPPED) == sorted(SHIPPED_GENESIS_HASHES)
    for path in SHIPPED:
        scenario = load_scenario(path)
        genesis = genesis_from_fragment(scenario.fragment, scenario.network_id, MEMBERS[: scenario.nodes])
        assert genesis.hash.hex() == SHIPPED_GENESIS_HASHES[path.stem], path


def test_a_scenario_fragment_and_a_peers_file_with_the_same_values_hash_alike(tmp_path):
    """A [genesis] table is a peers.toml fragment: the same values as a peers.toml give the same hash."""
    fragment = {
        "model": {"kind": "mlp", "hidden": [8]},
        "aggregation": {"rule": "trimmed_mean", "trim": 1},
        "reputation": {"opposing_penalty": 0.05, "ban_rounds": 9},
        "fixed_point": {"frac_bits": 18},
    }
    scenario = parse_scenario({**BASE, "network": {"nodes": 7}, "genesis": fragment}, ROOT / "scenarios" / "test.toml")
    genesis = genesis_from_fragment(scenario.fragment, "same", MEMBERS[:7])
    written = dump_genesis(genesis)
    assert "[reputation]" in written and "opposing_penalty = 0.05" in written
    members = "".join(f'[[members]]\nname = "{m.name}"\npublic_key = "{m.public_key.hex()}"\naddress = "{m.address}"\n' for m in MEMBERS[:7])
    peers = tmp_path / "peers.toml"
    peers.write_text(
        'network_id = "same"\n[model]\nkind = "mlp"\nfeatures = 64\nclasses = 10\nhidden = [8]\n'
        '[aggregation]\nrule = "trimmed_mean"\ntrim = 1\n[fixed_point]\nfrac_bits = 18\n'
        "[reputation]\nopposing_penalty = 0.05\nban_rounds = 9\n" + members
    )
    assert load_genesis(peers).hash == genesis.hash


def test_a_scenario_sets_ledger_parameters():
    """A scenario reaches the ledger: its reputation table lands in the genesis in Q16."""
    scenario = parse_scenario({**BASE, "genesis": {**BASE["genesis"], "reputation": {"opposing_penalty": 0.05, "weight_cap": 0.5}}})
    assert scenario.genesis.ledger is not None
    assert (scenario.genesis.ledger.opposing_penalty, scenario.genesis.ledger.weight_cap) == (round(0.05 * ONE), ONE // 2)
    off = with_genesis(scenario, {"reputation": {"enabled": False}})
    assert off.genesis.ledger is None and scenario.genesis.ledger is not None
