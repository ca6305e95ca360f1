"""The shipped adversaries: protocol-level attacks on the mechanisms an outside review found weak.

Theory of operation
-------------------
Each adversary (`qora_p2p.sim.adversary`) is a Byzantine member; most run an honest core and
deviate where the attack needs it, with what an omniscient attacker sees (every honest message).
They are named in `ADVERSARIES`, so ``SimConfig(adversary=name)`` (``qora-sim --adversary``) runs
them from a printable configuration, and what they must never achieve is what the checkers check.

=======================  ===========================================================================
adversary                what the member does
=======================  ===========================================================================
refused_payload          signs updates whose payload the fixed-point decoder refuses (int32 -2**31:
                         everywhere, first, or one random coordinate), sends them instead of its
                         own, answers fetches with them and, as proposer, lists them in its value
equivocating_precommits  splits its precommit per member (the value, nil, another value, or nil then
                         the value), and pushes certificates of exactly a quorum (its signature in
                         them) to the members it told otherwise, plus certificates one signature
                         short to everyone
stripped_history         serves catch-up with the genuine records and snapshot, but strips the
                         certificates of all records but the last; and makes laggards ask it
forged_history           serves catch-up with forged but linked earlier records, a forged last
                         certificate, repeated rounds, a mismatching snapshot, or the response
                         twice; pushes forged records; sends unsolicited sync responses
bogus_digests            as proposer, lists digests no one holds (so validators fetch in vain), and
                         announces that it holds every update
update_versions          signs two updates of the round for every member, different for each one
                         (more versions than the two a member keeps as proof of equivocation)
flood_updates            every 300 ms, full-size signed updates of the next two rounds to every
                         member (the next round's buffer, and catch-up requests for the one after)
flood_sync               every 100 ms, sync requests for every record and the state to every member
                         (a small request, a large answer)
far_ahead                no core: every 250 ms claims (Hello, next-round vote) to be one or a
                         million rounds ahead, and never answers
silent_member            no core: never sends anything
=======================  ===========================================================================

Randomness comes from the `World`'s stream only, so an adversary run replays from its seed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from qora_p2p.protocol.effects import Broadcast, Effect, Send
from qora_p2p.protocol.messages import (
    NIL,
    PROTOCOL_VERSION,
    SYNC_RECORDS_MAX,
    Announce,
    Fetch,
    Hello,
    Precommit,
    Prevote,
    Proposal,
    Record,
    StateSnapshot,
    SyncRequest,
    SyncResponse,
    Update,
    Value,
)
from qora_p2p.protocol.state import snapshot_bytes
from qora_p2p.sim.adversary import Adversary, BaseAdversary, Observed, World

if TYPE_CHECKING:
    from qora_p2p.protocol.messages import Message

__all__ = ["ADVERSARIES", "ADVERSARY_NAMES"]

REFUSED_VALUE = -(2**31)  # the int32 the fixed-point decoder refuses (fixedpoint.from_bytes)
FLOOD_INTERVAL_MS = 100
FLOOD_UPDATES_EVERY = 3  # wakes between two bursts of updates (a burst signs, so it costs)
FLOOD_UPDATES_PER_ROUND = 2  # per burst, per round flooded (the next one, and the one after)
FLOOD_SYNC_REQUESTS = 1  # per wake, per member: ten a second, ten times an honest member's most
CLAIM_INTERVAL_MS = 250
FAR_AHEAD_ROUNDS = 1_000_000
GREETED_AGAIN_MS = 500  # a laggard is sent our Hello at most this often


def _digest(*parts: bytes) -> bytes:
    return hashlib.sha256(b"qora-sim/adversary/" + b"/".join(parts)).digest()


def _round_of(message: Message) -> int | None:
    """The round a message speaks of, if it names one."""
    if isinstance(message, Record):
        return message.value.round
    number = getattr(message, "round", None)
    return number if isinstance(number, int) else None


class _Greeter:
    """Makes laggards ask us for catch-up: an honest message two or more rounds behind our core's
    round, seen as it is sent, is answered at once with our Hello, which usually reaches the
    laggard before any honest member's help (and makes it ask us)."""

    def __init__(self) -> None:
        self.greeted: dict[int, int] = {}  # member -> when we last sent it our Hello

    def seen(self, seen: Observed, world: World) -> None:
        core = world.core
        message = seen.message
        number = message.first if isinstance(message, SyncRequest) else _round_of(message)
        # one round behind is ordinary lag (a record of ours catches it up); two is a laggard
        if core is None or number is None or isinstance(message, Record) or number >= core.round.number - 1:
            return
        if seen.at_ms - self.greeted.get(seen.sender, -GREETED_AGAIN_MS) >= GREETED_AGAIN_MS:
            self.greeted[seen.sender] = seen.at_ms
            world.send(seen.sender, core.hello())


