"""Real `qora-node` processes on loopback: agreement, SIGKILL and restart, late start, hostile
connections. Every wait polls a condition with a deadline; nothing sleeps to hide a race."""

from __future__ import annotations

import contextlib
import signal
import socket

import pytest
import trio

from qora_p2p.errors import HandshakeError
from qora_p2p.identity import Identity
from qora_p2p.node.channel import open_channel
from qora_p2p.protocol.genesis import ModelSpec, Timing
from qora_p2p.testnet.cluster import LocalCluster

# Short timeouts so that a dead proposer costs a second, not the production defaults.
FAST = Timing(round_timeout_ms=10_000, collect_timeout_ms=200, propose_timeout_ms=1_000, prevote_timeout_ms=500, precommit_timeout_ms=500, timeout_delta_ms=250, timeout_cap_ms=4_000)
DEADLINE_S = 90


@pytest.fixture
def cluster(tmp_path):
    with LocalCluster.create(tmp_path, 4, model=ModelSpec("synthetic", 1_000, 3), timing=FAST) as local:
        yield local


def _identical_prefixes(cluster: LocalCluster, members, rounds: int) -> None:
    chains = {index: cluster.chain(index) for index in members}
    for index, chain in chains.items():
        assert chain["verified"], (index, chain["problems"])
        assert chain["last_round"] >= rounds, (index, chain["last_round"])
    # By round number: a member that caught up from a snapshot holds the records from there on,
    # not from round 1 (and on a fast machine the network may be many rounds on by then). Every
    # round two members both hold has one hash, each member shares rounds with the first, and
    # every chain verifies, links included.
    held = {index: {item["round"]: item["hash"] for item in chain["rounds"]} for index, chain in chains.items()}
    for index in members:
        assert held[index].keys() & held[members[0]].keys(), (index, sorted(held[index])[:3])
        for other in members:
            common = held[index].keys() & held[other].keys()
            assert {r: held[index][r] for r in common} == {r: held[other][r] for r in common}, (index, other)


def test_four_nodes_commit_identical_chains_and_stop_cleanly(cluster):
    """Four processes commit 6 rounds; `inspect --json` shows the same verified chain on each, and
    each exits 0 after --rounds. All start on new databases: each abstains until its peers say
    round 1, then signs."""
    for index in range(4):
        cluster.start(index, rounds=6, linger_s=1)
    for index in range(4):
        assert cluster.wait_exit(index, DEADLINE_S) == 0, cluster.log_path(index).read_text()[-2000:]
    _identical_prefixes(cluster, [0, 1, 2, 3], 6)
    committed_by: dict[int, list[int]] = {}
    for index in range(4):
        # A member the others outpace (a slow machine) installs rounds by catch-up instead: every
        # round is still accounted for, in order, by one of the two lines.
        reached = []
        for line in cluster.events(index):
            if line.get("event") == "round_committed":
                assert line["inputs"] >= 3, line
                reached.append(line["round"])
                committed_by.setdefault(line["round"], []).append(index)
            elif line.get("event") == "caught_up":
                reached.extend(range(line["round"] - line["records"] + 1, line["round"] + 1))
        assert reached[:6] == [1, 2, 3, 4, 5, 6], (index, reached, cluster.log_path(index).read_text()[-2000:])
    # Each round was committed in the normal path (from its own 2f+1 precommits) by most members.
    assert all(len(committed_by.get(number, [])) >= 2 for number in range(1, 7)), committed_by
    # Every member signs from round 1, except one whose process came up after the others had
    # committed round 1 (a loaded machine): it heard round 2 first and abstained until a round past it.
    from_start = 0
    for index in range(4):
        (ended,) = cluster.events(index, "abstain_ended")
        if (ended["claimed_round"], ended["committed"]) == (1, 0):
            from_start += 1
        else:
            assert ended["committed"] == ended["claimed_round"] + 1, ended
    assert from_start >= 3


