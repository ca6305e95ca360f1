"""The honest members of a core fuzzer as their drivers see them: the core, what its store made
durable (`Durable`, modelled on `qora_p2p.node.store`), the work handed to the driver, and the
handler through which every effect the core emits is executed and checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qora_p2p.identity import CachingVerifier, Identity
from qora_p2p.protocol.core import NodeCore
from qora_p2p.protocol.effects import (
    Broadcast,
    Commit,
    Compute,
    Event,
    Installed,
    Penalize,
    Raw,
    Send,
    SignedSlot,
    Slot,
    Train,
)
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.limits import RECORDS_WINDOW
from qora_p2p.protocol.messages import Message, Record
from qora_p2p.protocol.state import AgreedState, genesis_state
from tests.protocol.fuzz_properties import check

if TYPE_CHECKING:
    from tests.protocol.fuzz_harness import CoreFuzzer

__all__ = ["VERIFY_CACHE_MAX", "Durable", "Honest", "Setup"]

VERIFY_CACHE_MAX = 1 << 16
SLOT_ROUNDS_KEPT = 2  # rounds behind its committed state whose slots a member's record keeps


@dataclass(frozen=True)
class Setup:
    """A network: its genesis, every member's identity, and which members run an honest core."""

    name: str
    genesis: Genesis
    identities: tuple[Identity, ...]
    honest: tuple[int, ...]


class Durable:
    """What a member's store holds (`qora_p2p.node.store`): the committed state and records, and
    the slots signed in the round in progress (refusing a second content, as the store does)."""

    def __init__(self, state: AgreedState) -> None:
        self.state = state
        self.records: dict[int, Record] = {}
        self.signed: dict[Slot, tuple[bytes, bytes | None]] = {}

    def sign(self, member: int, effect: SignedSlot) -> None:
        earlier = self.signed.get(effect.slot)
        check(
            earlier is None or earlier[0] == effect.content,
            f"member {member}'s store refuses a second content for {effect.slot}",
        )
        if earlier is None:
            self.signed[effect.slot] = (effect.content, effect.payload)

    def install(self, records: Sequence[Record], state: AgreedState) -> None:
        for record in records:
            self.records[record.value.round] = record
        if len(self.records) > RECORDS_WINDOW:
            for old in sorted(self.records)[: len(self.records) - RECORDS_WINDOW]:
                del self.records[old]
        self.state = state
        self.signed = {slot: held for slot, held in self.signed.items() if slot[1] > state.round}

    def core(self, genesis: Genesis, identity: Identity, now_ms: int, verifier: CachingVerifier) -> NodeCore:
        """A core restarted from this store, as `Store.restore` would start it."""
        current = self.state.round + 1
        signed = {slot: content for slot, (content, _) in self.signed.items() if slot[1] == current}
        own_payload = self.signed.get(("update", current, 0), (b"", None))[1]
        records = [self.records[number] for number in sorted(self.records)]
        return NodeCore(
            genesis,
            identity,
            state=self.state,
            now_ms=now_ms,
            signed=signed,
            own_payload=own_payload,
            records=records,
            verifier=verifier,
        )


class Honest:
    """One honest member as its driver sees it: the core, its store, and work handed to the driver."""

    def __init__(self, fuzzer: CoreFuzzer, index: int) -> None:
        self.fuzzer, self.index = fuzzer, index
        self.identity = fuzzer.setup.identities[index]
        self.durable = Durable(genesis_state(fuzzer.genesis))
        self.slots: dict[Slot, bytes] = {}  # every slot this member ever signed, across restarts
        self.computes: list[Compute] = []
        self.trains: list[Train] = []
        self.inbox: list[tuple[int, Message]] = []  # (sender, message) in flight to this member
        self.core = self.durable.core(fuzzer.genesis, self.identity, fuzzer.now, fuzzer.verifier)

    # The `EffectHandler` of this member: every effect is executed through `effects.execute`.

    def send(self, effect: Send) -> None:
        self.fuzzer.route(self, effect.peer, effect.message)
        self.fuzzer.knowledge.learn(effect.message)

    def broadcast(self, effect: Broadcast) -> None:
        for peer in range(self.fuzzer.genesis.size):
            if peer != self.index:
                self.fuzzer.route(self, peer, effect.message)
        self.fuzzer.knowledge.learn(effect.message)

    def raw(self, effect: Raw) -> None:
        raise AssertionError(f"an honest core emitted raw bytes to {effect.peer}")

    def signed_slot(self, effect: SignedSlot) -> None:
        earlier = self.slots.setdefault(effect.slot, effect.content)
        check(
            earlier == effect.content,
            f"double signing: member {self.index} signed {effect.slot} for {earlier.hex()} and {effect.content.hex()}",
        )
        self.durable.sign(self.index, effect)

    def train(self, effect: Train) -> None:
        self.trains.append(effect)

    def compute(self, effect: Compute) -> None:
        self.computes.append(effect)

    def commit(self, effect: Commit) -> None:
        self.fuzzer.committed(self, effect)

    def installed(self, effect: Installed) -> None:
        self.fuzzer.installed(self, effect)

    def event(self, effect: Event) -> None:
        self.fuzzer.stats[f"event {effect.kind}"] += 1
        if effect.kind == "equivocation":
            culprit = effect.fields["culprit"]
            check(
                culprit not in self.fuzzer.setup.honest,
                f"member {self.index} holds evidence against honest member {culprit}",
            )

    def penalize(self, effect: Penalize) -> None:
        self.fuzzer.stats["penalty"] += 1
        if self.fuzzer.safe:
            check(
                effect.peer not in self.fuzzer.setup.honest,
                f"member {self.index} penalised honest member {effect.peer}: {effect.reason}",
            )

    def forget_slots(self) -> None:
        oldest = self.durable.state.round - SLOT_ROUNDS_KEPT
        self.slots = {slot: content for slot, content in self.slots.items() if slot[1] >= oldest}
