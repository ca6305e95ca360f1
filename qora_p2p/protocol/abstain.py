"""Abstaining: a member whose last-signed guard is new signs nothing until that is safe.

Theory of operation
-------------------
A member whose last-signed guard is new (``NodeCore(abstain=True)``: its database was lost or moved aside)
cannot know what it signed before: it may have signed an update, votes or a proposal in the round
it was in. So an abstaining core signs nothing (`sign_slot` refuses, no `Train`) until its state is
past every round it may have signed in, which it learns from its peers: each peer's *first* `Hello`
since we started gives the round it was in then (later ones are ignored, so the target cannot move
away with the network); ``claimed`` is the (f + 1 - k)-th highest of them, k the peers not heard
from yet (undefined while k > f); the core signs again once ``state.round >= claimed + 1``.

Safe, with at most f members faulty and this one counted among them: if the lost incarnation
signed in round ``p > 1``, it had committed ``p - 1``, with a quorum (>= 2f + 1) of precommits; of
those at most max(f - 1, 0) are Byzantine and one is ours, so at least f + 1 live honest members
were in round ``p - 1`` or later before we started, and their first Hellos say so. At most k of
them are unheard, so ``claimed >= p - 1``, and once ``state.round >= claimed + 1 >= p`` every round
we sign in is past p. Live, with at most f faulty members of any kind: once every honest member
is heard, k counts silent Byzantine members only, so the f + 1 - k highest rounds cannot all be
lies and ``claimed`` is a round an honest member was in. It never rises as more peers are heard,
and the others commit past it without us (we are the fault they tolerate).

A fresh network: every Hello says round 1 and waiting for a commit would wait forever. Before any
commit nothing tells a first start from a restart that lost its database in round 1 (or in round
2, by the first member to commit round 1), so ``claimed == 1`` at state 0 (n - 1 - f peers heard
in round 1) lets the core sign at once: the first two rounds are the window the rule leaves open.
A one-member network never abstains (nobody to ask). Events `abstain_started`, `abstain_ended`.
"""

from __future__ import annotations

__all__ = ["Abstention"]


class Abstention:
    """What an abstaining member has heard, and when it may sign again (see the module notes).

    Args:
        members: n.
        faulty: f.
    """

    def __init__(self, members: int, faulty: int) -> None:
        self.members, self.faulty = members, faulty
        self.claims: dict[int, int] = {}  # peer -> round of its first Hello since we started
        self.refused = 0  # signatures the core would have made
        self.over = False  # the member signs again

    def hear(self, peer: int, round_number: int) -> bool:
        """A peer's Hello; True if it was its first (later ones are ignored)."""
        if peer in self.claims:
            return False
        self.claims[peer] = round_number
        return True

    def claimed_round(self) -> int | None:
        """A round some honest member was in, at least, when it first spoke to us: the (f + 1 - k)-th
        highest first-Hello round, k the peers not heard from yet; None while k > f. It never rises
        as more peers are heard."""
        rank = self.faulty + 1 - (self.members - 1 - len(self.claims))
        if rank < 1:
            return None
        return sorted(self.claims.values(), reverse=True)[rank - 1]

    def why_over(self, state_round: int) -> str | None:
        """Why abstaining may end with the committed state at ``state_round``, or None if not yet."""
        claimed = self.claimed_round()
        if claimed is None:
            return None
        if claimed == 1 and state_round == 0:
            return "no member is known past round 1: a new network"
        if state_round >= claimed + 1:
            return f"the state is past round {claimed}, which peers were in when we started"
        return None
