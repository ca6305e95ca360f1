"""Reading and verifying a node's committed chain (``qora-node inspect``, scenario reports).

`inspect_chain` opens a data directory read-only (WAL lets it run beside the live node), checks the
database for damage (SQLite's structure check and every row's checksum: `StoreDamaged`), verifies
every record's certificate against the stored genesis and every link of the chain (rounds a
catch-up by snapshot skipped are listed, not links), and checks
the stored model and ledger against the last certified round's digests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qora_p2p.errors import MessageError, SignatureError
from qora_p2p.node.store import Store, open_genesis_of
from qora_p2p.protocol.ledger import ONE
from qora_p2p.protocol.state import chain_origin

__all__ = ["inspect_chain"]


def inspect_chain(directory: Path) -> dict[str, Any]:
    """The committed chain of a data directory, verified; see the module notes.

    Raises:
        StoreError: no node database there; `StoreDamaged` if it is damaged (the message names
            what and how to recover).
    """
    genesis, member_key = open_genesis_of(directory)
    names = [member.name for member in genesis.members]
    keys = [member.public_key for member in genesis.members]
    problems: list[str] = []
    skipped: list[list[int]] = []  # [first, last] rounds absent after catching up by snapshot
    rounds = []
    with Store(directory, genesis, member_key, readonly=True) as store:
        store.verify()
        records, state, checkpoints = store.chain()
    previous = chain_origin(genesis)
    expected_round = 1
    for record, stored_hash in records:
        value = record.value
        try:
            round_hash = record.verify(genesis.hash, keys, genesis.quorum)
        except (MessageError, SignatureError) as error:
            problems.append(f"round {value.round}: certificate does not verify: {error}")
            round_hash = value.id(genesis.hash)
        if round_hash != stored_hash:
            problems.append(f"round {value.round}: stored hash differs from the record's")
        if value.round < expected_round:
            problems.append(f"round {value.round}: expected round {expected_round} (rounds out of order)")
        elif value.round > expected_round:
            # A catch-up from far behind installs the newest records and the state after them: the
            # history in between is absent here, and this record's own certificate vouches for it.
            skipped.append([expected_round, value.round - 1])
        elif value.prev_hash != previous:
            problems.append(f"round {value.round}: does not link to the previous round's hash")
        rounds.append(
            {
                "round": value.round,
                "hash": round_hash.hex(),
                "view": record.view,
                "inputs": len(value.inputs),
                "senders": [names[sender] for sender, _ in value.inputs],
                "signers": len(record.certificate),
                "evidence": len(value.evidence),
                "model_digest": value.model_digest.hex(),
                "ledger_digest": value.ledger_digest.hex(),
            }
        )
        previous, expected_round = round_hash, value.round + 1
    if rounds and state.round == rounds[-1]["round"]:
        if state.model_digest().hex() != rounds[-1]["model_digest"]:
            problems.append(f"stored model does not match round {state.round}'s certified digest")
        if state.ledger_digest().hex() != rounds[-1]["ledger_digest"]:
            problems.append(f"stored ledger does not match round {state.round}'s certified digest")
    elif rounds:
        problems.append(f"stored state is for round {state.round}, the chain ends at round {rounds[-1]['round']}")
    ledger = None
    if state.ledger is not None:
        ledger = [
            {
                "member": names[index],
                "reputation": round(standing.reputation / ONE, 4),
                "banned_until": standing.banned_until,
                "proven": standing.proven,
            }
            for index, standing in enumerate(state.ledger.standings)
        ]
    return {
        "network_id": genesis.network_id,
        "genesis_hash": genesis.hash.hex(),
        "member": names[genesis.member_index(member_key) or 0],
        "rounds": rounds,
        "last_round": state.round,
        "model_digest": state.model_digest().hex(),
        "ledger": ledger,
        "checkpoints": checkpoints,
        "skipped": skipped,
        "verified": not problems,
        "problems": problems,
    }
