"""A member whose last-signed guard is new (its database lost) abstains: it signs nothing in a round
it may have signed in before, the network goes on without it and it rejoins; a network of members
that all start new still commits, also with a member that lies about its round or stays silent."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import pytest

from qora_p2p.errors import LocalProtocolError, QoraError
from qora_p2p.protocol.core import NodeCore
from qora_p2p.protocol.effects import (
    Broadcast,
    Commit,
    Compute,
    Event,
    Installed,
    Send,
    SignedSlot,
    Slot,
    Train,
)
from qora_p2p.protocol.messages import Hello, Message, Proposal, StateSnapshot, SyncRequest, SyncResponse, Update, Value
from qora_p2p.protocol.state import compute_round, genesis_state, snapshot_bytes
from tests.protocol.test_core import GENESIS, IDENTITIES, certified, fresh

RUN_TIME_MAX_MS = 1_200_000  # virtual time a run may take before the test gives up
RUN_STEPS_MAX = 200_000  # deliveries, work items and timers a run may take (links are instant: time barely moves)


def payload_of(member: int, round_number: int) -> bytes:
    """A member's update: small fixed-point values that differ per member and round."""
    return b"".join((100 * (member + 1) + round_number + coordinate).to_bytes(4, "little", signed=True) for coordinate in range(4))


def kinds(effects) -> list[str]:
    return [type(effect).__name__ for effect in effects]


def events(effects, name: str) -> list[Event]:
    return [effect for effect in effects if isinstance(effect, Event) and effect.kind == name]


# ------------------------------------------------------------------------------------- one core


def test_a_new_guard_signs_nothing_until_past_the_round_peers_were_in():
    """Member 1 committed round 2 and signed its update for round 3, then lost its database. Started
    again with abstain=True, it hears that its peers are in round 3, catches up to round 2 and sees
    round 3's proposal: it asks for no training, signs no update and no vote (round 3 is one it may
    have signed in, and so is round 4: a peer may be one round behind it). Once round 4 is
    committed it trains for round 5. Without abstaining it trains for round 3 at once."""
    first, after_first = certified(genesis_state(GENESIS), 1)
    second, after_second = certified(after_first, 2)
    third, after_third = certified(after_second, 3)
    fourth, after_fourth = certified(after_third, 4)
    node = fresh(me=1, abstain=True)
    effects = node.drain()
    assert "Train" not in kinds(effects) and events(effects, "abstain_started")
    for peer in (0, 2, 3):
        node.receive(peer, Hello(1, 3, after_second.last_hash), 1)
    assert node.abstention.claimed_round() == 3
    node.drain()

    def catch_up(records, state, now):
        node.receive(0, Hello(1, state.round + 1, state.last_hash), now)  # ignored as a claim, asks to sync
        *_, asked = [effect.peer for effect in node.drain() if isinstance(effect, Send) and isinstance(effect.message, SyncRequest)]
        node.receive(asked, SyncResponse(records, StateSnapshot(state.round, *snapshot_bytes(state))), now + 1)
        effects = node.drain()
        assert any(isinstance(effect, Installed) for effect in effects) and node.state.round == state.round
        return effects

    effects = catch_up((first, second), after_second, 2_000)
    assert node.round.number == 3 and node.abstaining
    assert not {"Train", "SignedSlot"} & set(kinds(effects))
    # Round 3: the others' updates and the view-0 proposal; our verdict would be a signed prevote.
    updates = [Update.create(IDENTITIES[sender], GENESIS.hash, 3, after_second.last_hash, sender, payload_of(sender, 3)) for sender in (0, 2, 3)]
    for update in updates:
        node.receive(update.sender, update, 2_010)
    result = compute_round(GENESIS, after_second, [0, 2, 3], [update.payload for update in updates])
    value = Value(3, after_second.last_hash, tuple((update.sender, update.digest) for update in updates), (), result.model_digest, result.ledger_digest)
    proposer = node.round.agreement.proposer(0)
    assert proposer != 1, "member 1 would propose: pick another round layout"
    node.receive(proposer, Proposal.create(IDENTITIES[proposer], GENESIS.hash, 0, -1, proposer, value), 2_020)
    (compute,) = [effect for effect in node.drain() if isinstance(effect, Compute)]
    node.computed(compute.request, result, 2_030)
    node.submit_update(3, payload_of(1, 3), 2_040)  # a training that was already running: refused too
    effects = node.drain()
    assert not {"SignedSlot", "Train"} & set(kinds(effects))
    assert not any(isinstance(effect, Broadcast) and hasattr(effect.message, "signature") for effect in effects)
    assert node.abstention.refused >= 2  # the update and the prevote

    effects = catch_up((third,), after_third, 4_000)
    assert node.round.number == 4 and node.abstaining and "Train" not in kinds(effects)
    effects = catch_up((fourth,), after_fourth, 6_000)
    assert not node.abstaining and events(effects, "abstain_ended")[0].fields["claimed_round"] == 3
    assert [effect.round for effect in effects if isinstance(effect, Train)] == [5]

    careless = fresh(me=1)
    assert [effect.round for effect in careless.drain() if isinstance(effect, Train)] == [1], "without abstaining it signs at once"