class RefusedPayload(BaseAdversary):
    """Signed updates the fixed-point decoder refuses: admission must refuse them, a value listing
    one must be invalid, and nothing may crash."""

    def __init__(self) -> None:
        self.refused: dict[int, Update] = {}  # round -> our refused update of it

    def outgoing(self, effect: Effect, world: World) -> Sequence[Effect]:
        if isinstance(effect, Send | Broadcast) and isinstance(effect.message, Update) and effect.message.sender == world.me:
            return (replace(effect, message=self._refused(effect.message, world)),)
        if isinstance(effect, Broadcast) and isinstance(effect.message, Proposal) and effect.message.round in self.refused:
            return (Broadcast(self._listing(effect.message, self.refused[effect.message.round], world)),)
        return (effect,)

    def delivered(self, sender: int, data: bytes, message: Message | None, world: World) -> None:
        if isinstance(message, Fetch) and message.round in self.refused and any(member == world.me for member, _ in message.wanted):
            world.send(sender, self.refused[message.round])

    def _refused(self, update: Update, world: World) -> Update:
        earlier = self.refused.get(update.round)
        if earlier is not None and earlier.prev_hash == update.prev_hash:
            return earlier
        values = np.frombuffer(update.payload, dtype="<i4").copy()
        where = world.rng.randrange(3)
        if where == 0:
            values[:] = REFUSED_VALUE
        else:
            values[0 if where == 1 else world.rng.randrange(len(values))] = REFUSED_VALUE
        refused = Update.create(world.identity, world.genesis.hash, update.round, update.prev_hash, world.me, values.tobytes())
        self.refused[update.round] = refused
        return refused

    def _listing(self, proposal: Proposal, refused: Update, world: World) -> Proposal:
        value = proposal.value
        inputs = dict(value.inputs)
        inputs[world.me] = refused.digest
        forged = Value(value.round, value.prev_hash, tuple(sorted(inputs.items())), value.evidence, value.model_digest, value.ledger_digest)
        return Proposal.create(world.identity, world.genesis.hash, proposal.view, proposal.valid_view, proposal.proposer, forged)


