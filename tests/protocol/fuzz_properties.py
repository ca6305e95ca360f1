"""What the core fuzzer holds every core to, besides its own assertions: the bound on every table
of a core (`table_bounds`, derived from `qora_p2p.protocol.limits`), what a message a member signed
must match (`own_slot`), and the bugs it found that runs tolerate until they are fixed
(`KNOWN_FINDINGS`)."""

from __future__ import annotations

from qora_p2p.protocol.core import NodeCore
from qora_p2p.protocol.effects import Slot
from qora_p2p.protocol.limits import (
    EVIDENCE_POOL_MAX,
    FUTURE_MESSAGES_MAX,
    FUTURE_MESSAGES_PER_PEER_MAX,
    HELPED_PER_ROUND_MAX,
    RECORDS_WINDOW,
    UPDATES_PER_SENDER_MAX,
    VIEWS_AHEAD_MAX,
    VIEWS_KEPT,
)
from qora_p2p.protocol.messages import Message, Precommit, Prevote, Proposal, Update

__all__ = ["KNOWN_FINDINGS", "VALUES_HELD_MAX", "VIEWS_HELD_MAX", "check", "known_finding", "own_slot", "table_bounds"]

# Views whose messages one round may hold after any input: VIEWS_KEPT behind the current view and
# the current view (pruning), VIEWS_AHEAD_MAX ahead of it (admission), and the lock's and the valid
# value's views, which pruning keeps.
VIEWS_HELD_MAX = VIEWS_KEPT + 1 + VIEWS_AHEAD_MAX + 2
# Values one round may hold: per view held, its proposal's value, a certified value, one we built.
VALUES_HELD_MAX = 3 * VIEWS_HELD_MAX


# Bugs this fuzzer found in the core, each with a strict xfail regression test in
# test_fuzz_findings.py: (what, the exception, the function it leaves from, text in its message).
# A run that hits one ends there and counts it; any other exception fails the run.
KNOWN_FINDINGS: tuple[tuple[str, type[BaseException], str, str], ...] = ()  # none open: the four found so far are fixed (test_fuzz_findings.py)


def known_finding(error: BaseException) -> str | None:
    """The name of the known finding ``error`` is, or None."""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    function = None if trace is None else trace.tb_frame.f_code.co_name
    return next(
        (
            name
            for name, kind, where, text in KNOWN_FINDINGS
            if isinstance(error, kind) and function == where and text in str(error)
        ),
        None,
    )


def table_bounds(core: NodeCore) -> list[tuple[str, int, int]]:
    """(table, size, bound) for every buffer and per-round table of a core; the bounds follow
    from `qora_p2p.protocol.limits` (see VIEWS_HELD_MAX) and the genesis size n."""
    n = core.size
    current = core.round
    agreement = current.agreement
    consensus = agreement.consensus
    updates = current.updates
    views, values = VIEWS_HELD_MAX, VALUES_HELD_MAX
    most_per_sender = max((len(held) for held in updates.held.values()), default=0)
    return [
        ("future", len(core.future), min(FUTURE_MESSAGES_MAX, (n - 1) * FUTURE_MESSAGES_PER_PEER_MAX)),
        ("future_from", len(core.future_from), n - 1),
        ("received", len(core.received), n - 1),
        # One update, and a proposal, a prevote and a precommit per view entered: grows with the
        # views of a round (no limit in limits.py), never with the number of messages.
        ("signed", len(core.signed), 1 + 3 * (consensus.view + 1)),
        ("evidence.pending", len(core.evidence.pending), EVIDENCE_POOL_MAX),
        ("catchup.records", len(core.catchup.records), RECORDS_WINDOW),
        ("catchup.asked", len(core.catchup.asked), n - 1),
        ("catchup.ahead", len(core.catchup.ahead), n - 1),
        ("round.records_sent", len(current.records_sent), HELPED_PER_ROUND_MAX),
        ("agreement.helped", len(agreement.helped), HELPED_PER_ROUND_MAX),
        ("agreement.proposals", len(agreement.proposals), views),
        ("agreement.votes", len(agreement.votes), 2 * n * views),
        ("agreement.second_votes", len(agreement.second_votes), 2 * n * views),
        ("agreement.values", len(agreement.values), values),
        ("agreement.validations", len(agreement.validations), values),
        ("agreement.results", len(agreement.results), values),
        ("agreement.certified_signatures", len(agreement.certified_signatures), views),
        ("agreement.timeouts", len(agreement.timeouts), 3 * views),
        ("agreement.my_messages", len(agreement.my_messages), 3 * (VIEWS_KEPT + 1)),
        ("agreement.wanted_views", len(agreement.wanted_views), views),
        ("consensus.proposals", len(consensus.proposals), views),
        ("consensus.prevotes", len(consensus.prevotes), views),
        ("consensus.precommits", len(consensus.precommits), views),
        ("consensus.certified", len(consensus.certified), views),
        # Never pruned within a round: one entry per value proposed or certified in a view up to
        # VIEWS_AHEAD_MAX ahead (and, for verdicts, built), so they grow with the views a round
        # goes through, as `signed` does.
        ("consensus.validity", len(consensus.validity), 3 * (consensus.view + 1 + VIEWS_AHEAD_MAX)),
        ("consensus.requested", len(consensus.requested), 2 * (consensus.view + 1 + VIEWS_AHEAD_MAX)),
        ("updates.held", len(updates.held), len(current.contributors)),
        ("updates.held[sender]", most_per_sender, UPDATES_PER_SENDER_MAX + VALUES_HELD_MAX),  # more only as named by kept values
        ("updates.holders", len(updates.holders), n - 1),
        # Each value held names at most n inputs; plus one fetch by sender per member. (Not so
        # today: fetches outlive their values, a known finding.)
        ("updates.fetching", len(updates.fetching), n * (values + 1)),
    ]


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def own_slot(message: Message, me: int, genesis_hash: bytes) -> tuple[Slot, bytes] | None:
    """The slot and content of a message ``me`` signed, or None for one it did not sign."""
    if isinstance(message, Update) and message.sender == me:
        return ("update", message.round, 0), message.digest
    if isinstance(message, Proposal) and message.proposer == me:
        return ("proposal", message.round, message.view), message.value.id(genesis_hash)
    if isinstance(message, Prevote | Precommit) and message.voter == me:
        return (message.KIND, message.round, message.view), message.value_id
    return None
