"""The protocol's behaviour is pinned: 55 simulator runs (every strategy against every fault
profile) reproduce the trace hashes recorded in ``trace_hashes.json`` bit for bit."""

import json

import pytest

from qora_p2p.sim import run_simulation
from tests.sim.trace_fixture import FIXTURE, configurations, sim_config

PINNED = json.loads(FIXTURE.read_text())


def test_the_fixture_pins_every_configuration_once():
    """The fixture lists exactly the configurations the generator defines, in its order."""
    assert [entry["config"] for entry in PINNED] == configurations()


@pytest.mark.parametrize("entry", PINNED, ids=lambda entry: f"{entry['config']['strategy']}-{entry['config']['faults']}-{entry['config']['seed']}")
def test_trace_hash_matches_the_pinned_one(entry):
    """Same configuration, same events, message for message: the trace hash is unchanged."""
    result = run_simulation(sim_config(entry["config"]))
    assert result.ok == entry["ok"], result.violations[:3]
    assert result.trace_hash == entry["trace_hash"], f"behaviour changed for {entry['config']}"