class EquivocatingPrecommits(BaseAdversary):
    """Conflicting precommits per member, and certificates of exactly a quorum pushed to the
    members that hold our other precommit: every commit must still carry a quorum of valid
    signatures, and a certificate short of a quorum must be refused."""

    observes = True
    SPLIT = ("value", "nil", "other", "nil_then_value")

    def __init__(self) -> None:
        self.values: dict[bytes, Value] = {}
        self.targets: dict[tuple[int, int], list[int]] = {}  # (round, view) -> members told otherwise
        self.pushed: set[tuple[int, int, bytes]] = set()

    def observe(self, seen: Observed, world: World) -> None:
        message = seen.message
        if isinstance(message, Proposal):
            self.values.setdefault(message.value.id(world.genesis.hash), message.value)
        elif isinstance(message, Precommit) and message.value_id != NIL:
            key = (message.round, message.view, message.value_id)
            self._signatures(world).setdefault(key, {})[message.voter] = message.signature
            self._push(key, world)

    def outgoing(self, effect: Effect, world: World) -> Sequence[Effect]:
        message = effect.message if isinstance(effect, Broadcast) else None
        if isinstance(message, Proposal):
            self.values.setdefault(message.value.id(world.genesis.hash), message.value)
        if not isinstance(message, Precommit) or message.value_id == NIL:
            return (effect,)
        key = (message.round, message.view)
        split: dict[int, str] = world.coalition.setdefault(("precommit split", key), {peer: world.rng.choice(self.SPLIT) for peer in world.honest})
        nil = Precommit.create(world.identity, world.genesis.hash, message.round, message.view, NIL, world.me)
        other = Precommit.create(world.identity, world.genesis.hash, message.round, message.view, _digest(b"other", message.value_id), world.me)
        sends: list[Effect] = []
        for peer, told in sorted(split.items()):
            sends += [Send(peer, vote) for vote in {"value": (message,), "nil": (nil,), "other": (other,), "nil_then_value": (nil, message)}[told]]
        self.targets[key] = [peer for peer, told in sorted(split.items()) if told != "value"]
        self._signatures(world).setdefault((message.round, message.view, message.value_id), {})[world.me] = message.signature
        self._push((message.round, message.view, message.value_id), world)
        return sends

    def _signatures(self, world: World) -> dict[tuple[int, int, bytes], dict[int, bytes]]:
        shared: dict[tuple[int, int, bytes], dict[int, bytes]] = world.coalition.setdefault("precommits", {})
        return shared

    def _push(self, key: tuple[int, int, bytes], world: World) -> None:
        round_number, view, value_id = key
        signers = self._signatures(world).get(key, {})
        value = self.values.get(value_id)
        quorum = world.genesis.quorum
        targets = self.targets.get((round_number, view))
        if value is None or targets is None or key in self.pushed or len(signers) < quorum or not signers.keys() & set(world.byzantine):
            return
        self.pushed.add(key)
        ours = sorted(voter for voter in signers if voter in world.byzantine)
        theirs = sorted(voter for voter in signers if voter not in world.byzantine)
        chosen = sorted((ours + theirs)[:quorum])
        exact = Record(value, view, tuple((voter, signers[voter]) for voter in chosen))
        short = Record(value, view, exact.certificate[1:])
        for peer in targets:
            world.send(peer, exact)
        for peer in world.honest:
            world.send(peer, short)


class StrippedHistory(BaseAdversary):
    """Genuine catch-up records whose certificates, all but the last one's, are stripped: the
    values link to the certified last record, but what a member stores must verify on its own."""

    observes = True

    def __init__(self) -> None:
        self.greeter = _Greeter()
        self.stripped = 0  # responses served stripped

    def observe(self, seen: Observed, world: World) -> None:
        self.greeter.seen(seen, world)

    def outgoing(self, effect: Effect, world: World) -> Sequence[Effect]:
        if isinstance(effect, Send) and isinstance(effect.message, SyncResponse) and len(effect.message.records) > 1:
            self.stripped += 1
            records = effect.message.records
            stripped = (*(Record(record.value, record.view, ()) for record in records[:-1]), records[-1])
            return (Send(effect.peer, SyncResponse(stripped, effect.message.state)),)
        return (effect,)


