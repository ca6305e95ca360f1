"""Dissemination of one FL round's updates: validate, store, announce, fetch.

Theory of operation
-------------------
One `Dissemination` lives as long as its round. Every member broadcasts its own signed update;
an update is stored only after it validates (on our chain, from a member that may contribute this round, not
already held, a payload the fixed-point decoder accepts, correct signature; size and encoding were
checked by the codec). A validly signed payload that `compute_round` would refuse (int32 -2^31)
is the sender's fault, penalised at admission, never a failure of every value listing it. Two valid updates
from one sender are equivocation evidence (`qora_p2p.protocol.evidence`); at most
`UPDATES_PER_SENDER_MAX` are kept per sender, plus any further version a value we validate names.

Members announce what they hold as a bitmap of senders (gossip, when a round stalls). A missing
update is fetched by digest once a proposal names it (until then the author's own send is
presumably in flight, and fetching would double the traffic), from one candidate holder at a time;
a fetch not answered within `FETCH_RETRY_MS` tries the next candidate. While this member still
holds fewer than ``n - f`` updates and must propose, it fetches by sender from announcers.

``ready_ms`` is when this member first held ``n - f`` updates: the moment it could judge a proposal,
which starts view 0's propose clock (`qora_p2p.protocol.agreement`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qora_p2p.errors import FixedPointError, MessageError
from qora_p2p.protocol.effects import Send
from qora_p2p.protocol.limits import FETCH_RETRY_MS, UPDATES_PER_SENDER_MAX
from qora_p2p.protocol.messages import NIL, Announce, Evidence, Fetch, Update, domain

if TYPE_CHECKING:
    from qora_p2p.protocol.core import NodeCore, Round

__all__ = ["Dissemination"]


class Dissemination:
    """The updates of one round. Created by the core with the round it belongs to."""

    def __init__(self, core: NodeCore, round_: Round) -> None:
        self.core, self.round = core, round_
        self.held: dict[int, dict[bytes, Update]] = {}  # sender -> digest -> update
        self.own: Update | None = None
        self.ready_ms: int | None = None  # when we first held n - f updates
        self.holders: dict[int, int] = {}  # peer -> bitmap of senders it announced
        self.fetching: dict[tuple[int, bytes], int] = {}  # wanted (sender, digest or NIL) -> deadline

    # ---------------------------------------------------------------------------- updates in

    def on_update(self, update: Update, now_ms: int) -> None:
        """A peer's update for this round.

        Raises:
            MessageError, SignatureError: another chain, an ineligible sender, a bad signature.
        """
        core = self.core
        if update.prev_hash != core.state.last_hash:
            raise MessageError(f"update for round {update.round} is on another chain")
        if update.sender not in self.round.contributors:
            raise MessageError(f"member {update.sender} may not contribute to round {update.round}")
        if update.digest in self.held.get(update.sender, {}):
            return
        try:
            update.check_payload(core.genesis.model.dimension)  # what compute_round will decode
        except FixedPointError as error:
            raise MessageError(f"update payload: {error}") from error
        core.verifier(core.keys[update.sender], domain(core.genesis_hash, Update.KIND), update.header().body, update.signature)
        self.store(update, now_ms)

    def store(self, update: Update, now_ms: int) -> None:
        """Keep a validated update (ours or a peer's); a second one from a sender is evidence."""
        assert update.sender in self.round.contributors and update.round == self.round.number, "only validated updates are stored"
        held = self.held.setdefault(update.sender, {})
        if len(held) >= UPDATES_PER_SENDER_MAX and (update.sender, update.digest) not in self.round.agreement.missing_inputs():
            # Two versions prove equivocation; a further one is kept only if a value we validate
            # names it (members keep different pairs of a member that signs many versions, and
            # the proposer's choice must still be checkable): bounded by the values kept.
            return
        if held:
            other = next(iter(held.values()))
            self.core.evidence.accept(Evidence(update.sender, other.header(), update.header()), now_ms)
        digest = update.digest  # a SHA-256 of the payload: taken once
        held[digest] = update
        self.fetching.pop((update.sender, digest), None)
        self.fetching.pop((update.sender, NIL), None)
        agreement = self.round.agreement
        if self.ready_ms is None and len(self.held) >= self.core.genesis.inputs_min:
            self.ready_ms = now_ms
            agreement.view0_clock(now_ms)
        agreement.update_stored(update.sender, digest)

    # ---------------------------------------------------------------------------- announce and fetch

    def announcement(self) -> Announce:
        return Announce.of(self.round.number, sorted(self.held), self.core.size)

    def on_announce(self, peer: int, announce: Announce) -> None:
        """Raises: MessageError: the bitmap names members outside the genesis."""
        bitmap = int.from_bytes(announce.holders, "little")
        if bitmap >> self.core.size:
            raise MessageError("announce names members outside the genesis")
        self.holders[peer] = self.holders.get(peer, 0) | bitmap
        # Missing updates that a peer holds are fetched by digest once a proposal names them; until
        # then the author's own send is presumably in flight, and fetching now would double traffic.

    def on_fetch(self, peer: int, fetch: Fetch) -> None:
        """Send the updates a peer asks for (each once per fetch), within its served-bytes budget."""
        payload_bytes = self.core.limits.payload_bytes
        for sender, digest in dict.fromkeys(fetch.wanted):
            held = self.held.get(sender, {})
            for update in held.values() if digest == NIL else filter(None, [held.get(digest)]):
                if not self.core.may_serve(peer, payload_bytes):
                    return
                self.core.emit(Send(peer, update))

    def _holders_of(self, sender: int) -> list[int]:
        """Peers that announced holding ``sender``'s update, ascending."""
        return sorted(peer for peer, bitmap in self.holders.items() if bitmap >> sender & 1)

    def fetch(self, wanted: tuple[int, bytes], now_ms: int) -> None:
        """Ask one candidate holder for an update; a later deadline tries another."""
        sender, _ = wanted
        me = self.core.me
        candidates = sorted(set(self._holders_of(sender)) | {sender})
        candidates += self.round.agreement.likely_holders()
        candidates = [peer for peer in dict.fromkeys(candidates) if peer != me]
        if not candidates:
            return
        attempt = (now_ms // FETCH_RETRY_MS + sender) % len(candidates)
        self.core.emit(Send(candidates[attempt], Fetch(self.round.number, (wanted,))))
        self.fetching[wanted] = now_ms + FETCH_RETRY_MS

    def fetch_from_holders(self, sender: int, now_ms: int) -> None:
        """Ask an announcer for ``sender``'s update when we do not know its digest yet."""
        holders = [peer for peer in self._holders_of(sender) if peer != self.core.me]
        if holders:
            peer = holders[(now_ms // FETCH_RETRY_MS) % len(holders)]
            self.core.emit(Send(peer, Fetch(self.round.number, ((sender, NIL),))))
            self.fetching[(sender, NIL)] = now_ms + FETCH_RETRY_MS

    def retry_fetches(self, now_ms: int) -> None:
        """Fetches not answered by their deadline go to the next candidate, while still needed: a
        digest only while a value we still keep lists it (a proposal naming bogus digests, once
        its view is pruned, stops costing fetches), a sender's update only while we must propose
        and hold fewer than ``n - f``."""
        needed = self.round.agreement.missing_inputs()
        for wanted, deadline in list(self.fetching.items()):
            if deadline <= now_ms:
                del self.fetching[wanted]
                if wanted[1] == NIL:
                    if wanted[0] not in self.held:
                        self.fetch_from_holders(wanted[0], now_ms)
                elif wanted in needed:
                    self.fetch(wanted, now_ms)
