"""Liveness of unmodified cores with members down: whatever the ledger has banned, and without a
timeout per round for a member that stays silent.

The cores run on a tiny deterministic network (instant delivery, time jumps to the earliest
deadline when nothing is in flight), so the times below are protocol time, not wall time."""

import dataclasses
import hashlib
from collections import deque
from itertools import pairwise

import numpy as np

from qora_p2p.errors import QoraError
from qora_p2p.identity import Identity
from qora_p2p.protocol.core import NodeCore
from qora_p2p.protocol.effects import Broadcast, Commit, Compute, Installed, Send, Train
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.ledger import Standing
from qora_p2p.protocol.state import compute_round, genesis_state

IDENTITIES = [Identity.from_seed(hashlib.sha256(f"liveness-{i}".encode()).digest()) for i in range(4)]
GENESIS = Genesis(
    "liveness",
    tuple(Member(f"m{i}", identity.public_key, "127.0.0.1", 7100 + i) for i, identity in enumerate(IDENTITIES)),
    ModelSpec("synthetic", 4),
    "median",
    {},
)


class Network:
    """Cores of the members that are up; messages to members that are down are lost."""

    def __init__(self, up, state, train_ms=None):
        self.now = 0
        self.train_ms = train_ms or {}  # member -> round -> training time (others train instantly)
        self.later: list[tuple[int, int, tuple]] = []  # (due, member, item)
        self.cores = {member: NodeCore(GENESIS, IDENTITIES[member], state=state, now_ms=0) for member in up}
        self.commits: dict[int, list[tuple[int, int]]] = {member: [] for member in up}  # (round, time)
        self.records: dict[int, list] = {member: [] for member in up}
        self.inbox: deque = deque()
        for member in up:
            self._effects(member)

    def _effects(self, member):
        core = self.cores[member]
        for effect in core.drain():
            if isinstance(effect, Broadcast):
                self.inbox.extend((peer, member, effect.message) for peer in self.cores if peer != member)
            elif isinstance(effect, Send):
                if effect.peer in self.cores:
                    self.inbox.append((effect.peer, member, effect.message))
            elif isinstance(effect, Train):
                payload = np.full(4, member + 1, dtype="<i4").tobytes()
                item = (member, None, ("train", effect.round, payload))
                if member in self.train_ms:
                    self.later.append((self.now + self.train_ms[member](effect.round), member, item))
                else:
                    self.inbox.append(item)
            elif isinstance(effect, Compute):
                try:
                    result = compute_round(GENESIS, effect.state, effect.senders, effect.payloads, effect.culprits)
                except QoraError as error:
                    self.inbox.append((member, None, ("failed", effect.request, str(error))))
                else:
                    self.inbox.append((member, None, ("computed", effect.request, result)))
            elif isinstance(effect, Commit):
                self.commits[member].append((effect.record.value.round, self.now))
                self.records[member].append((effect.record, effect.state.model.copy()))
            elif isinstance(effect, Installed):
                self.commits[member].extend((record.value.round, self.now) for record in effect.records)

    def run_until(self, rounds, limit_ms=600_000):
        while min(len(commits) for commits in self.commits.values()) < rounds:
            assert self.now <= limit_ms, f"no progress by {limit_ms} ms: {self.commits}"
            if self.inbox:
                receiver, sender, message = self.inbox.popleft()
                core = self.cores[receiver]
                if sender is not None:
                    core.receive(sender, message, self.now)
                elif message[0] == "train":
                    core.submit_update(message[1], message[2], self.now)
                elif message[0] == "computed":
                    core.computed(message[1], message[2], self.now)
                else:
                    core.compute_failed(message[1], message[2], self.now)
                self._effects(receiver)
                continue
            due = [self.later.pop(index) for index in reversed(range(len(self.later))) if self.later[index][0] <= self.now]
            if due:
                self.inbox.extend(item for _, _, item in sorted(due, key=lambda entry: entry[:2]))
                continue
            deadlines = [core.next_deadline() for core in self.cores.values()] + [at for at, _, _ in self.later]
            self.now = max(self.now + 1, min(deadlines))
            for member, core in self.cores.items():
                if core.next_deadline() <= self.now:
                    core.handle_timer(self.now)
                    self._effects(member)


def test_rounds_commit_with_one_member_banned_and_another_down():
    """Member 1 is honest but under a reputation ban, member 2 is down: only 0 and 3 are eligible
    and up, fewer than n - f. The banned member's update still counts towards the round's inputs,
    so rounds commit (null rounds: the model stays) until the ban expires; then training resumes."""
    state = genesis_state(GENESIS)
    assert state.ledger is not None
    standings = list(state.ledger.standings)
    standings[1] = Standing(0, 3, False)  # banned through round 3
    state = dataclasses.replace(state, ledger=dataclasses.replace(state.ledger, standings=tuple(standings)))
    network = Network((0, 1, 3), state)
    network.run_until(5)
    models = {member: core.state.model.tobytes() for member, core in network.cores.items()}
    assert len(set(models.values())) == 1, "honest members agree"
    committed = network.records[0]
    assert [len(record.value.inputs) for record, _ in committed[:3]] == [3, 3, 3], "the banned member's update counts"
    # Rounds 1-3 could aggregate only members 0 and 3 (fewer than n - f): null rounds, the model
    # stays. From round 4 member 1 is readmitted and the model moves.
    assert all(not model.any() for _, model in committed[:3])
    assert committed[3][1].any(), "training resumed once the ban expired"


def test_a_silent_member_costs_one_round_not_every_round():
    """Member 0 never speaks. After the first round it misses, it is neither waited for nor first
    in the proposer order: later rounds take no collect or propose timeout (instant delivery here,
    so a round without a timeout takes 0 ms)."""
    network = Network((1, 2, 3), genesis_state(GENESIS))
    network.run_until(12)
    times = [time for _, time in network.commits[1]]
    durations = [later - earlier for earlier, later in pairwise(times)]
    timing = GENESIS.timing
    assert times[0] >= timing.collect_timeout_ms, "the first round waits for the member it has not missed yet"
    assert max(durations[1:]) < timing.collect_timeout_ms, durations


def test_a_slow_member_is_still_waited_for():
    """Member 3 trains 200 ms longer than the others (within the 500 ms straggler wait), and 800 ms
    in round 1, so it misses round 1. It keeps speaking, so the proposer waits for it again: it is
    an input of every later round (a silent member is not waited for, a slow one is)."""
    network = Network((0, 1, 2, 3), genesis_state(GENESIS), train_ms={3: lambda number: 800 if number == 1 else 200})
    network.run_until(8)
    included = [3 in {sender for sender, _ in record.value.inputs} for record, _ in network.records[0]]
    assert included[0] is False and all(included[1:]), included