class ForgedHistory(BaseAdversary):
    """Forged catch-up: linked but forged earlier records under a genuine last one, a forged last
    certificate, repeated rounds, a snapshot that does not match, the same response twice, forged
    pushed records, and responses nobody asked for. Nothing of it may be installed."""

    observes = True
    VARIANTS = ("forged_chain", "forged_certificate", "repeated", "snapshot_mismatch", "twice")

    def __init__(self) -> None:
        self.greeter = _Greeter()
        self.unsolicited: set[tuple[int, int]] = set()  # (member, round) sent an unsolicited response
        self.forged: Counter[str] = Counter()  # what it sent, by variant

    def observe(self, seen: Observed, world: World) -> None:
        self.greeter.seen(seen, world)
        core = world.core
        message = seen.message
        if core is None or not isinstance(message, SyncRequest) or world.me in seen.receivers:
            return
        key = (seen.sender, message.first)
        response = self._genuine(core.catchup.records, message.first, world)
        if response is not None and key not in self.unsolicited:
            self.unsolicited.add(key)
            self.forged["unsolicited"] += 1
            world.send(seen.sender, response)

    def outgoing(self, effect: Effect, world: World) -> Sequence[Effect]:
        if not isinstance(effect, Send):
            return (effect,)
        message = effect.message
        if isinstance(message, Record):
            self.forged["pushed_record"] += 1
            return (Send(effect.peer, self._forged_certificate(message, world)),)
        if not isinstance(message, SyncResponse) or not message.records:
            return (effect,)
        variant = world.rng.choice(self.VARIANTS)
        self.forged[variant] += 1
        records = list(message.records)
        if variant == "twice":
            return (effect, effect)
        if variant == "repeated":
            records.insert(world.rng.randrange(len(records)), records[world.rng.randrange(len(records))])
        elif variant == "snapshot_mismatch" and message.state is not None:
            model = bytes([message.state.model[0] ^ 1]) + message.state.model[1:]
            return (Send(effect.peer, SyncResponse(message.records, replace(message.state, model=model))),)
        elif variant == "forged_chain":
            records = [*self._chain(records[:-1], world), records[-1]]
        elif variant == "forged_certificate":
            forged = self._chain(records, world)
            records = [*forged[:-1], self._forged_certificate(forged[-1], world)]
        return (Send(effect.peer, SyncResponse(tuple(records[-SYNC_RECORDS_MAX:]), message.state)),)

    def _genuine(self, held: Sequence[Record], first: int, world: World) -> SyncResponse | None:
        core = world.core
        records = tuple(record for record in held if record.value.round >= first)[:SYNC_RECORDS_MAX]
        if core is None or not records:
            return None
        state = None
        if records[-1].value.round == core.state.round:
            model, aggregate, ledger = snapshot_bytes(core.state)
            state = StateSnapshot(core.state.round, model, aggregate, ledger)
        return SyncResponse(records, state)

    def _chain(self, records: Sequence[Record], world: World) -> list[Record]:
        """The same rounds with forged values, each linked to the one before (the first to the
        genuine first's predecessor), their certificates kept."""
        forged: list[Record] = []
        previous = records[0].value.prev_hash if records else b""
        for record in records:
            value = record.value
            fake = Value(value.round, previous, value.inputs, value.evidence, _digest(b"model", value.model_digest), value.ledger_digest)
            forged.append(Record(fake, record.view, record.certificate))
            previous = fake.id(world.genesis.hash)
        return forged

    def _forged_certificate(self, record: Record, world: World) -> Record:
        """``record`` with a certificate of a quorum of voters: the colluders' real signatures over
        it, random bytes in the honest voters' places."""
        value_id = record.value.id(world.genesis.hash)
        signatures: dict[int, bytes] = {}
        for voter in range(world.members):
            if len(signatures) == world.genesis.quorum:
                break
            if voter in world.byzantine:
                identity = world.identity_of(voter)
                signatures[voter] = Precommit.create(identity, world.genesis.hash, record.value.round, record.view, value_id, voter).signature
            else:
                signatures[voter] = world.rng.randbytes(64)
        return Record(record.value, record.view, tuple(sorted(signatures.items())))


class BogusDigests(BaseAdversary):
    """As proposer, values listing digests no one holds; announcements of holding everything."""

    def outgoing(self, effect: Effect, world: World) -> Sequence[Effect]:
        if not isinstance(effect, Broadcast):
            return (effect,)
        message = effect.message
        if isinstance(message, Proposal) and message.proposer == world.me:
            value = message.value
            inputs = tuple((sender, _digest(b"bogus", digest)) for sender, digest in value.inputs)
            bogus = Value(value.round, value.prev_hash, inputs, value.evidence, value.model_digest, value.ledger_digest)
            return (Broadcast(Proposal.create(world.identity, world.genesis.hash, message.view, message.valid_view, world.me, bogus)),)
        if isinstance(message, Announce):
            return (Broadcast(Announce.of(message.round, range(world.members), world.members)),)
        return (effect,)


class UpdateVersions(BaseAdversary):
    """Two signed updates of the round for every member, different for each: more versions than
    the two a member keeps. Every member holds a pair no other member holds, and a value listing
    either of a proposer's must still be validated everywhere."""

    def outgoing(self, effect: Effect, world: World) -> Sequence[Effect]:
        if not isinstance(effect, Broadcast) or not isinstance(effect.message, Update) or effect.message.sender != world.me:
            return (effect,)
        update = effect.message
        sends: list[Effect] = []
        for peer in world.honest:
            for version in (1, 2):
                values = np.frombuffer(update.payload, dtype="<i4").copy()
                values[0] = values[0] // 2 + 2 * peer + version  # another payload per member and version
                signed = Update.create(world.identity, world.genesis.hash, update.round, update.prev_hash, world.me, values.tobytes())
                sends.append(Send(peer, signed))
        return sends


