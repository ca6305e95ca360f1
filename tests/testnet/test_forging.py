"""A forging attacker sees what a real one sees: other members' updates of the round it trains on
(one per sender, its own and other chains' ignored, memory bounded), and a view attack waits for
n - f - 1 of them or its deadline, never longer."""

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from qora_p2p.identity import Identity
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.messages import Update
from qora_p2p.protocol.state import genesis_state
from qora_p2p.testnet.forging import CHAINS_PER_ROUND_MAX, Forger

IDENTITIES = [Identity.from_seed(hashlib.sha256(f"forging-{i}".encode()).digest()) for i in range(7)]
GENESIS = Genesis(
    "forging",
    tuple(Member(f"m{i}", identity.public_key, "127.0.0.1", 7100 + i) for i, identity in enumerate(IDENTITIES)),
    ModelSpec("synthetic", 4),
    "median",
    {},
)
STATE = genesis_state(GENESIS)


@dataclass
class Config:
    view_wait_ms: int = 60_000
    colluder_members: tuple[int, ...] = ()


@dataclass
class FakeWorkload:
    """The parts of a Workload the forger uses; `forge` records what it was given."""

    wants_view: bool = True
    member: int = 0
    genesis: Genesis = GENESIS
    config: Config = field(default_factory=Config)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def forge(self, own: Any, others: dict[int, bytes], state: Any) -> bytes:
        self.calls.append((own, others, state))
        return b"forged"


def update(sender: int, round_number: int = 1, prev_hash: bytes = STATE.last_hash, fill: int = 1) -> Update:
    return Update.create(IDENTITIES[sender], GENESIS.hash, round_number, prev_hash, sender, bytes([fill + sender]) * 16)


async def test_a_view_attack_forges_once_n_minus_f_minus_one_others_arrived():
    """n = 7, f = 2: the forgery waits for 4 others' updates of this round and chain, no more; its
    own update, a repeat and another chain's update do not count."""
    workload = FakeWorkload()
    forger = Forger(workload)  # type: ignore[arg-type]
    forger.begin(1, STATE)
    result: list[bytes] = []

    async def forge() -> None:
        result.append(await forger.forge(1, np.zeros(4), STATE))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(forge)
        for message in (update(0), update(1), update(1, fill=9), update(2, prev_hash=bytes(32)), update(2), update(3)):
            forger.observe(message.sender, message)
            await trio.testing.wait_all_tasks_blocked()
        assert result == [], "three others are not enough"
        forger.observe(5, update(5))
    assert result == [b"forged"]
    (_, others, _), = workload.calls
    assert others == {sender: update(sender).payload for sender in (1, 2, 3, 5)}


async def test_a_coalitions_updates_do_not_count_towards_the_wait():
    """n = 7, f = 2, coalition {0, 4, 6}: colluders' updates are held (the view leaves them out)
    but the forgery still waits for 4 updates from members outside the coalition."""
    workload = FakeWorkload(config=Config(colluder_members=(0, 4, 6)))
    forger = Forger(workload)  # type: ignore[arg-type]
    forger.begin(1, STATE)
    result: list[bytes] = []

    async def forge() -> None:
        result.append(await forger.forge(1, np.zeros(4), STATE))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(forge)
        for sender in (4, 6, 1, 2, 3):
            forger.observe(sender, update(sender))
            await trio.testing.wait_all_tasks_blocked()
        assert result == [], "three honest updates are not enough, whatever the colluders sent"
        forger.observe(5, update(5))
    assert result == [b"forged"]
    assert set(workload.calls[0][1]) == {1, 2, 3, 4, 5, 6}


async def test_a_view_attack_forges_at_its_deadline_with_what_it_has(autojump_clock):
    """With too few others in time, the forgery goes out after view_wait_ms with what arrived."""
    workload = FakeWorkload(config=Config(view_wait_ms=2_000))
    forger = Forger(workload)  # type: ignore[arg-type]
    forger.begin(1, STATE)
    forger.observe(1, update(1))
    started = trio.current_time()
    assert await forger.forge(1, np.zeros(4), STATE) == b"forged"
    assert 2.0 <= trio.current_time() - started < 2.1
    assert workload.calls[0][1] == {1: update(1).payload}


async def test_updates_that_arrive_while_training_or_early_are_kept_and_old_rounds_dropped():
    """Updates of the next round seen before its training starts are used; older rounds are
    forgotten at the next begin, and invented chains are capped per round."""
    workload = FakeWorkload(wants_view=False)
    forger = Forger(workload)  # type: ignore[arg-type]
    forger.begin(1, STATE)
    for sender in range(1, 7):
        forger.observe(sender, update(sender, round_number=2, prev_hash=bytes([sender]) * 32))
    assert sum(1 for round_number, _ in forger.seen if round_number == 2) == CHAINS_PER_ROUND_MAX
    forger.observe(1, update(1, round_number=3))  # two rounds ahead: not kept
    assert all(round_number <= 2 for round_number, _ in forger.seen)
    chain = bytes([1]) * 32
    next_state = genesis_state(GENESIS).committed(chain)
    forger.begin(2, next_state)
    assert await forger.forge(2, np.zeros(4), next_state) == b"forged"
    assert workload.calls[0][1] == {1: update(1, round_number=2, prev_hash=chain).payload}
    forger.begin(3, next_state)
    assert all(round_number >= 3 for round_number, _ in forger.seen)