def test_one_lying_hello_cannot_keep_a_member_abstaining():
    """Peer 3 claims round 1000: while it is one of the two heard, the target is out of reach; once
    the third peer is heard the (f + 1)-th highest round counts and the lie drops out."""
    node = fresh(me=1, abstain=True)
    node.drain()
    node.receive(3, Hello(1, 1000, bytes(32)), 1)
    assert node.abstention.claimed_round() is None
    node.receive(0, Hello(1, 1, bytes(32)), 2)
    assert node.abstention.claimed_round() == 1000 and node.abstaining
    node.receive(2, Hello(1, 1, bytes(32)), 3)
    assert node.abstention.claimed_round() == 1 and not node.abstaining
    assert [effect.round for effect in node.drain() if isinstance(effect, Train)] == [1]


def test_an_abstaining_core_cannot_be_given_signed_slots():
    """A guard that holds slots is not new: asking such a core to abstain is a caller's bug."""
    with pytest.raises(LocalProtocolError, match="not new"):
        fresh(abstain=True, signed={("update", 1, 0): bytes(32)})


# ------------------------------------------------------------------------------------- a network


@dataclass
class Member:
    core: NodeCore
    signed: list[Slot] = field(default_factory=list)
    committed: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class Network:
    """Four cores on instant, ordered links (a sans-IO driver of the smallest kind): messages,
    training, round transitions and timers, in virtual time. ``hello`` says what a member's Hello
    says to the others when they connect."""

    def __init__(self, cores: dict[int, NodeCore], hello: Callable[[int, Hello], Hello] = lambda member, hello: hello) -> None:
        self.members = {index: Member(core) for index, core in cores.items()}
        self.hello = hello
        self.queue: deque[tuple[int, int, Message]] = deque()
        self.work: deque[Callable[[], None]] = deque()
        self.now = 0
        for index in cores:
            self.connect(index)

    def connect(self, index: int) -> None:
        """Channels between ``index`` and every other member come up: both send their Hello."""
        for other in self.members:
            if other != index:
                self.queue.append((other, index, self.hello(index, self.members[index].core.hello())))
                self.queue.append((index, other, self.hello(other, self.members[other].core.hello())))

    def replace(self, index: int, core: NodeCore) -> None:
        """Member ``index`` restarts with ``core``: what was in flight to or from it is lost."""
        self.queue = deque(item for item in self.queue if index not in item[:2])
        self.members[index] = Member(core)
        self.run_effects(index)
        self.connect(index)

    def run_effects(self, index: int) -> None:
        member = self.members[index]
        core = member.core
        for effect in core.drain():
            if isinstance(effect, Send):
                self.queue.append((effect.peer, index, effect.message))
            elif isinstance(effect, Broadcast):
                self.queue.extend((peer, index, effect.message) for peer in self.members if peer != index)
            elif isinstance(effect, SignedSlot):
                member.signed.append(effect.slot)
            elif isinstance(effect, Train):
                self.work.append(partial(self.train, core, index, effect.round))
            elif isinstance(effect, Compute):
                self.work.append(partial(self.compute, core, effect))
            elif isinstance(effect, Commit):
                member.committed.append(effect.record.value.id(GENESIS.hash))
            elif isinstance(effect, Installed):
                member.committed.extend(record.value.id(GENESIS.hash) for record in effect.records)
            elif isinstance(effect, Event):
                member.events.append(effect)

    def train(self, core: NodeCore, index: int, round_number: int) -> None:
        core.submit_update(round_number, payload_of(index, round_number), self.now)

    def compute(self, core: NodeCore, effect: Compute) -> None:
        try:
            result = compute_round(GENESIS, effect.state, effect.senders, effect.payloads, effect.culprits)
        except QoraError as error:
            core.compute_failed(effect.request, str(error), self.now)
        else:
            core.computed(effect.request, result, self.now)

    def run_until(self, done: Callable[[], bool]) -> None:
        """Deliver, work and fire timers until ``done`` (or fail when time or steps run out)."""
        deadline = self.now + RUN_TIME_MAX_MS
        for _ in range(RUN_STEPS_MAX):
            if done():
                return
            assert self.now < deadline, {index: member.core.status() for index, member in self.members.items()}
            if self.queue:
                receiver, sender, message = self.queue.popleft()
                if receiver in self.members and sender in self.members:
                    self.members[receiver].core.receive(sender, message, self.now)
                    self.run_effects(receiver)
            elif self.work:
                self.work.popleft()()
                for index in self.members:
                    self.run_effects(index)
            else:
                index, due = min(((index, member.core.next_deadline()) for index, member in self.members.items()), key=lambda item: item[1])
                self.now = max(self.now, due)
                self.members[index].core.handle_timer(self.now)
                self.run_effects(index)
        raise AssertionError(f"not done after {RUN_STEPS_MAX} steps: {[member.core.status() for member in self.members.values()]}")

    def committed(self, rounds: int) -> bool:
        return all(len(member.committed) >= rounds for member in self.members.values())


