"""Scenario files: every shipped one loads; invalid ones fail with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from qora_p2p.errors import ConfigError
from qora_p2p.testnet.scenario import assign_roles, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.toml"))
BASE = {"name": "t", "network": {"nodes": 4}, "genesis": {"model": "synthetic", "dimension": 10}}


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
        ({"genesis": {"model": "transformer"}}, "genesis.model"),
        ({"genesis": {"model": "synthetic", "timing": {"propose_timeout_ms": -1}}}, "genesis.timing.propose_timeout_ms"),
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
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
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
