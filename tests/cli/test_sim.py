"""qora-sim: progress, summary, JSON, genesis settings, and a non-zero exit with a replay line on failure."""

import json

from qora_p2p.cli.sim import main, parser
from qora_p2p.protocol.genesis import placeholder_members
from qora_p2p.sim import SimConfig


def test_a_run_prints_progress_and_a_summary(capsys, tmp_path):
    """A small run passes every check, shows each round, and writes the JSON summary."""
    out = tmp_path / "run.json"
    assert main(["--nodes", "7", "--byzantine", "2", "--rounds", "3", "--seed", "4", "--model-dim", "50", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "round    3" in printed and "agreement:      ok" in printed and "trace hash:" in printed
    report = json.loads(out.read_text())
    assert report["ok"] and report["committed_min"] == 3
    assert report["bytes_received_per_honest_node_per_round"]["updates_over_lower_bound"] <= 1.25


def test_a_checker_failure_exits_1_and_prints_the_replay_command(capsys):
    """With f + 1 silent members liveness fails: exit code 1 and the exact command to replay."""
    assert main(["--nodes", "4", "--byzantine", "2", "--rounds", "1", "--seed", "3", "--strategy", "silent", "--quiet", "--model-dim", "10"]) == 1
    error = capsys.readouterr().err
    assert "liveness" in error and "replay with: qora-sim --nodes 4 --byzantine 2 --rounds 1 --seed 3" in error


def test_bad_usage_exits_2(capsys):
    """Impossible settings are refused with exit code 2."""
    assert main(["--nodes", "4", "--byzantine", "4"]) == 2
    assert "Byzantine" in capsys.readouterr().err


def test_set_reaches_a_ledger_parameter(capsys, tmp_path):
    """--set reputation.opposing_penalty=0.05 lands in the simulated network's genesis (Q16 3277)
    and changes its hash; --genesis files say the same thing."""
    base = ["--nodes", "4", "--byzantine", "1", "--rounds", "1", "--seed", "2", "--model-dim", "10", "--quiet"]
    assert main([*base, "--json", str(tmp_path / "plain.json")]) == 0
    assert main([*base, "--set", "reputation.opposing_penalty=0.05", "--json", str(tmp_path / "set.json")]) == 0
    fragment = tmp_path / "genesis.toml"
    fragment.write_text("[reputation]\nopposing_penalty = 0.05\n")
    assert main([*base, "--genesis", str(fragment), "--json", str(tmp_path / "file.json")]) == 0
    plain, changed, from_file = (json.loads((tmp_path / f"{name}.json").read_text())["config"] for name in ("plain", "set", "file"))
    assert changed["genesis_hash"] != plain["genesis_hash"] and changed["genesis_hash"] == from_file["genesis_hash"]
    config = SimConfig(nodes=4, genesis_settings=("reputation.opposing_penalty=0.05",))
    genesis = config.build_genesis(placeholder_members(4))
    assert genesis.ledger is not None and genesis.ledger.opposing_penalty == 3277


def test_set_changes_the_rule_with_its_own_defaults(capsys):
    """--set aggregation.rule=median runs the median (not centered clipping's parameters)."""
    assert main(["--nodes", "4", "--byzantine", "1", "--rounds", "1", "--model-dim", "10", "--quiet", "--set", "aggregation.rule=median"]) == 0
    assert "rule median" in capsys.readouterr().out


def test_bad_genesis_settings_exit_2_with_the_path(capsys, tmp_path):
    """A bad value, key, shape or file is exit code 2 and one line naming it, never a traceback."""
    cases = [
        (["--set", "reputation.opposing_penalty=2"], "reputation.opposing_penalty: must be in 0.0..1.0, got 2"),
        (["--set", "reputation.opposing_penalty"], "expected PATH=VALUE"),
        (["--set", "timing.colour=1"], "timing.colour: unknown key"),
        (["--set", "model.dimension=5"], "--model-dim"),
        (["--set", "members=[]"], "members: is filled in"),
        (["--genesis", str(tmp_path / "absent.toml")], "cannot read genesis fragment"),
    ]
    for arguments, message in cases:
        assert main(["--nodes", "4", "--rounds", "1", "--quiet", *arguments]) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error


def test_the_trace_origin_of_a_configuration_without_settings_is_unchanged():
    """Without genesis settings the trace starts from the dataclass repr of the older fields only."""
    config = SimConfig(nodes=5, seed=3)
    assert str(config) == repr(config).replace(", genesis_settings=()", "")
    assert "genesis_settings=('timing.prevote_timeout_ms=200',)" in str(SimConfig(genesis_settings=("timing.prevote_timeout_ms=200",)))


def test_help_lists_the_genesis_parameters():
    """--help documents --set and every genesis parameter's path."""
    text = parser().format_help()
    assert "--set PATH=VALUE" in text and "reputation.opposing_penalty" in text and "timing.timeout_cap_ms" in text
