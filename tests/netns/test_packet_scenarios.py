"""The shipped scenarios on a packet-level network: ten real node processes, each in its own
network namespace. A 7 | 3 partition of packets: the minority never commits alone, the majority
goes on, and after the heal every chain is identical and verifies. Crashes and restarts the same.
A run stopped by Ctrl-C or SIGTERM leaves no namespace behind. Marked ``netns`` (root and tools)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qora_p2p.testnet import netns
from qora_p2p.testnet.netns import missing_requirements
from qora_p2p.testnet.report import write_report
from qora_p2p.testnet.scenario import ScenarioRun, load_scenario, run_scenario, with_net

pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(missing_requirements()), reason="needs " + "; ".join(missing_requirements()))]

ROOT = Path(__file__).resolve().parents[2]


def _run(name: str, tmp_path: Path) -> tuple[ScenarioRun, dict]:
    scenario = with_net(load_scenario(ROOT / "scenarios" / f"{name}.toml"), "netns")
    run = run_scenario(scenario, tmp_path)
    summary = write_report(run)
    assert run.finished, (run.failure, summary["committed"])
    assert summary["agreement"], summary["agreement_problems"]  # every honest chain verifies (signatures, certificates) and all are identical
    assert all(count >= scenario.rounds for count in summary["committed"].values()), summary["committed"]
    assert summary["partition_method"].startswith("packet level")
    return run, summary


def _no_namespaces_of(pid: int) -> bool:
    return not [name for name in netns._namespaces() if name.startswith(f"{netns.PREFIX}{pid}-")]


def test_a_packet_level_partition_stalls_the_minority_and_heals_to_identical_chains(tmp_path):
    run, _ = _run("partition-heal", tmp_path)
    partition, heal = run.applied
    assert partition["fault"].endswith("partition groups [[0, 1, 2, 3, 4, 5, 6], [7, 8, 9]]") and heal["fault"].endswith("heal")
    minority, majority = [7, 8, 9], [0, 1, 2, 3, 4, 5, 6]
    # At most the round in flight when the partition came; nothing after it until the heal.
    assert all(heal["held"][m] <= partition["held"][m] + 1 for m in minority), (partition["held"], heal["held"])
    assert all(heal["held"][m] >= partition["held"][m] + 3 for m in majority), (partition["held"], heal["held"])
    assert _no_namespaces_of(os.getpid())


def test_packet_level_crashes_and_restarts_end_with_identical_verified_chains(tmp_path):
    run, _ = _run("crash-restart", tmp_path)
    assert [event["fault"].split(": ")[1].split(" ")[0] for event in run.applied] == ["kill", "restart", "kill", "restart"]
    assert _no_namespaces_of(os.getpid())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_deletes_its_namespaces(tmp_path, signum):
    """qora-scenario is stopped once its nodes commit: it exits 130, every node process is gone,
    and no namespace of its is left."""
    with subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "qora_p2p.cli.scenario", "run", str(ROOT / "scenarios" / "partition-heal.toml"), "--net", "netns", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    ) as process:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("round   2"):
                break
        assert lines and lines[-1].startswith("round   2"), "".join(lines)
        assert not _no_namespaces_of(process.pid)
        process.send_signal(signum)
        output = process.stdout.read()
        assert process.wait(60) == 130, output
        assert _no_namespaces_of(process.pid), netns._namespaces()
    assert _processes_mentioning(str(tmp_path)) == []


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in command:
                found.append(command)
    return found


@pytest.mark.slow
def test_every_packet_fault_in_one_run_ends_with_identical_verified_chains(tmp_path):
    """scenarios/packet-faults.toml: a partition, loss, a delay link, a link down, a closed
    firewall and a rate limit, each healed, on ten members; every round commits on every member."""
    run, summary = _run("packet-faults", tmp_path)
    actions = [event["fault"].split(": ")[1].split(" ")[0] for event in run.applied]
    assert {"partition", "drop", "delay", "link_down", "firewall_close", "rate"} <= set(actions), actions
    assert summary["failure"] is None
