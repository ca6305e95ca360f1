"""Real network namespaces: what crosses the test network, what each fault does to TCP between
members, the safety checks, and teardown. Needs root, iproute2, nftables and ethtool; marked
``netns`` (run with ``pytest -m netns``; .ci/run installs the tools and runs them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from qora_p2p.testnet import netns
from qora_p2p.testnet.netns import NetnsError, PacketNetwork, missing_requirements, sweep_stale

pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(missing_requirements()), reason="needs " + "; ".join(missing_requirements()))]

SERVER = """
import socket, sys, threading
listener = socket.create_server((sys.argv[1], 7100))
def serve(connection):
    with connection:
        total = 0
        while data := connection.recv(65536):
            total += len(data)
        connection.sendall(str(total).encode())
while True:
    threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
"""

CLIENT = """
import socket, sys, time
started = time.monotonic()
with socket.create_connection((sys.argv[1], 7100), timeout=float(sys.argv[3])) as connection:
    connected = time.monotonic()
    connection.sendall(b"x" * int(sys.argv[2]))
    connection.shutdown(socket.SHUT_WR)
    assert connection.recv(32) == sys.argv[2].encode()
print(connected - started, time.monotonic() - started)
"""


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check)  # noqa: S603 (iproute2, our arguments)


def _ours() -> list[str]:
    return [name for name in netns._namespaces() if name.startswith(netns.PREFIX)]


@pytest.fixture
def network() -> Iterator[PacketNetwork]:
    """Four members, member 3 behind a delay link, each running a byte-counting TCP server."""
    with PacketNetwork(4, delayed=[3]) as built:
        servers = [subprocess.Popen([*built.wrap(m), sys.executable, "-c", SERVER, built.address(m)]) for m in range(4)]  # noqa: S603
        try:
            for member in range(4):  # each server is up once something can connect to it from its own namespace
                deadline = time.monotonic() + 10
                while subprocess.run([*built.wrap(member), sys.executable, "-c", CLIENT, built.address(member), "1", "1"], capture_output=True, check=False).returncode:  # noqa: S603
                    assert time.monotonic() < deadline, f"server {member} did not start"
            yield built
        finally:
            for server in servers:
                server.kill()
                server.wait()


def _send(network: PacketNetwork, source: int, target: int, size: int = 100_000, timeout_s: float = 2.0) -> tuple[float, float] | None:
    """Connect from ``source`` to ``target``'s server and send ``size`` bytes: (connect s, total s), or None when it failed."""
    result = subprocess.run(  # noqa: S603
        [*network.wrap(source), sys.executable, "-c", CLIENT, network.address(target), str(size), str(timeout_s)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode:
        return None
    connect, total = (float(item) for item in result.stdout.split())
    return connect, total


def _reach(network: PacketNetwork) -> set[tuple[int, int]]:
    """The (from, to) pairs of members that can open a TCP connection and send over it now."""
    return {(a, b) for a in range(network.members) for b in range(network.members) if a != b and _send(network, a, b, 1000, 1.0) is not None}


def _reach_again(network: PacketNetwork, within_s: float = 15.0) -> set[tuple[int, int]]:
    """The pairs that reconnect within ``within_s`` after a heal. Not all at once: a member that
    dialled while its link was down has a failed neighbour entry, and the kernel answers a SYN
    from that peer only after re-resolving it (about a second, seen here)."""
    pairs = {(a, b) for a in range(network.members) for b in range(network.members) if a != b}
    reached: set[tuple[int, int]] = set()
    deadline = time.monotonic() + within_s
    while reached != pairs and time.monotonic() < deadline:
        reached |= {pair for pair in pairs - reached if _send(network, *pair, 1000, 1.0) is not None}
    return reached


ALL = {(a, b) for a in range(4) for b in range(4) if a != b}


def test_partitions_links_and_firewalls_cut_tcp_and_heal_restores_it(network):
    """Every member reaches every other; a 2 | 2 partition cuts exactly the pairs across it; a
    link down cuts its member off; a member's own firewall cuts it off both ways; heal lifts it
    all (the delay link included), within seconds."""
    assert _reach(network) == ALL
    network.partition([[0, 1], [2, 3]])
    assert _reach(network) == {(0, 1), (1, 0), (2, 3), (3, 2)}
    network.heal()
    assert _reach_again(network) == ALL
    network.set_link([3], up=False)
    network.set_firewall([1], closed=True)
    assert _reach(network) == {(0, 2), (2, 0)}
    network.heal()
    assert _reach_again(network) == ALL
    network.set_loss(1.0)
    assert _reach(network) == set()
    network.heal()
    assert _reach_again(network) == ALL


def test_delay_rate_and_loss_slow_tcp_without_breaking_it(network):
    """A 60 ms delay link makes a connection to its member take at least one 120 ms round trip;
    a 400 kbit/s rate makes 100 kB take at least 2 s (a lower bound each, so the test cannot be
    flaky on a slow machine); 20% loss on a member's link still delivers every byte."""
    network.set_delay([3], 60)
    delayed = _send(network, 0, 3)
    assert delayed is not None and delayed[0] >= 0.12, delayed
    network.heal()
    network.set_rate([1], 400)
    limited = _send(network, 0, 1, 100_000, 30.0)
    assert limited is not None and limited[1] >= 2.0 * 0.9, limited
    network.heal()
    network.set_loss(0.2, [2])
    assert _send(network, 0, 2, 300_000, 30.0) is not None
    network.heal()
    with pytest.raises(NetnsError, match="no delay link"):
        network.set_delay([0], 10)
    with pytest.raises(NetnsError, match="rate must be"):
        network.set_rate([0], 0)


def test_verify_refuses_a_way_out_of_the_run():
    """A default route, an unexpected address, or a veth into a namespace the run did not make:
    each is refused before a node would start."""
    with PacketNetwork(2) as network:
        network.verify()
        member = network.namespace(0)
        _ip("-n", member, "route", "add", "default", "dev", "eth0")
        with pytest.raises(NetnsError, match="default route"):
            network.verify()
        _ip("-n", member, "route", "del", "default")
        _ip("-n", network.hub, "addr", "add", "198.18.0.200/24", "dev", "br0")
        with pytest.raises(NetnsError, match=r"unexpected address 198\.18\.0\.200"):
            network.verify()
        _ip("-n", network.hub, "addr", "del", "198.18.0.200/24", "dev", "br0")
        outside = f"{network.prefix}-outside"  # not in network.created: outside the run
        _ip("netns", "add", outside)
        try:
            _ip("-n", network.hub, "link", "add", "m1x", "type", "veth", "peer", "name", "out", "netns", outside)
            with pytest.raises(NetnsError, match="m1x"):
                network.verify()
        finally:
            _ip("netns", "del", outside)
        network.verify()  # the veth went with the outside namespace


def test_teardown_removes_every_namespace_even_when_the_run_fails():
    before = set(_ours())
    with pytest.raises(RuntimeError), PacketNetwork(3, delayed=[1]) as network:
        assert set(network.created) <= set(_ours())
        forwarder = network.forwarders[1]
        raise RuntimeError("a failing run")
    assert set(_ours()) == before
    assert forwarder.poll() is not None


def test_namespaces_left_by_a_dead_runner_are_swept_and_a_live_runners_are_kept():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, alive = f"{netns.PREFIX}{dead.pid}-dead00-hub", f"{netns.PREFIX}{os.getpid()}-live00-hub"
    for name in (stale, alive):
        _ip("netns", "add", name)
    try:
        assert stale in sweep_stale()
        assert stale not in _ours() and alive in _ours()
    finally:
        for name in (stale, alive):
            _ip("netns", "del", name, check=False)
