"""Packet-level networks without the kernel: the nft rules a fault state makes, the delay link's
queue, the requirement check, and how scenarios choose between transport and packet faults.
(tests/netns/test_packet_network.py builds real namespaces; it needs root and runs with -m netns.)"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qora_p2p.errors import ConfigError
from qora_p2p.testnet.delay import Direction, parse_delay
from qora_p2p.testnet.links import TransportLinks
from qora_p2p.testnet.netns import LinkState, NetnsError, PacketNetwork, bridge_rules, missing_requirements
from qora_p2p.testnet.scenario import parse_scenario, with_net

ROOT = Path(__file__).resolve().parents[2]


def _dropped_pairs(script: str) -> set[tuple[int, int]]:
    """Every (from, to) member pair a partition rule of ``script`` drops."""
    pairs = set()
    for source, target in re.findall(r"iifname \{ ([^}]*) \} oifname \{ ([^}]*) \} drop", script):
        sources = [int(port.strip(' "m')) for port in source.split(",")]
        targets = [int(port.strip(' "m')) for port in target.split(",")]
        pairs |= {(a, b) for a in sources for b in targets}
    return pairs


@given(st.lists(st.integers(0, 3), min_size=2, max_size=12))
def test_partition_rules_drop_exactly_the_pairs_across_groups(assignment):
    """Members assigned to groups: the rules drop every frame between two groups, both ways, and
    none within a group."""
    groups = tuple(tuple(m for m, g in enumerate(assignment) if g == label) for label in sorted(set(assignment)))
    script = bridge_rules(LinkState(groups=groups))
    across = {(a, b) for a in range(len(assignment)) for b in range(len(assignment)) if assignment[a] != assignment[b]}
    assert _dropped_pairs(script) == across


def test_loss_rules_name_the_members_links_or_every_frame_once():
    """Loss on named members drops p of each direction of their links; loss on everyone is one
    rule for every frame (so it is p end to end, not 1 - (1 - p)^2)."""
    some = bridge_rules(LinkState(loss={3: 0.1}))
    assert 'iifname "m3" numgen random mod 1000000 < 100000 drop' in some
    assert 'oifname "m3" numgen random mod 1000000 < 100000 drop' in some
    everyone = bridge_rules(LinkState(loss_all=0.25))
    assert everyone.count("numgen") == 1 and "< 250000 drop" in everyone and "ifname" not in everyone
    assert "drop" not in bridge_rules(LinkState(loss={3: 0.0}))
    assert "    drop\n" in bridge_rules(LinkState(loss_all=1.0))  # numgen's range stops below its modulus
    assert 'iifname "m1" drop' in bridge_rules(LinkState(loss={1: 1.0}))
    assert bridge_rules(LinkState()).startswith("table bridge qora\ndelete table bridge qora\n")


def test_the_delay_queue_is_fifo_bounded_and_never_reorders():
    """A lower delay set later never lets a frame overtake an earlier one; a full queue drops new
    frames (tail drop) and counts them."""
    queue = Direction(limit=10)
    queue.push(b"aaaa", release=1.0)
    queue.push(b"bbbb", release=0.5)  # the delay went down: still after "aaaa"
    queue.push(b"cccc", release=2.0)  # 12 bytes would exceed the limit of 10
    assert queue.dropped == 1 and queue.bytes == 8
    assert queue.due(0.9) == []
    assert queue.due(1.0) == [b"aaaa", b"bbbb"]
    assert queue.bytes == 0 and queue.next_release() is None


@pytest.mark.parametrize("line", [b"-1\n", b"10001\n", b"1.5\n", b"x\n", b"\n", "\uff15".encode()])  # a fullwidth digit five
def test_a_delay_control_line_must_be_a_whole_number_of_milliseconds_in_range(line):
    with pytest.raises((ValueError, UnicodeDecodeError)):
        parse_delay(line)
    assert parse_delay(b" 50\n") == 50


def test_missing_requirements_name_each_tool_and_its_debian_package(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool in ("nft", "ethtool") else "/usr/sbin/" + tool)
    missing = missing_requirements()
    assert any(item.startswith("root") for item in missing)
    assert "nft (Debian package nftables)" in missing and "ethtool (Debian package ethtool)" in missing
    assert not any(item.startswith(("ip ", "tc ")) for item in missing)
    with pytest.raises(NetnsError, match=r"--net netns\) need .*nftables"):
        PacketNetwork(3).create()


def test_a_packet_network_refuses_sizes_and_delayed_members_it_cannot_build():
    with pytest.raises(NetnsError, match=r"1\.\.250"):
        PacketNetwork(0)
    with pytest.raises(NetnsError, match=r"not all in 0\.\.2"):
        PacketNetwork(3, delayed=[3])
    network = PacketNetwork(3)
    assert network.addresses() == [("198.18.0.1", 7000), ("198.18.0.2", 7000), ("198.18.0.3", 7000)]
    assert network.wrap(2) == ["ip", "netns", "exec", f"{network.prefix}-m2"]


def _document(net: str | None, faults: list[dict]) -> dict:
    network: dict = {"nodes": 4}
    if net is not None:
        network["net"] = net
    return {"name": "links", "network": network, "genesis": {"model": {"kind": "synthetic", "dimension": 10}}, "faults": faults}


@pytest.mark.parametrize("action", ["link_down", "link_up", "firewall_close", "firewall_open"])
def test_packet_faults_need_a_packet_network_and_say_so_on_load(action):
    faults = [{"at_round": 2, "action": action, "nodes": [1]}]
    with pytest.raises(ConfigError, match=rf"faults\[0\].action: {action} needs a packet-level network"):
        parse_scenario(_document(None, faults))
    scenario = parse_scenario(_document("netns", faults))
    assert scenario.net == "netns"
    with pytest.raises(ConfigError, match="needs a packet-level network"):
        with_net(scenario, "transport")


def test_scenario_link_fault_fields_are_checked():
    with pytest.raises(ConfigError, match="rate_kbit"):
        parse_scenario(_document("netns", [{"at_round": 1, "action": "rate", "nodes": [0]}]))
    with pytest.raises(ConfigError, match="needs the members"):
        parse_scenario(_document("netns", [{"at_round": 1, "action": "link_down"}]))
    with pytest.raises(ConfigError, match=r"network\.net must be one of transport, netns"):
        parse_scenario(_document("udp", []))
    with pytest.raises(ConfigError, match=r"faults\[0\].nodes: transport fault injection applies delay to every member"):
        parse_scenario(_document(None, [{"at_round": 1, "action": "delay", "delay_ms": 50, "nodes": [1]}]))
    every = parse_scenario(_document(None, [{"at_round": 1, "action": "delay", "delay_ms": 50, "nodes": [0, 1, 2, 3]}]))
    assert every.faults[0].delay_ms == 50
    rate = parse_scenario(_document("netns", [{"at_round": 1, "action": "rate", "nodes": [0], "rate_kbit": 500}]))
    assert rate.faults[0].describe() == "at round 1: rate nodes [0] 500 kbit/s"


def test_every_shipped_scenario_also_loads_as_a_packet_level_run():
    """`qora-scenario run FILE --net netns` takes any shipped scenario."""
    from qora_p2p.testnet.scenario import load_scenario  # noqa: PLC0415

    for path in sorted((ROOT / "scenarios").glob("*.toml")):
        assert with_net(load_scenario(path), "netns").net == "netns", path


def test_transport_links_write_each_members_fault_file(tmp_path):
    links = TransportLinks(tmp_path, ["a", "b", "c"])
    links.partition([[0], [1, 2]])
    links.set_delay([0, 1, 2], 40)
    read = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in "abc"}
    assert read["a"] == {"blocked": [1, 2], "delay_ms": 40, "drop": 0.0}
    assert read["b"]["blocked"] == [0] and read["c"]["blocked"] == [0]
    links.heal()
    assert json.loads((tmp_path / "b.json").read_text()) == {"blocked": [], "delay_ms": 0, "drop": 0.0}
    with pytest.raises(ConfigError, match="--net netns"):
        links.set_link([0], up=False)
    with pytest.raises(ConfigError, match="every member"):
        links.set_loss(0.1, [1])


def test_qora_scenario_names_what_a_packet_network_is_missing(monkeypatch, capsys, tmp_path):
    """Without root (or a tool), `qora-scenario run --net netns` stops before writing or starting
    anything, exits 1 and says what to install."""
    from qora_p2p.cli.scenario import main  # noqa: PLC0415

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "nft" else "/usr/sbin/" + tool)
    code = main(["run", str(ROOT / "scenarios" / "partition-heal.toml"), "--net", "netns", "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert code == 1
    assert "packet-level networks (--net netns) need root" in error and "nft (Debian package nftables)" in error
    assert not (tmp_path / "run" / "network").exists()