class FloodUpdates(BaseAdversary):
    """Full-size signed updates of the next two rounds, to everyone, all the time (on the chain
    the member knows: the next round's are refused once that round comes, its hash being new)."""

    def start(self, world: World) -> None:
        world.wake(FLOOD_UPDATES_EVERY * FLOOD_INTERVAL_MS)

    def wake(self, tag: str, world: World) -> None:
        core = world.core
        assert core is not None, "flood_updates runs a core"
        size = world.limits.payload_bytes
        for ahead in (1, 2):
            for _ in range(FLOOD_UPDATES_PER_ROUND):
                values = np.frombuffer(world.rng.randbytes(size), dtype="<i4").copy()
                values[values == REFUSED_VALUE] = 0
                round_number = core.round.number + ahead
                update = Update.create(world.identity, world.genesis.hash, round_number, core.state.last_hash, world.me, values.tobytes())
                world.broadcast(update)
        world.wake(FLOOD_UPDATES_EVERY * FLOOD_INTERVAL_MS)


class FloodSync(BaseAdversary):
    """Sync requests for every record and the state, to everyone, all the time; counts the bytes
    sent, and the answers and their bytes (``sent_bytes``, ``answers``, ``answered_bytes``)."""

    observes = True

    def __init__(self) -> None:
        self.sent_bytes = 0
        self.answered_bytes = 0
        self.answers = 0

    def start(self, world: World) -> None:
        world.wake(FLOOD_INTERVAL_MS)

    def wake(self, tag: str, world: World) -> None:
        for _ in range(FLOOD_SYNC_REQUESTS):
            request = SyncRequest(world.rng.randint(1, 3), SYNC_RECORDS_MAX, True).encode()
            for peer in world.honest:
                world.send(peer, request)
                self.sent_bytes += len(request)
        world.wake(FLOOD_INTERVAL_MS)

    def observe(self, seen: Observed, world: World) -> None:
        if world.me in seen.receivers and isinstance(seen.message, SyncResponse):
            self.answers += 1
            self.answered_bytes += len(seen.data)


class FarAhead(BaseAdversary):
    """No core: keeps claiming to be ahead (one round, or a million) and never answers anyone."""

    runs_core = False
    observes = True

    def __init__(self) -> None:
        self.highest = 1  # the latest round an honest member has spoken of
        self.claims = 0

    def start(self, world: World) -> None:
        world.wake(CLAIM_INTERVAL_MS)

    def observe(self, seen: Observed, world: World) -> None:
        number = _round_of(seen.message)
        if number is not None:
            self.highest = max(self.highest, number)

    def wake(self, tag: str, world: World) -> None:
        self.claims += 1
        claim = self.highest + (1 if self.claims % 2 else FAR_AHEAD_ROUNDS)
        world.broadcast(Hello(PROTOCOL_VERSION, claim, world.rng.randbytes(32)))
        world.broadcast(Prevote.create(world.identity, world.genesis.hash, self.highest + 1, 0, world.rng.randbytes(32), world.me))
        world.wake(CLAIM_INTERVAL_MS)


class SilentMember(BaseAdversary):
    """No core, no messages: a member that is simply not there (nothing is carried to it)."""

    runs_core = False
    hears = False


# The two that still break the protocol (tests/sim/test_adversaries.py) come last, so that
# "mixed" with fewer than nine Byzantine members runs only the others.
ADVERSARIES: dict[str, Callable[[], Adversary]] = {
    "refused_payload": RefusedPayload,
    "equivocating_precommits": EquivocatingPrecommits,
    "forged_history": ForgedHistory,
    "bogus_digests": BogusDigests,
    "flood_updates": FloodUpdates,
    "flood_sync": FloodSync,
    "far_ahead": FarAhead,
    "silent_member": SilentMember,
    "stripped_history": StrippedHistory,
    "update_versions": UpdateVersions,
}
ADVERSARY_NAMES = tuple(ADVERSARIES)
