"""qora-keys: key files and networks from the command line, with clear errors and exit codes."""

import subprocess
import sys

from qora_p2p.cli.keys import main
from qora_p2p.identity import public_key_hex, read_key_file
from qora_p2p.protocol.genesis import load_genesis


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


def test_set_reaches_a_ledger_parameter(tmp_path):
    """--set reputation.opposing_penalty=0.05 is written to peers.toml and read back as Q16 3277."""
    assert main(["network", "--nodes", "4", "--out", str(tmp_path), "--model", "synthetic", "--set", "reputation.opposing_penalty=0.05", "--set", "aggregation.rule=median"]) == 0
    genesis = load_genesis(tmp_path / "peers.toml")
    assert genesis.ledger is not None and genesis.ledger.opposing_penalty == 3277
    assert genesis.rule == "median" and genesis.rule_params == {} and genesis.model.dimension == 1000


def test_genesis_fragment_options_and_set_apply_in_order(tmp_path):
    """A --genesis file gives the base, model and rule options override it, --set overrides both."""
    fragment = tmp_path / "fragment.toml"
    fragment.write_text('[model]\nkind = "synthetic"\ndimension = 50\n[aggregation]\nrule = "trimmed_mean"\ntrim = 1\n[timing]\ncollect_timeout_ms = 150\n')
    out = tmp_path / "net"
    assert main(["network", "--nodes", "4", "--out", str(out), "--genesis", str(fragment), "--dimension", "60", "--set", "model.dimension=70"]) == 0
    genesis = load_genesis(out / "peers.toml")
    assert (genesis.model.dimension, genesis.rule_params, genesis.timing.collect_timeout_ms) == (70, {"trim": 1}, 150)


def test_bad_genesis_settings_exit_2_naming_the_path(tmp_path, capsys):
    """Bad --set values and fragment files exit 2 with the field's path, writing nothing."""
    for arguments, message in [
        (["--set", "reputation.ban_rounds=0"], "reputation.ban_rounds: must be in 1..1000000000, got 0"),
        (["--set", "reputation.colour=red"], "reputation.colour: unknown key"),
        (["--set", "nonsense"], "expected PATH=VALUE"),
        (["--genesis", str(tmp_path / "absent.toml")], "cannot read genesis fragment"),
    ]:
        assert main(["network", "--nodes", "4", "--out", str(tmp_path / "net"), *arguments]) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error
    assert not (tmp_path / "net").exists()


def test_network_help_lists_the_genesis_parameters():
    """network --help documents --set, --genesis and every genesis parameter's path."""
    result = subprocess.run([sys.executable, "-m", "qora_p2p.cli.keys", "network", "--help"], capture_output=True, text=True, check=True)
    assert "--set PATH=VALUE" in result.stdout and "--genesis" in result.stdout and "reputation.opposing_penalty" in result.stdout


def _services(text):
    """compose.yml's service blocks by name (the generator's fixed layout: two-space names)."""
    body = text.split("\nservices:\n", 1)[1].split("\nnetworks:\n", 1)[0]
    blocks: dict[str, list[str]] = {}
    name = ""
    for line in body.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name = line.strip().rstrip(":")
            blocks[name] = []
        else:
            blocks[name].append(line.strip())
    return blocks


def test_network_compose_addresses_members_by_service_name_and_mounts_each_key_once(tmp_path, capsys):
    """--compose: members node-XX:7000, and compose.yml runs one service per member on an internal
    network, with peers.toml, its own key file only, and its own volume."""
    assert main(["network", "--nodes", "4", "--out", str(tmp_path), "--compose", "--image", "qora-p2p:test"]) == 0
    genesis = load_genesis(tmp_path / "peers.toml")
    assert [member.address for member in genesis.members] == [f"node-{index:02d}:7000" for index in range(4)]
    text = (tmp_path / "compose.yml").read_text()
    services = _services(text)
    assert sorted(services) == [member.name for member in genesis.members]
    for name, lines in services.items():
        mounts = [line for line in lines if line.startswith('- "')]
        assert mounts == ['- "./peers.toml:/etc/qora/peers.toml:ro"', f'- "./keys/{name}.key:/etc/qora/node.key:ro"', f'- "{name}-data:/data"']
        assert 'image: "qora-p2p:test"' in lines and f'hostname: "{name}"' in lines and 'restart: "unless-stopped"' in lines
    assert "\nnetworks:\n  qora:\n    internal: true\n" in text
    assert "chown 10001:10001" in capsys.readouterr().out


def test_network_compose_refuses_addresses_and_an_existing_file(tmp_path, capsys):
    """--compose names the addresses itself, and never replaces a compose.yml without --force."""
    assert main(["network", "--addresses", "a:7000,b:7000,c:7000,d:7000", "--out", str(tmp_path), "--compose"]) == 2
    assert "--compose addresses members by service name" in capsys.readouterr().err
    assert main(["network", "--nodes", "4", "--out", str(tmp_path), "--compose"]) == 0
    before = (tmp_path / "compose.yml").read_text()
    assert main(["network", "--nodes", "4", "--out", str(tmp_path), "--compose"]) == 3
    assert (tmp_path / "compose.yml").read_text() == before