def new(me: int, now: int = 0, abstain: bool = True) -> NodeCore:
    return NodeCore(GENESIS, IDENTITIES[me], state=genesis_state(GENESIS), now_ms=now, abstain=abstain)


def lying_hello(liar: int) -> Callable[[int, Hello], Hello]:
    return lambda member, hello: Hello(hello.version, 1000, hello.last_hash) if member == liar else hello


@pytest.mark.parametrize(
    ("members", "hello"),
    [
        pytest.param((0, 1, 2, 3), lambda member, hello: hello, id="all-four"),
        pytest.param((0, 1, 2, 3), lying_hello(3), id="one-claims-round-1000"),
        pytest.param((0, 1, 2), lambda member, hello: hello, id="one-silent"),
    ],
)
def test_a_network_whose_members_all_start_new_still_commits(members, hello):
    """Every member abstains at start; the Hellos show nobody past round 1, so each begins at once
    and the network commits 3 identical rounds, with every live member's update in them."""
    network = Network({index: new(index) for index in members}, hello)
    network.run_until(lambda: network.committed(3))
    chains = {tuple(member.committed[:3]) for member in network.members.values()}
    assert len(chains) == 1
    for member in network.members.values():
        assert [event.fields["why"] for event in member.events if event.kind == "abstain_ended"] == ["no member is known past round 1: a new network"]
        assert {slot[1] for slot in member.signed if slot[0] == "update"} >= {1, 2, 3}


def test_a_member_that_lost_its_database_mid_round_never_signs_that_round_again():
    """Member 2 signs its update for round 4 and then loses its database. Restarted with a new
    guard, it signs nothing in any round up to 4 (nor in round 5: a peer may have been a round
    behind it); the others commit without it meanwhile, and it rejoins: it signs again from round
    6 on and commits the same chain. Without abstaining it would sign round 1's update at once."""
    lost_in = 4
    network = Network({index: new(index, abstain=False) for index in range(4)})
    network.run_until(lambda: ("update", lost_in, 0) in network.members[2].signed)
    network.replace(2, new(2, network.now))
    restarted = network.members[2]
    network.run_until(lambda: len(restarted.committed) >= lost_in + 5)
    (ended,) = [event for event in restarted.events if event.kind == "abstain_ended"]
    assert ended.fields["claimed_round"] == lost_in and ended.fields["committed"] == lost_in + 1
    assert min(slot[1] for slot in restarted.signed) == lost_in + 2
    assert {("update", number, 0) for number in range(lost_in + 2, lost_in + 6)} <= set(restarted.signed)
    assert restarted.committed == network.members[0].committed[: len(restarted.committed)]


def _late_fourth_member(crash_when_signing: bool) -> tuple[Network, int]:
    """Members 0-2 start new and commit round 1 before member 3 connects (a process that came up a
    moment late, as `LocalCluster.start` may make it on a loaded machine); member 3 starts new too.
    Its peers' first Hellos say round 2, so it cannot tell a first start from a restart that lost
    its database: it abstains until it has committed round 3. Member 2 crashes once members 0-2
    have committed round 2 and, if ``crash_when_signing``, member 3 has stopped abstaining."""
    network = Network({index: new(index) for index in range(3)})
    network.run_until(lambda: network.committed(1))
    network.replace(3, new(3, network.now))
    late = network.members[3]

    def signing() -> bool:
        return any(event.kind == "abstain_ended" for event in late.events)

    network.run_until(lambda: all(len(network.members[index].committed) >= 2 for index in range(3)) and (signing() or not crash_when_signing))
    crashed_at = len(network.members[2].committed)
    del network.members[2]
    network.queue = deque(item for item in network.queue if 2 not in item[:2])
    return network, crashed_at


def test_a_late_member_that_abstains_is_the_fault_the_network_tolerates():
    """Member 3 joins a new network after round 1 and abstains (its peers said round 2); while it
    does, a crash of member 2 leaves two members that sign, fewer than a quorum of three: the
    rounds stop, by design (two faults with f = 1), and member 3 is still abstaining. Once member 3
    signs, the same crash leaves a quorum: members 0, 1 and 3 go on. (A process test that kills a
    member must first wait for every member's ``abstain_ended``.)"""
    stalled, crashed_at = _late_fourth_member(crash_when_signing=False)
    assert crashed_at == 2 and stalled.members[3].core.abstaining
    with pytest.raises(AssertionError):
        stalled.run_until(lambda: len(stalled.members[0].committed) > crashed_at)
    assert all(len(member.committed) == crashed_at for member in stalled.members.values())
    assert stalled.members[3].core.abstaining and not any(slot[1] <= crashed_at + 1 for slot in stalled.members[3].signed)

    network, crashed_at = _late_fourth_member(crash_when_signing=True)
    (ended,) = events(network.members[3].events, "abstain_ended")
    assert ended.fields["claimed_round"] == 2 and ended.fields["committed"] == 3
    network.run_until(lambda: network.committed(crashed_at + 3))
    assert network.members[3].committed[: crashed_at + 3] == network.members[0].committed[: crashed_at + 3]
