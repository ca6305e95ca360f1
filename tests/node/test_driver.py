"""The Trio node's effect loop: a store write that fails stops the node before anything after it
leaves, so a message whose signature is not on disk is never sent."""

from __future__ import annotations

from typing import cast

import pytest
import trio

from qora_p2p.errors import DiskFull
from qora_p2p.identity import Identity
from qora_p2p.node.driver import Node, NodeSettings
from qora_p2p.node.store import Store
from qora_p2p.node.transport import Transport
from qora_p2p.node.workload import WorkloadConfig, build_workload
from qora_p2p.protocol.effects import Broadcast, SignedSlot
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec

DIMENSION = 40_000  # the update payload (160 KB) needs pages of its own (two 64 KiB pages would not hold it)


class RecordingTransport:
    """Stands in for the transport: records what would have left the process."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, peer: int, data: bytes) -> None:
        self.sent.append(data)

    def broadcast(self, data: bytes) -> None:
        self.sent.append(data)


async def test_a_signature_the_full_disk_cannot_record_never_leaves(tmp_path):
    """The core signs our update (SignedSlot, then Broadcast); the disk is full when the slot is
    written: the effect loop raises DiskFull and the signed update is never handed to the transport."""
    identities = [Identity.from_seed(bytes([7, index]) * 16) for index in range(4)]
    genesis = Genesis(
        "driver-test",
        tuple(Member(f"m{index}", identity.public_key, "127.0.0.1", 9100 + index) for index, identity in enumerate(identities)),
        ModelSpec("synthetic", DIMENSION, 0),
        "median",
        {},
    )
    node = Node(genesis, identities[0], build_workload(genesis, 0, WorkloadConfig()), NodeSettings(data_dir=tmp_path))
    transport = RecordingTransport()
    node.transport = cast("Transport", transport)
    node.store = Store(tmp_path, genesis, identities[0].public_key)
    try:
        node.core = node.store.restore().core(genesis, identities[0], now_ms=0)
        node.core.drain()  # the round's start (Train): nothing to sign yet
        node.core.submit_update(1, bytes(4 * DIMENSION), 1)
        effects = node.core.drain()
        kinds = [type(effect) for effect in effects]
        assert kinds.index(SignedSlot) < kinds.index(Broadcast)
        node.core.effects = effects  # executed as the node would: in order
        pages = node.store._db.execute("PRAGMA page_count").fetchone()[0]
        node.store._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(DiskFull):
            await node._execute()
        assert transport.sent == []
        assert node.store.restore().signed == {}
    finally:
        node.store.close()


async def test_a_node_whose_database_never_recorded_a_signature_starts_abstaining(tmp_path):
    """The Trio node starts its core abstaining on a database that has recorded no signature (new,
    or put in place of a damaged one), and not on one that has."""
    identities = [Identity.from_seed(bytes([8, index]) * 16) for index in range(4)]
    genesis = Genesis(
        "driver-test-abstain",
        tuple(Member(f"m{index}", identity.public_key, "127.0.0.1", 9200 + index) for index, identity in enumerate(identities)),
        ModelSpec("synthetic", 8, 0),
        "median",
        {},
    )
    with Store(tmp_path / "guarded", genesis, identities[0].public_key) as store:
        store.sign(("prevote", 1, 0), bytes(32))
    for directory, abstaining in (("new", True), ("guarded", False)):
        settings = NodeSettings(data_dir=tmp_path / directory, listen=("127.0.0.1", 0))
        node = Node(genesis, identities[0], build_workload(genesis, 0, WorkloadConfig()), settings)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            assert node.core is not None and node.core.abstaining is abstaining
            nursery.cancel_scope.cancel()
