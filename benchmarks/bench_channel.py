"""Channel benchmark: encrypted channel against raw TCP, and the cost of checking a signed update.

    python benchmarks/bench_channel.py                      # 64 messages of 4 MiB, 3 runs each
    python benchmarks/bench_channel.py --messages 16 --repeat 5 --json

Throughput: two processes (multiprocessing, spawn), each running trio, over loopback TCP. The
sender writes ``--messages`` messages of ``--message-bytes`` bytes; the receiver reads every one
whole and times from the first byte it receives to the end of the last message. Raw TCP frames each
message with a 4-byte length prefix and the receiver joins the pieces into one bytes object, as the
channel does; the encrypted run includes its handshake (once per connection). Each mode runs
``--repeat`` times, interleaved, and the median is reported. MB = 10**6 bytes.

Verification: the signer hashes a ``--payload-bytes`` payload with SHA-256 and signs the digest with
`Identity.sign`; checking it is SHA-256 of the payload plus `verify`. Reported: the median of
``--verifications`` single checks, and the two parts on their own.

Targets the project reports against: encrypted >= 50% of raw TCP; one signed 400 KB update
verified in <= 1 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit_json, machine, median_seconds, print_table
from qora_p2p.identity import Identity, verify
from qora_p2p.node.channel import ChannelLimits, open_channel

SENDER_SEED = b"s" * 32
RECEIVER_SEED = b"r" * 32
GENESIS = hashlib.sha256(b"qora-p2p benchmark network").digest()
LENGTH_BYTES = 4  # raw TCP length prefix
RAW_READ_BYTES = 64 << 10  # the raw baseline reads in pieces as large as the channel's frames
THROUGHPUT_RATIO_TARGET = 0.5  # encrypted MB/s over raw MB/s
VERIFY_SECONDS_TARGET = 1e-3  # one signed 400 KB update
SIGN_DOMAIN = b"bench"
RUN_TIMEOUT_S = 300  # a stuck transfer fails the benchmark instead of hanging it


def _members() -> frozenset[bytes]:
    return frozenset(Identity.from_seed(seed).public_key for seed in (SENDER_SEED, RECEIVER_SEED))


def _limits(message_bytes: int) -> ChannelLimits:
    return ChannelLimits(message_bytes_max=max(message_bytes, ChannelLimits().frame_bytes_max))


class _FirstByteClock(trio.abc.Stream):
    """Records when the first byte arrives; everything else passes straight through."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.first_byte_time: float | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if self.first_byte_time is None:
            self.first_byte_time = time.perf_counter()
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _receive_exactly(stream: trio.abc.Stream, count: int) -> bytes:
    # Reads are bounded like the channel's: asking trio for a whole 4 MB message at once makes it
    # allocate (and page-fault) a 4 MB buffer per call, which would handicap the baseline.
    parts = []
    filled = 0
    while filled < count:
        data = await stream.receive_some(min(count - filled, RAW_READ_BYTES))
        if not data:
            raise EOFError(f"stream ended after {filled} of {count} bytes")
        parts.append(data)
        filled += len(data)
    return b"".join(parts)


async def _receive_raw(stream: trio.abc.Stream, messages: int, message_bytes: int) -> None:
    for _ in range(messages):
        length = int.from_bytes(await _receive_exactly(stream, LENGTH_BYTES), "big")
        assert length == message_bytes
        await _receive_exactly(stream, length)


async def _receive_encrypted(stream: trio.abc.Stream, messages: int, message_bytes: int) -> None:
    identity = Identity.from_seed(RECEIVER_SEED)
    channel = await open_channel(
        stream,
        identity,
        genesis_hash=GENESIS,
        members=_members(),
        initiator=False,
        limits=_limits(message_bytes),
    )
    for _ in range(messages):
        message = await channel.receive()
        assert len(message) == message_bytes


async def _receiver(mode: str, messages: int, message_bytes: int, results: Any) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    results.put(("port", listeners[0].socket.getsockname()[1]))
    stream = await listeners[0].accept()
    clock = _FirstByteClock(stream)
    with trio.fail_after(RUN_TIMEOUT_S):
        if mode == "raw":
            await _receive_raw(clock, messages, message_bytes)
        else:
            await _receive_encrypted(clock, messages, message_bytes)
    finished = time.perf_counter()
    assert clock.first_byte_time is not None
    results.put(("seconds", finished - clock.first_byte_time))
    await stream.aclose()
    await listeners[0].aclose()


async def _sender(mode: str, port: int, messages: int, message_bytes: int) -> None:
    message = os.urandom(message_bytes)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    with trio.fail_after(RUN_TIMEOUT_S):
        if mode == "raw":
            header = message_bytes.to_bytes(LENGTH_BYTES, "big")
            for _ in range(messages):
                await stream.send_all(header)
                await stream.send_all(message)
        else:
            channel = await open_channel(
                stream,
                Identity.from_seed(SENDER_SEED),
                genesis_hash=GENESIS,
                members=_members(),
                initiator=True,
                limits=_limits(message_bytes),
            )
            for _ in range(messages):
                await channel.send(message)
    await stream.aclose()


def _receiver_process(mode: str, messages: int, message_bytes: int, results: Any) -> None:
    trio.run(_receiver, mode, messages, message_bytes, results)


def _sender_process(mode: str, port: int, messages: int, message_bytes: int) -> None:
    trio.run(_sender, mode, port, messages, message_bytes)


