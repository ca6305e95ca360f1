"""A new network's files: key files and a genesis that loads back to the same hash."""

import pytest

from qora_p2p.errors import ConfigError
from qora_p2p.node.network import create_network, with_model_defaults
from qora_p2p.protocol.genesis import load_genesis


def test_create_network_writes_keys_and_a_loadable_genesis(tmp_path):
    """create_network gives 0600 key files and a peers.toml that loads to the same genesis."""
    fragment = {"model": {"kind": "synthetic", "dimension": 100}, "aggregation": {"rule": "trimmed_mean", "trim": 1}}
    genesis, paths = create_network(tmp_path, [("127.0.0.1", 7100 + index) for index in range(4)], fragment, network_id="made")
    assert load_genesis(tmp_path / "peers.toml").hash == genesis.hash
    assert genesis.rule_params == {"trim": 1} and genesis.ledger is not None
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in paths)
    with pytest.raises(ConfigError, match="exists"):
        create_network(tmp_path, [("127.0.0.1", 7200)], {"model": {"kind": "synthetic", "dimension": 10}}, network_id="again")


def test_an_invalid_fragment_writes_nothing(tmp_path):
    """A bad parameter is refused with its path named, before any key file exists."""
    fragment = {"model": {"kind": "synthetic", "dimension": 10}, "reputation": {"ban_rounds": 0}}
    with pytest.raises(ConfigError, match=r"setup: reputation\.ban_rounds: must be in 1\.\.1000000000, got 0"):
        create_network(tmp_path, [("127.0.0.1", 7300)], fragment, network_id="bad", origin="setup")
    assert not any(tmp_path.iterdir())


def test_model_defaults_follow_the_dataset_and_keep_given_values():
    """Absent model keys come from the bundled dataset's shape; given ones are kept."""
    assert with_model_defaults({})["model"] == {"kind": "logistic", "features": 64, "classes": 10}
    assert with_model_defaults({"model": {"kind": "mlp", "classes": 3}}, "breast_cancer")["model"] == {"kind": "mlp", "features": 30, "classes": 3, "hidden": [32]}
    assert with_model_defaults({"model": {"kind": "synthetic"}})["model"] == {"kind": "synthetic", "dimension": 1000}