def test_sigkill_mid_run_restart_catches_up_without_double_signing(cluster):
    """SIGKILL a member while rounds are running, restart it on the same data: it catches up, the
    chains stay identical, and it never signs two contents for one slot (the store refuses that)."""
    for index in range(4):
        cluster.start(index)
    # A member whose peers committed round 1 before it connected (its process came up late) hears
    # them say round 2 or later and, unable to tell a first start from a restart that lost its
    # database, abstains until it is a round past that. While it abstains it is the one fault that
    # f = 1 tolerates; killing member 2 then would leave two signers, fewer than a quorum of three.
    cluster.wait_until(lambda: all(cluster.events(index, "abstain_ended") for index in range(4)), DEADLINE_S, "every member signs")
    cluster.wait_until(lambda: cluster.committed(2) >= 2, DEADLINE_S, "member 2 commits round 2")
    cluster.kill(2)
    killed_at = cluster.committed(2)
    cluster.wait_until(lambda: cluster.committed(0) >= killed_at + 3, DEADLINE_S, "the others go on without member 2")
    cluster.start(2)
    target = cluster.committed(0) + 2
    cluster.wait_until(lambda: all(cluster.committed(i) >= target for i in range(4)), DEADLINE_S, "member 2 catches up")
    _identical_prefixes(cluster, [0, 1, 2, 3], target)
    assert not any(event.get("event") == "refused_double_sign" for event in cluster.events(2))
    assert cluster.events(2, "node_started")[-1]["round"] >= killed_at + 1


def test_late_node_catches_up(cluster):
    """Three members run for a while; the fourth starts late (a new database, as after losing one)
    and reaches the same chain; it signs nothing until it is past the round its peers were in."""
    for index in range(3):
        cluster.start(index)
    cluster.wait_until(lambda: cluster.committed(0) >= 4, DEADLINE_S, "three members commit 4 rounds")
    cluster.start(3)
    target = cluster.committed(0) + 2
    cluster.wait_until(lambda: cluster.committed(3) >= target, DEADLINE_S, "the late member catches up")
    _identical_prefixes(cluster, [0, 1, 2, 3], target)
    cluster.wait_until(lambda: cluster.events(3, "abstain_ended"), DEADLINE_S, "the late member signs again")
    (ended,) = cluster.events(3, "abstain_ended")
    assert ended["claimed_round"] >= 5 and ended["committed"] >= ended["claimed_round"] + 1, ended


def test_garbage_and_unknown_keys_are_refused_while_rounds_go_on(cluster):
    """A connection that sends garbage and a stranger with a valid handshake but an unknown key are
    both refused by a running member, which keeps committing."""
    for index in range(4):
        cluster.start(index)
    cluster.wait_until(lambda: cluster.committed(0) >= 1, DEADLINE_S, "the network commits round 1")
    member = cluster.genesis.members[0]
    with socket.create_connection((member.host, member.port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 4)
        raw.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            assert raw.recv(1024) == b""  # the member closes the connection

    async def stranger() -> None:
        stream = await trio.open_tcp_stream(member.host, member.port)
        identity = Identity.generate()
        members = frozenset({identity.public_key, member.public_key})
        with pytest.raises(HandshakeError):
            await open_channel(stream, identity, genesis_hash=cluster.genesis.hash, members=members, initiator=True, expected_peer=member.public_key)

    trio.run(stranger)
    before = cluster.committed(0)
    cluster.wait_until(lambda: cluster.committed(0) >= before + 3, DEADLINE_S, "rounds go on after the hostile connections")
    refused = cluster.events(0, "handshake_refused")
    assert len(refused) >= 2, refused
    assert all(cluster.alive(index) for index in range(4))


def test_sigterm_stops_a_node_cleanly(cluster):
    """SIGTERM ends a running node with exit code 0 and a consistent store."""
    for index in range(4):
        cluster.start(index)
    cluster.wait_until(lambda: cluster.committed(1) >= 2, DEADLINE_S, "member 1 commits round 2")
    cluster.signal(1, signal.SIGTERM)
    assert cluster.wait_exit(1, 30) == 0
    assert cluster.chain(1)["verified"]
    assert cluster.events(1, "stopping")
