"""qora-node's command line: bad input gets a clear message and a documented exit code, before any
socket is opened; inspect verifies what it prints."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from qora_p2p.cli.keys import main as keys_main
from qora_p2p.cli.node import EXIT_DAMAGED, EXIT_DISK_FULL, EXIT_STORE, EXIT_USAGE, main
from qora_p2p.identity import Identity, write_key_file
from qora_p2p.node.store import DATABASE_NAME, Store
from qora_p2p.protocol.genesis import load_genesis


@pytest.fixture
def network(tmp_path) -> Path:
    assert keys_main(["network", "--nodes", "4", "--out", str(tmp_path / "net"), "--model", "synthetic", "--dimension", "16"]) == 0
    return tmp_path / "net"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--linger", "-1"], "--linger"),
        (["--attack", "teleport"], "teleport"),
        (["--behaviour", "teleport"], "teleport"),
        (["--profile", "/nonexistent/profile.toml"], "cannot read profile"),
        (["--partition", "iid", "--alpha", "0"], "alpha"),
    ],
)
def test_bad_flags_exit_2_with_the_reason(network, capsys, extra, message):
    """Each bad flag is refused with exit code 2 and a message naming it."""
    code = main(["--peers", str(network / "peers.toml"), "--key", str(network / "keys" / "node-00.key"), *extra])
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_a_key_outside_the_network_is_refused(network, tmp_path, capsys):
    """A valid key that is not a member: exit 2, naming its public key."""
    stranger = tmp_path / "stranger.key"
    write_key_file(stranger, Identity.generate())
    assert main(["--peers", str(network / "peers.toml"), "--key", str(stranger)]) == EXIT_USAGE
    assert "is not a member" in capsys.readouterr().err


def test_a_data_directory_of_another_member_exits_3(network, tmp_path, capsys):
    """Starting with another member's data directory is refused before anything is written."""
    genesis = load_genesis(network / "peers.toml")
    Store(tmp_path / "data", genesis, genesis.members[1].public_key).close()
    code = main(["--peers", str(network / "peers.toml"), "--key", str(network / "keys" / "node-00.key"), "--data-dir", str(tmp_path / "data"), "--log-format", "json"])
    assert code == EXIT_STORE
    assert "another member" in capsys.readouterr().err


def test_inspect_of_a_missing_directory_exits_3(tmp_path, capsys):
    """inspect on a directory with no node database says so."""
    assert main(["inspect", "--data-dir", str(tmp_path)]) == EXIT_STORE
    assert "no node database" in capsys.readouterr().err


def test_a_damaged_database_exits_5_with_the_way_back(network, tmp_path, capsys):
    """A bit flipped in the stored genesis: the node and inspect both refuse with exit code 5 and a
    message naming the damage and the recovery path (no traceback, no "another network")."""
    genesis = load_genesis(network / "peers.toml")
    Store(tmp_path / "data", genesis, genesis.members[0].public_key).close()
    path = tmp_path / "data" / DATABASE_NAME
    data = path.read_bytes()
    at = data.index(genesis.hash)
    path.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
    code = main(["--peers", str(network / "peers.toml"), "--key", str(network / "keys" / "node-00.key"), "--data-dir", str(tmp_path / "data"), "--log-format", "json"])
    assert code == EXIT_DAMAGED
    error = capsys.readouterr().err
    assert "is damaged: meta 'genesis_hash' does not match its checksum" in error and "To recover: stop the node, move" in error
    assert main(["inspect", "--data-dir", str(tmp_path / "data")]) == EXIT_DAMAGED
    assert "is damaged" in capsys.readouterr().err


def test_a_full_disk_stops_the_node_with_exit_6_and_nothing_half_written(tmp_path, capsys, monkeypatch):
    """A one-member network whose database may not grow (SQLite's max_page_count: a full disk):
    the node's first signature cannot be recorded, so it logs why and exits 6; the database is
    intact and records no signature."""
    assert keys_main(["network", "--nodes", "1", "--out", str(tmp_path / "net"), "--model", "synthetic", "--dimension", "40000"]) == 0  # a 160 KB update needs pages the database lacks
    genesis = load_genesis(tmp_path / "net" / "peers.toml")
    Store(tmp_path / "data", genesis, genesis.members[0].public_key).close()
    connect = sqlite3.connect

    def full(*args, **kwargs):
        db = connect(*args, **kwargs)
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        return db

    monkeypatch.setattr(sqlite3, "connect", full)
    arguments = ["--peers", str(tmp_path / "net" / "peers.toml"), "--key", str(tmp_path / "net" / "keys" / "node-00.key")]
    code = main([*arguments, "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--rounds", "2", "--linger", "0", "--log-format", "json"])
    error = capsys.readouterr().err
    assert code == EXIT_DISK_FULL, error[-2000:]
    assert "the disk is full" in error and "while recording signed slot ('update', 1, 0)" in error
    assert any(json.loads(line).get("event") == "disk_full" for line in error.splitlines() if line.startswith("{"))
    monkeypatch.undo()
    with Store(tmp_path / "data", genesis, genesis.members[0].public_key) as store:
        store.verify()
        assert store.restore().signed == {} and store.last_round() == 0
