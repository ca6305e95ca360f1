"""Poisoned updates on a test network: the node's forge hook for a member running a learning attack.

Theory of operation
-------------------
An honest node signs what its workload trained. A test-network attacker plugs a `Forger` into the
node's hooks (`qora_p2p.node.driver.NodeHooks`): it observes every message delivered to the
member's core and keeps the other members' updates of the round (what a real attacker sees), and
when the member has trained, it replaces the update with the attack's forgery
(`qora_p2p.node.workload.Workload.forge`), from the same `RoundView` the in-process federation
gives its attackers. Attacks that forge from others' updates (`Attack.wants_view`) wait until
``n - f - 1`` of them arrived from outside the member's coalition (at most all of those) or
``view_wait_ms`` passed.

Bounds: one update per other member per round is kept, and only for the round being forged.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import trio

from qora_p2p.node.workload import Workload
from qora_p2p.protocol.messages import Message, Update
from qora_p2p.protocol.state import AgreedState

__all__ = ["Forger"]


CHAINS_PER_ROUND_MAX = 4  # distinct prev_hash values kept per round (Byzantine senders may invent more)


class Forger:
    """One attacking member's view of the round and its forgery (the node's forge hook)."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        genesis = workload.genesis
        self.me = workload.member
        # Colluders' updates are forgeries, never honest rows of the view: they do not count.
        self.coalition = frozenset(workload.config.colluder_members) | {self.me}
        self.wanted = min(genesis.size - genesis.faulty - 1, genesis.size - len(self.coalition))  # honest updates a view attack waits for
        self.begun = 0  # the round whose training started last
        self.current: tuple[int, bytes] = (0, b"")  # (round, prev_hash) being forged
        self.seen: dict[tuple[int, bytes], dict[int, bytes]] = {}  # -> sender -> payload
        self.arrived = trio.Event()

    def observe(self, peer: int, message: Message) -> None:
        """Every message delivered to the core (on the Trio thread, before the core sees it): keeps
        other members' updates of the round being trained and of the next one."""
        if not isinstance(message, Update) or message.sender == self.me:
            return
        if not self.begun <= message.round <= self.begun + 1:
            return
        key = (message.round, message.prev_hash)
        held = self.seen.get(key)
        if held is None:
            if sum(1 for round_number, _ in self.seen if round_number == message.round) >= CHAINS_PER_ROUND_MAX:
                return
            held = self.seen[key] = {}
        if message.sender in held:
            return
        held[message.sender] = message.payload
        if key == self.current and self._honest(held) >= self.wanted:
            self.arrived.set()

    def _honest(self, held: dict[int, bytes]) -> int:
        return sum(1 for sender in held if sender not in self.coalition)

    def begin(self, round_number: int, state: AgreedState) -> None:
        """Training for ``round_number`` on ``state`` started: forget older rounds."""
        self.begun, self.current = round_number, (round_number, state.last_hash)
        self.seen = {key: held for key, held in self.seen.items() if key[0] >= round_number}
        self.arrived = trio.Event()
        if self._honest(self.seen.get(self.current, {})) >= self.wanted:
            self.arrived.set()

    async def forge(self, round_number: int, update: npt.NDArray[np.float64], state: AgreedState) -> bytes:
        """The payload to sign for ``round_number`` instead of ``update`` (trained on ``state``)."""
        if self.current != (round_number, state.last_hash):
            self.begin(round_number, state)
        if self.workload.wants_view and not self.arrived.is_set():
            with trio.move_on_after(self.workload.config.view_wait_ms / 1000):
                await self.arrived.wait()
        others = dict(self.seen.get(self.current, {}))
        return await trio.to_thread.run_sync(self.workload.forge, update, others, state)
