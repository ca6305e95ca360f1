"""qora-sim: progress, summary, JSON, and a non-zero exit with a replay line on failure."""

import json

from qora_p2p.cli.sim import main


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
