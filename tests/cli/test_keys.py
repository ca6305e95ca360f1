"""qora-keys: key files and networks from the command line, with clear errors and exit codes."""

import subprocess
import sys

from qora_p2p.cli.keys import main
from qora_p2p.protocol.genesis import load_genesis
from qora_p2p.identity import public_key_hex, read_key_file


def test_generate_prints_the_public_key_of_a_private_key_file(tmp_path, capsys):
    """generate writes a 0600 key file and prints its public key; show prints the same."""
    path = tmp_path / "node.key"
    assert main(["generate", str(path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == public_key_hex(read_key_file(path).public_key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert main(["show", str(path)]) == 0
    assert capsys.readouterr().out.strip() == printed


def test_generate_refuses_to_overwrite(tmp_path, capsys):
    """An existing key is never replaced without --force (exit code 3)."""
    path = tmp_path / "node.key"
    main(["generate", str(path)])
    before = path.read_bytes()
    assert main(["generate", str(path)]) == 3
    assert "exists" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert main(["generate", str(path), "--force"]) == 0 and path.read_bytes() != before


def test_network_creates_a_local_network(tmp_path, capsys):
    """network --nodes 4 writes peers.toml and four keys whose public keys are the members'."""
    assert main(["network", "--nodes", "4", "--out", str(tmp_path), "--model", "synthetic", "--dimension", "100"]) == 0
    genesis = load_genesis(tmp_path / "peers.toml")
    assert genesis.size == 4 and genesis.model.dimension == 100
    keys = [read_key_file(tmp_path / "keys" / f"node-{index:02d}.key").public_key for index in range(4)]
    assert keys == [member.public_key for member in genesis.members]
    assert len({member.port for member in genesis.members}) == 4
    assert genesis.hash.hex() in capsys.readouterr().out


def test_network_from_explicit_addresses_and_rule(tmp_path):
    """Addresses, rule and parameters go into the genesis as given."""
    addresses = ",".join(f"10.0.0.{index}:7000" for index in range(1, 8))
    assert main(["network", "--addresses", addresses, "--out", str(tmp_path), "--rule", "trimmed_mean", "--param", "trim=2"]) == 0
    genesis = load_genesis(tmp_path / "peers.toml")
    assert [member.host for member in genesis.members] == [f"10.0.0.{index}" for index in range(1, 8)]
    assert genesis.rule == "trimmed_mean" and genesis.rule_params == {"trim": 2}


def test_bad_settings_exit_2_with_a_message(tmp_path, capsys):
    """A rule that cannot run on n - f inputs is refused before anything is written."""
    assert main(["network", "--nodes", "4", "--out", str(tmp_path), "--rule", "krum", "--param", "f=1"]) == 2
    assert "krum needs" in capsys.readouterr().err
    assert not (tmp_path / "peers.toml").exists()
    assert main(["show", str(tmp_path / "missing.key")]) == 2


def test_installed_command_has_help():
    """The console script runs and documents its subcommands."""
    result = subprocess.run([sys.executable, "-m", "qora_p2p.cli.keys", "--help"], capture_output=True, text=True, check=True)
    assert "network" in result.stdout and "generate" in result.stdout
