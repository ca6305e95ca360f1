"""Real-process chaos: nodes killed and restarted, a partition that heals, attackers among them.
The small case always runs; the larger ones are marked slow."""

from __future__ import annotations

from pathlib import Path

import pytest

from qora_p2p.testnet.report import write_report
from qora_p2p.testnet.scenario import parse_scenario, run_scenario

ROOT = Path(__file__).resolve().parents[2]
FAST_TIMING = {"collect_timeout_ms": 100, "propose_timeout_ms": 1000, "prevote_timeout_ms": 500, "precommit_timeout_ms": 500, "timeout_delta_ms": 250, "round_timeout_ms": 10_000}


def _scenario(nodes: int, rounds: int, faults: list[dict], byzantine: list[dict] | None = None, model: dict | None = None):
    document = {
        "name": "chaos",
        "seed": 11,
        "rounds": rounds,
        "stall_timeout_s": 60,
        "network": {"nodes": nodes},
        "genesis": {"model": model or {"kind": "synthetic", "dimension": 2000}, "timing": FAST_TIMING},
        "byzantine": byzantine or [],
        "faults": faults,
    }
    return parse_scenario(document, ROOT / "scenarios" / "chaos.toml")


def _check(run, summary) -> None:
    assert run.finished, (run.failure, summary["committed"])
    assert summary["agreement"], summary["agreement_problems"]
    honest_names = [name for name, role in summary["roles"].items() if role == "honest"]
    assert all(summary["committed"][name] >= run.scenario.rounds for name in honest_names), summary["committed"]


def test_kill_restart_and_partition_heal_with_five_nodes(tmp_path):
    """Five processes: one SIGKILLed and restarted, then a 3 | 2 partition that heals. Every honest
    member ends with every round, and all chains verify and agree."""
    scenario = _scenario(
        5,
        14,
        [
            {"at_round": 2, "action": "kill", "nodes": [1]},
            {"at_round": 4, "action": "restart", "nodes": [1]},
            {"at_round": 5, "action": "partition", "groups": [[0, 2, 3, 4], [1]]},
            {"at_round": 10, "action": "heal"},
        ],
    )
    run = run_scenario(scenario, tmp_path)
    summary = write_report(run)
    _check(run, summary)
    assert [event["fault"].split(": ")[1].split(" ")[0] for event in summary["faults"]] == ["kill", "restart", "partition", "heal"]
    assert (tmp_path / "latency.png").stat().st_size > 0 and (tmp_path / "rounds.csv").read_text().count("\n") == 15


def test_a_round_timed_fault_waits_for_a_late_member_to_stop_abstaining(tmp_path):
    """Five processes, one started late: it abstains, and the network counts it as its one
    tolerated fault. A kill scheduled for the next round waits until the late member signs again
    (or has finished), so the schedule never takes two members out of a network that tolerates
    one; every round commits and every chain agrees."""
    scenario = _scenario(
        5,
        12,
        [
            {"at_round": 3, "action": "start", "nodes": [4]},
            {"at_round": 4, "action": "kill", "nodes": [1]},
            {"at_round": 9, "action": "restart", "nodes": [1]},
        ],
    )
    run = run_scenario(scenario, tmp_path)
    summary = write_report(run)
    _check(run, summary)  # without the wait: a stall at the kill (two members out, f = 1)
    applied = {event["fault"].split(": ")[1].split(" ")[0]: event["round"] for event in summary["faults"]}
    assert applied["kill"] > applied["start"], applied


@pytest.mark.slow
def test_quickstart_like_run_with_faults_and_attackers(tmp_path):
    """Ten processes on digits: two attackers (Gaussian noise, equivocation), then a crash, then a
    member partitioned away (never more than f = 3 faulty at once). Agreement holds, every round
    commits, both attackers are banned. (A sign flipper is held at the initial reputation rather
    than banned: see the ledger notes.)"""
    scenario = _scenario(
        10,
        20,
        [
            {"at_round": 4, "action": "kill", "nodes": [0]},
            {"at_round": 7, "action": "restart", "nodes": [0]},
            {"at_round": 9, "action": "partition", "groups": [[0, 1, 2, 3, 4, 5, 6, 7, 9], [8]]},
            {"at_round": 13, "action": "heal"},
        ],
        byzantine=[{"profile": "gaussian", "count": 1}, {"profile": "equivocate_updates", "count": 1}],
        model={"kind": "logistic"},
    )
    run = run_scenario(scenario, tmp_path)
    summary = write_report(run)
    _check(run, summary)
    assert all(item["first_banned_round"] is not None for item in summary["detections"].values()), summary["detections"]
