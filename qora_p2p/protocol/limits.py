"""The protocol core's fixed limits: every buffer, table and loop of a member is bounded by one of these.

Limits that depend on the network's size or model dimension (frame and payload sizes, evidence per
value) are derived per genesis in `qora_p2p.protocol.messages.Limits`. Relations between limits are
asserted below, at import.
"""

from __future__ import annotations

from qora_p2p.protocol.messages import FETCH_ITEMS_MAX, SYNC_RECORDS_MAX

__all__ = [
    "BUDGET_WINDOW_MS",
    "EVIDENCE_BROADCASTS_PER_ROUND",
    "EVIDENCE_POOL_MAX",
    "FETCH_RETRY_MS",
    "FUTURE_MESSAGES_MAX",
    "FUTURE_MESSAGES_PER_PEER_MAX",
    "FUTURE_UPDATES_PER_PEER_MAX",
    "GOSSIP_INTERVAL_MS",
    "HELPED_PER_ROUND_MAX",
    "MESSAGES_PER_PEER_PER_WINDOW_MAX",
    "RECORDS_WINDOW",
    "SYNC_RESPONSE_WAIT_MS",
    "SYNC_RETRY_MS",
    "UPDATES_PER_SENDER_MAX",
    "VIEWS_AHEAD_MAX",
    "VIEWS_KEPT",
]

VIEWS_AHEAD_MAX = 64  # votes for views further ahead are not stored (f + 1 of them still move us)
VIEWS_KEPT = 64  # views behind the current one whose messages are kept (plus lock and valid value)
UPDATES_PER_SENDER_MAX = 2  # two valid updates from one sender are proof; a third adds nothing
EVIDENCE_POOL_MAX = 64  # pending evidence items kept for future proposals
EVIDENCE_BROADCASTS_PER_ROUND = 2  # proofs we detected ourselves and announce; none are relayed
RECORDS_WINDOW = 256  # committed records kept in memory to serve catch-up
# A peer's messages the core handles per window; more are dropped (penalised once per window).
# The window is time, not a round: a long stall without quorum must not cut honest members off
# from each other for good. Honest gossip repeats a few messages a second; far below this.
MESSAGES_PER_PEER_PER_WINDOW_MAX = 4096
BUDGET_WINDOW_MS = 10_000
HELPED_PER_ROUND_MAX = 4096  # (peer, view) and (peer, round) pairs a round answers once each
FUTURE_MESSAGES_MAX = 4 * 1024  # messages buffered for the next round, all peers together
# Per peer, for the next round: its update (two if it equivocates), announcements, and its
# proposal and votes of the first views; a peer further ahead makes us catch up instead.
FUTURE_MESSAGES_PER_PEER_MAX = 64
FUTURE_UPDATES_PER_PEER_MAX = 2  # full-size messages: bytes buffered per peer <= 2 updates + small ones
FETCH_RETRY_MS = 500  # ask another holder if a fetched update has not arrived by then
SYNC_RETRY_MS = 1_000  # one catch-up request in flight; a new one after this long
SYNC_RESPONSE_WAIT_MS = 30_000  # a sync response later than this after our request is not read
GOSSIP_INTERVAL_MS = 1_000  # a round stuck this long re-announces holdings and re-sends our votes

assert UPDATES_PER_SENDER_MAX == 2, "two updates prove equivocation; the evidence code pairs exactly two"
assert FUTURE_UPDATES_PER_PEER_MAX <= UPDATES_PER_SENDER_MAX, "no more of a peer's updates than a round keeps"
assert FUTURE_UPDATES_PER_PEER_MAX < FUTURE_MESSAGES_PER_PEER_MAX < FUTURE_MESSAGES_MAX
assert RECORDS_WINDOW >= SYNC_RECORDS_MAX, "a full sync response must fit in the records we keep"
assert VIEWS_KEPT >= 2, "the current and the previous view's messages are needed to help laggards"
assert FETCH_ITEMS_MAX >= 1
assert SYNC_RETRY_MS >= FETCH_RETRY_MS, "catch-up is the slower, heavier fallback of fetching"
assert SYNC_RESPONSE_WAIT_MS > SYNC_RETRY_MS, "a response may arrive after the next request is allowed"
