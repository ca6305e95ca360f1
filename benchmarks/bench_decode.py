"""Decode benchmark: `messages.decode` of a signed update against the check it replaced, and the
store's row checksum against packing the row first.

    python benchmarks/bench_decode.py                       # P in {10K, 100K, 1M}
    python benchmarks/bench_decode.py --dims 100000 --repeat 500 --json

For each update length P (a payload of 4 P bytes), in one process on the same bytes:

* ``decode``: `qora_p2p.protocol.messages.decode`, which checks canonical encoding field by field
  and checks a large byte string by its header and place (no copy);
* ``re-encode``: the earlier check, parse and build the message the same way, then pack it again
  and compare with the bytes received;
* ``sha256``: hashing the payload alone, which both include (the update's digest).

The store (``qora_p2p.node.store``) checksums every row it writes and reads: the state row of a
round holds the model (8 P bytes) and the aggregate (4 P bytes). ``row digest`` feeds the row to
BLAKE2b piece by piece; ``packed`` packs the row into one buffer first, as it did before.

Medians of ``--repeat`` calls after one warm-up call, in milliseconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import msgpack

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit_json, machine, median_seconds, print_table
from qora_p2p.identity import Identity
from qora_p2p.node.store import ROW_DIGEST_BYTES, _row_digest
from qora_p2p.protocol.messages import Limits, Message, Update, _build, decode

GENESIS = hashlib.sha256(b"bench decode").digest()


def decode_by_re_encoding(data: bytes, limits: Limits) -> Message:
    """The check `decode` made before: parse, build, pack again, compare (same limits)."""
    raw = msgpack.unpackb(data, use_list=True, raw=False, strict_map_key=True, max_bin_len=limits.message_bytes_max, max_str_len=0, max_map_len=0, max_ext_len=0)
    message = _build(raw[0], raw[1:], limits)
    if message.encode() != data:
        raise ValueError("not canonical")
    return message


def digest_of_packed_row(table: str, fields: tuple[int, int, bytes]) -> bytes:
    """The store's row checksum as it was computed before: pack the row, then hash it."""
    packed = msgpack.packb([table, *fields], use_bin_type=True)
    return hashlib.blake2b(packed, digest_size=ROW_DIGEST_BYTES, person=b"qora-store-row").digest()


def run(dimension: int, repeat: int) -> dict[str, float | int]:
    limits = Limits(10, dimension)
    payload = os.urandom(limits.payload_bytes)
    data = Update.create(Identity.generate(), GENESIS, 3, b"p" * 32, 1, payload).encode()
    assert decode(data, limits) == decode_by_re_encoding(data, limits)
    state_row = (0, 3, os.urandom(12 * dimension))
    assert _row_digest("state", state_row) == digest_of_packed_row("state", state_row)
    return {
        "dimension": dimension,
        "message_bytes": len(data),
        "decode_ms": median_seconds(lambda: decode(data, limits), repeat) * 1000,
        "re_encode_ms": median_seconds(lambda: decode_by_re_encoding(data, limits), repeat) * 1000,
        "sha256_ms": median_seconds(lambda: hashlib.sha256(payload).digest(), repeat) * 1000,
        "row_digest_ms": median_seconds(lambda: _row_digest("state", state_row), repeat) * 1000,
        "packed_row_digest_ms": median_seconds(lambda: digest_of_packed_row("state", state_row), repeat) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--dims", default="10000,100000,1000000", help="comma-separated update lengths P")
    arguments.add_argument("--repeat", type=int, default=200, help="calls per measurement (default 200)")
    arguments.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = arguments.parse_args(argv)
    results = [run(int(item), args.repeat) for item in args.dims.split(",")]
    if args.json:
        emit_json({"benchmark": "decode", "machine": machine(), "runs": results})
        return 0
    rows = [
        [item["dimension"], item["message_bytes"], f"{item['decode_ms']:.3f}", f"{item['re_encode_ms']:.3f}", f"{item['sha256_ms']:.3f}", f"{item['re_encode_ms'] / item['decode_ms']:.1f}x"]
        for item in results
    ]
    print_table(["P", "bytes", "decode ms", "re-encode ms", "sha256 ms", "speed-up"], rows)
    print()
    print_table(
        ["P", "state row bytes", "row digest ms", "packed ms", "speed-up"],
        [
            [item["dimension"], 12 * int(item["dimension"]), f"{item['row_digest_ms']:.3f}", f"{item['packed_row_digest_ms']:.3f}", f"{item['packed_row_digest_ms'] / item['row_digest_ms']:.1f}x"]
            for item in results
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