def transfer_seconds(mode: str, messages: int, message_bytes: int) -> float:
    """Seconds from the receiver's first byte to its last message, sender and receiver in their own
    processes."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    receiver = context.Process(target=_receiver_process, args=(mode, messages, message_bytes, results))
    processes = [receiver]
    receiver.start()
    try:
        kind, port = results.get(timeout=60)
        assert kind == "port"
        sender = context.Process(target=_sender_process, args=(mode, port, messages, message_bytes))
        processes.append(sender)
        sender.start()
        kind, seconds = results.get(timeout=RUN_TIMEOUT_S + 60)
        assert kind == "seconds"
        for process in processes:
            process.join(timeout=60)
        codes = [process.exitcode for process in processes]
        if codes != [0, 0]:
            raise RuntimeError(f"{mode} run failed: receiver and sender exit codes {codes}")
        return float(seconds)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()


def measure_throughput(messages: int, message_bytes: int, repeat: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"raw": [], "encrypted": []}
    for run in range(repeat):
        for mode in samples:
            seconds = transfer_seconds(mode, messages, message_bytes)
            samples[mode].append(messages * message_bytes / seconds / 1e6)
            print(f"  run {run + 1}/{repeat} {mode}: {samples[mode][-1]:.0f} MB/s", file=sys.stderr)
    raw = statistics.median(samples["raw"])
    encrypted = statistics.median(samples["encrypted"])
    return {
        "messages": messages,
        "message_bytes": message_bytes,
        "repeat": repeat,
        "raw_mb_per_s": raw,
        "encrypted_mb_per_s": encrypted,
        "ratio": encrypted / raw,
        "raw_samples": samples["raw"],
        "encrypted_samples": samples["encrypted"],
    }


def measure_verification(payload_bytes: int, count: int) -> dict[str, Any]:
    signer = Identity.generate()
    payload = os.urandom(payload_bytes)
    signature = signer.sign(SIGN_DOMAIN, hashlib.sha256(payload).digest())
    public_key = signer.public_key
    digest = hashlib.sha256(payload).digest()

    def check() -> None:
        verify(public_key, SIGN_DOMAIN, hashlib.sha256(payload).digest(), signature)

    def check_digest_only() -> None:
        verify(public_key, SIGN_DOMAIN, digest, signature)

    seconds = median_seconds(check, count)
    return {
        "payload_bytes": payload_bytes,
        "verifications": count,
        "verify_us": 1e6 * seconds,
        "verifications_per_s": 1 / seconds,
        "sha256_us": 1e6 * median_seconds(lambda: hashlib.sha256(payload).digest(), count),
        "ed25519_verify_us": 1e6 * median_seconds(check_digest_only, count),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=64, help="messages per throughput run")
    parser.add_argument("--message-bytes", type=int, default=4 << 20, help="bytes per message (4 MiB)")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per mode (median reported)")
    parser.add_argument("--payload-bytes", type=int, default=400_000, help="signed update size (400 KB)")
    parser.add_argument("--verifications", type=int, default=2000, help="timed verifications (median)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    for name in ("messages", "message_bytes", "repeat", "payload_bytes", "verifications"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.message_bytes > 16 << 20:
        parser.error("--message-bytes must be at most 16 MiB (the channel's message limit here)")
    throughput = measure_throughput(args.messages, args.message_bytes, args.repeat)
    verification = measure_verification(args.payload_bytes, args.verifications)
    targets = {
        "encrypted_over_raw_min": THROUGHPUT_RATIO_TARGET,
        "encrypted_over_raw_met": throughput["ratio"] >= THROUGHPUT_RATIO_TARGET,
        "verify_us_max": 1e6 * VERIFY_SECONDS_TARGET,
        "verify_met": verification["verify_us"] <= 1e6 * VERIFY_SECONDS_TARGET,
    }
    if args.json:
        emit_json(
            {
                "benchmark": "channel",
                "machine": machine(),
                "throughput": throughput,
                "verification": verification,
                "targets": targets,
            }
        )
        return 0
    print(f"machine: {machine()}")
    print(
        f"throughput: {throughput['messages']} messages of {throughput['message_bytes']} bytes over "
        f"loopback TCP, two processes, median of {throughput['repeat']} runs; MB = 10**6 bytes\n"
    )
    print_table(
        ["transport", "MB/s", "of raw", "target"],
        [
            ["raw TCP (length-prefixed)", f"{throughput['raw_mb_per_s']:.0f}", "1.00", "-"],
            [
                "encrypted channel",
                f"{throughput['encrypted_mb_per_s']:.0f}",
                f"{throughput['ratio']:.2f}",
                f">= {THROUGHPUT_RATIO_TARGET:.2f} "
                + ("met" if targets["encrypted_over_raw_met"] else "MISSED"),
            ],
        ],
    )
    print(
        f"\nsigned update: {verification['payload_bytes']} bytes, SHA-256 + Ed25519 verify, median of "
        f"{verification['verifications']} checks\n"
    )
    print_table(
        ["step", "us", "per second", "target"],
        [
            ["sha256(payload)", f"{verification['sha256_us']:.1f}", "-", "-"],
            ["ed25519 verify(digest)", f"{verification['ed25519_verify_us']:.1f}", "-", "-"],
            [
                "verify signed update",
                f"{verification['verify_us']:.1f}",
                f"{verification['verifications_per_s']:.0f}",
                f"<= {1e6 * VERIFY_SECONDS_TARGET:.0f} us " + ("met" if targets["verify_met"] else "MISSED"),
            ],
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
