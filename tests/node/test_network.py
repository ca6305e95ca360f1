"""A new network's files: key files and a genesis that loads back to the same hash."""

import pytest

from qora_p2p.errors import ConfigError
from qora_p2p.node.network import create_network
from qora_p2p.protocol.genesis import ModelSpec, Timing, load_genesis
from qora_p2p.protocol.ledger import LedgerParams


def test_create_network_writes_keys_and_a_loadable_genesis(tmp_path):
    """create_network gives 0600 key files and a peers.toml that loads to the same genesis."""
    genesis, paths = create_network(
        tmp_path,
        [("127.0.0.1", 7100 + index) for index in range(4)],
        network_id="made",
        model=ModelSpec("synthetic", 100),
        rule="trimmed_mean",
        rule_params={"trim": 1},
        ledger=LedgerParams(),
        timing=Timing(),
    )
    assert load_genesis(tmp_path / "peers.toml").hash == genesis.hash
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in paths)
    with pytest.raises(ConfigError, match="exists"):
        create_network(tmp_path, [("127.0.0.1", 7200)], network_id="again", model=ModelSpec("synthetic", 10), rule="median", rule_params={})
