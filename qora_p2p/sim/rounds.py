"""Round results shared between simulated members.

Every honest member of a round runs `compute_round` on the same inputs; the simulator runs it once
per distinct input set and hands each member the same result (which changes nothing but time). The
key is a SHA-256 over the state's digests and every (sender, payload digest) pair; members share
payload objects (the decode cache hands every receiver the same message), so each payload is
hashed once, however many members ask. Both memos are bounded, in entries and in bytes.
"""

from __future__ import annotations

import hashlib

from qora_p2p.errors import QoraError
from qora_p2p.protocol.effects import Compute
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.state import RoundResult, compute_round

RESULTS_MAX = 256  # round results kept
DIGESTS_MAX = 200_000  # payload digests kept
DIGEST_BYTES_MAX = 256 << 20  # bytes of the payloads those digests keep alive


class RoundCache:
    """`compute_round` on a `Compute` effect's inputs, remembered by their digest."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.results: dict[bytes, RoundResult | QoraError] = {}
        self.digests: dict[int, tuple[bytes, bytes]] = {}  # id(payload) -> (payload, its SHA-256)
        self.digest_bytes = 0

    def result(self, effect: Compute) -> RoundResult | QoraError:
        """The round transition on the effect's inputs, or the error it refused them with."""
        key = hashlib.sha256()
        key.update(effect.state.last_hash + effect.state.model_digest() + effect.state.ledger_digest())
        for sender, payload in zip(effect.senders, effect.payloads, strict=True):
            key.update(sender.to_bytes(2, "big") + self._digest(payload))
        key.update(b"".join(culprit.to_bytes(2, "big") for culprit in effect.culprits))
        digest = key.digest()
        result = self.results.get(digest)
        if result is None:
            try:
                result = compute_round(self.genesis, effect.state, effect.senders, effect.payloads, effect.culprits)
            except QoraError as error:
                result = error
            if len(self.results) >= RESULTS_MAX:
                self.results.clear()
            self.results[digest] = result
        return result

    def _digest(self, payload: bytes) -> bytes:
        held = self.digests.get(id(payload))
        if held is not None and held[0] is payload:  # the entry keeps the object alive: ids are not reused
            return held[1]
        if len(self.digests) >= DIGESTS_MAX or self.digest_bytes > DIGEST_BYTES_MAX:
            self.digests.clear()
            self.digest_bytes = 0
        digest = hashlib.sha256(payload).digest()
        self.digests[id(payload)] = (payload, digest)
        self.digest_bytes += len(payload)
        return digest
