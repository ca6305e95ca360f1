"""Catching up: certified records and state snapshots for members that fell behind.

Theory of operation
-------------------
A member learns it is behind from a peer's `Hello`, a record, or a message of a later round. It
then asks one peer at a time (`SyncRequest`, at most one per `SYNC_RETRY_MS`; a request refused by
that limit is remembered and sent once allowed) for certified records from its round on and a snapshot of the
state after the last of them; a server whose records from that round on do not reach its head sends
its newest records and state instead, so a member catches up from any distance (its store then
starts the chain again at the first record it installed: the certificates vouch for it). A response is installed only if
every record's certificate verifies (the last one's first), every earlier record is the predecessor of the next
(consecutive rounds, each round hash the next one's ``prev_hash``, the first linked to our own
chain), and the snapshot's digests match the last record; records of our own round whose
certificate is in hand are adopted through agreement (validated like a proposal). Only responses
from a peer we asked, within `SYNC_RESPONSE_WAIT_MS`, are read, one per request. A peer still in an earlier round is sent, once, the record that ended it.

The `CatchUp` keeps the newest `RECORDS_WINDOW` committed records in memory to serve others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING

from qora_p2p.errors import MessageError
from qora_p2p.protocol.effects import Installed, Send
from qora_p2p.protocol.limits import (
    HELPED_PER_ROUND_MAX,
    RECORDS_WINDOW,
    SYNC_RESPONSE_WAIT_MS,
    SYNC_RETRY_MS,
)
from qora_p2p.protocol.messages import SYNC_RECORDS_MAX, Record, StateSnapshot, SyncRequest, SyncResponse
from qora_p2p.protocol.state import snapshot_bytes, state_from_snapshot

if TYPE_CHECKING:
    from qora_p2p.protocol.core import NodeCore

__all__ = ["CatchUp"]


class CatchUp:
    """One member's side of catch-up, as the one asking and as the one serving."""

    def __init__(self, core: NodeCore, records: Sequence[Record]) -> None:
        self.core = core
        self.records: deque[Record] = deque(records, maxlen=RECORDS_WINDOW)
        self.deadline = 0  # no new request before this time
        self.pending: int | None = None  # a peer to ask once the deadline passes
        self.asked: dict[int, int] = {}  # peer -> when we asked it; only their responses are read
        self.ahead: dict[int, int] = {}  # peer -> when it last showed it is past our round (at most n)
        self.served_at: dict[int, int] = {}  # peer -> when we last answered its sync request (at most n)

    def earliest(self, deadline: int, now_ms: int) -> int:
        """``deadline``, or the held-back request's moment if that is earlier."""
        return deadline if self.pending is None else min(deadline, max(self.deadline, now_ms + 1))

    def retry(self, now_ms: int) -> None:
        """Send the request the rate limit held back, once allowed."""
        if self.pending is not None and now_ms >= self.deadline:
            self.request(self.pending, now_ms)

    def request(self, peer: int, now_ms: int) -> None:
        """``peer`` is past our round: ask it (or, if it left our last request to it unanswered,
        another member that is past us) for records from our round on, now or as soon as the rate
        limit allows. One member that keeps claiming to be ahead and never answers cannot hold us off."""
        self.ahead[peer] = now_ms
        if now_ms < self.deadline:
            self.pending = peer  # asked too soon after the last request: ask when allowed
            return
        self.pending = None
        self.deadline = now_ms + SYNC_RETRY_MS
        self.asked = {asked: at for asked, at in self.asked.items() if at + SYNC_RESPONSE_WAIT_MS > now_ms}
        target = self._target(peer, now_ms)
        self.asked[target] = now_ms
        self.core.emit(Send(target, SyncRequest(self.core.round.number, SYNC_RECORDS_MAX, True)))

    def _target(self, peer: int, now_ms: int) -> int:
        """``peer``, unless a request to it is overdue; then the member past us asked longest ago."""

        def overdue(candidate: int) -> bool:
            asked = self.asked.get(candidate)
            return asked is not None and asked + SYNC_RETRY_MS <= now_ms

        if not overdue(peer):
            return peer
        others = [candidate for candidate in sorted(self.ahead) if candidate != peer and not overdue(candidate)]
        if not others:
            return peer
        return min(others, key=lambda candidate: self.asked.get(candidate, -1))

    def on_response(self, peer: int, response: SyncResponse, now_ms: int) -> None:
        """A peer's answer to our request; an answer nobody asked for (or a second one) is ignored."""
        asked = self.asked.pop(peer, None)
        if asked is None or asked + SYNC_RESPONSE_WAIT_MS <= now_ms:
            return
        self.install(peer, response, now_ms)

    def help_behind(self, peer: int, round_number: int) -> None:
        """A peer is still in an earlier round: send it the record that ends that round (once)."""
        sent = self.core.round.records_sent
        if (peer, round_number) in sent or len(sent) >= HELPED_PER_ROUND_MAX:
            return
        for record in self.records:
            if record.value.round == round_number:
                sent.add((peer, round_number))
                self.core.emit(Send(peer, record))
                return

    def serve(self, peer: int, request: SyncRequest, now_ms: int) -> None:
        """Answer a sync request: the records asked for or, when those do not reach our head and
        the peer wants state, our newest records and the state after them (so a member catches
        up from any distance in one response), within the peer's served-bytes budget and at most
        twice per `SYNC_RETRY_MS` (an honest member asks one peer at a time, once per interval)."""
        if not self.records:
            return
        last = self.served_at.get(peer)
        if last is not None and now_ms < last + SYNC_RETRY_MS // 2:
            return
        self.served_at[peer] = now_ms
        core = self.core
        state = core.state
        wanted = [record for record in self.records if request.first <= record.value.round < request.first + request.count]
        if not wanted or (request.want_state and wanted[-1].value.round != state.round):
            wanted = list(self.records)[-min(request.count or 1, SYNC_RECORDS_MAX) :]
        wanted = wanted[:SYNC_RECORDS_MAX]
        size = len(wanted) * core.limits.record_bytes_max
        snapshot = None
        if request.want_state and wanted[-1].value.round == state.round:
            model, aggregate_bytes, ledger = snapshot_bytes(state)
            snapshot = StateSnapshot(state.round, model, aggregate_bytes, ledger)
            size += len(model) + len(aggregate_bytes) + len(ledger)
        if core.may_serve(peer, size):
            core.emit(Send(peer, SyncResponse(tuple(wanted), snapshot)))

    def on_record(self, peer: int, record: Record, now_ms: int) -> None:
        """A record pushed by a peer: ours to adopt, or a sign that we are behind."""
        current = self.core.round.number
        if record.value.round == current:
            self.install(peer, SyncResponse((record,), None), now_ms)
        elif record.value.round > current:
            self.request(peer, now_ms)

    def install(self, peer: int, response: SyncResponse, now_ms: int) -> None:
        """Adopt certified records (and a snapshot) that take us past our current round.

        Raises:
            MessageError, SignatureError: a certificate that does not verify, or a snapshot that
                does not match its record.
        """
        core = self.core
        records = sorted(response.records, key=lambda record: record.value.round)
        if not records:
            return
        # Every earlier record must be the predecessor of the next (its round hash is the next
        # one's prev_hash), so the last certificate vouches for the batch's values; the others'
        # certificates are checked too before anything is installed.
        for earlier, later in pairwise(records):
            if later.value.round != earlier.value.round + 1:
                raise MessageError(f"sync records are not consecutive rounds ({earlier.value.round}, {later.value.round})")
            if later.value.prev_hash != earlier.value.id(core.genesis_hash):
                raise MessageError(f"sync record of round {later.value.round} does not link to round {earlier.value.round}")
        last = records[-1]
        if last.value.round < core.round.number:
            return
        agreement = core.round.agreement
        if response.state is None and agreement.certified(last.value.id(core.genesis_hash)):
            # A certificate for this value is already in hand, yet the round is not over: we
            # cannot validate it (an input no one still in this round can send us). The peer is
            # past it: take its certified state instead.
            self.request(peer, now_ms)
            return
        round_hash = last.verify(core.genesis_hash, core.keys, core.genesis.quorum, core.verifier)
        if response.state is None or response.state.round != last.value.round:
            if last.value.round == core.round.number:
                agreement.adopt_certified(last, round_hash, now_ms)
            return
        snapshot = response.state
        state = state_from_snapshot(core.genesis, snapshot.round, round_hash, snapshot.model, snapshot.aggregate, snapshot.ledger)
        if state.model_digest() != last.value.model_digest or state.ledger_digest() != last.value.ledger_digest:
            raise MessageError("snapshot does not match the certified round")
        contiguous = [record for record in records if record.value.round > core.state.round]
        # The links vouch for the earlier values, not for their certificates' bytes: every record
        # we persist (and will serve, and `qora-node inspect` will check) must verify on its own.
        for record in contiguous[:-1]:
            record.verify(core.genesis_hash, core.keys, core.genesis.quorum, core.verifier)
        first = contiguous[0].value
        if first.round == core.state.round + 1 and first.prev_hash != core.state.last_hash:
            raise MessageError(f"sync record of round {first.round} does not link to our round {core.state.round}")
        self.records.extend(contiguous)
        core.emit(Installed(tuple(contiguous), state))
        core.event("caught_up", from_round=core.round.number, to_round=state.round, peer=peer)
        core.advance(state, now_ms)
