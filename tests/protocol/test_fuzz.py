"""No input breaks a core: honest NodeCores fed validly signed but arbitrary messages from the
members the fuzzer plays, replays, garbage frames, timers at any time, computes in any order and
failing, restarts, keep every checked property (see `fuzz_harness`); and the codec refuses
arbitrary and mutated bytes with MessageError only.

The quick tests run in the default suite (hypothesis, derandomised: CI runs the same examples
every time); `test_a_million_inputs_break_no_core` is the long run (``pytest -m slow``). A failure
names its setup, profile, seed and step and the last inputs; replay it with `replay`.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from functools import cache
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qora_p2p.identity import Identity
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.messages import MESSAGE_TYPES, PROTOCOL_VERSION, Hello, Limits, Message
from tests.protocol.fuzz_forge import NO_STEERING
from tests.protocol.fuzz_frames import check_decode, mutate, mutate_structure
from tests.protocol.fuzz_harness import PROFILES, CoreFuzzer
from tests.protocol.fuzz_members import Setup
from tests.protocol.fuzz_properties import known_finding
from tests.protocol.test_core import GENESIS, IDENTITIES

# The clipping rule centred on the previous aggregate, weighted by reputation: the default rule,
# on another model length, so the transition's other code paths run too.
CENTERED = Genesis(
    "core-fuzz-centered",
    tuple(Member(f"m{i}", identity.public_key, "127.0.0.1", 7100 + i) for i, identity in enumerate(IDENTITIES)),
    ModelSpec("synthetic", 3),
    "centered_clipping",
    {"tau_scale": 1.0, "center": "previous"},
)
# Seven members, two of them Byzantine (f = 2): quorums of 5, input sets of at least 5, and a
# proposer rotation and bitmaps the 4-member genesis does not have.
SEVEN_IDENTITIES = tuple(Identity.from_seed(hashlib.sha256(f"core-fuzz-{i}".encode()).digest()) for i in range(7))
SEVEN = Genesis(
    "core-fuzz-seven",
    tuple(Member(f"m{i}", identity.public_key, "127.0.0.1", 7200 + i) for i, identity in enumerate(SEVEN_IDENTITIES)),
    ModelSpec("synthetic", 2),
    "trimmed_mean",
    {"trim": 2},
)
SETUPS = {
    setup.name: setup
    for setup in (
        Setup("one-byzantine", GENESIS, tuple(IDENTITIES), (0, 1, 2)),  # f = 1: honest members must agree
        Setup("one-byzantine-centered", CENTERED, tuple(IDENTITIES), (1, 2, 3)),
        Setup("two-byzantine", GENESIS, tuple(IDENTITIES), (0, 2)),  # more than f: no agreement to check
        Setup("byzantine-quorum", GENESIS, tuple(IDENTITIES), (1,)),  # the fuzzer can certify anything
        Setup("seven-two-byzantine", SEVEN, SEVEN_IDENTITIES, (0, 1, 2, 4, 5)),
    )
}
QUICK_STEPS = 400
# Known findings the forger steers around so that runs explore past them (none open; see
# test_fuzz_findings.py).
STEERING = NO_STEERING
SLOW_INPUTS_MIN = 1_000_000
SLOW_STEPS_PER_SEED = 25_000


def replay(setup: str, seed: int, steps: int, profile: str | None = None) -> CoreFuzzer:
    """Run one seeded fuzzer (what a failure report names) and return it. A known finding
    (`KNOWN_FINDINGS`, each a strict xfail in test_fuzz_findings.py) ends the run and is counted in
    its stats; any other exception fails it."""
    fuzzer = CoreFuzzer(SETUPS[setup], Random(seed), profile, STEERING)
    try:
        fuzzer.run(steps)
    except Exception as error:
        finding = known_finding(error)
        if finding is None:
            error.add_note(
                f"replay: tests.protocol.test_fuzz.replay({setup!r}, {seed}, {steps}, {fuzzer.profile.name!r})"
            )
            raise
        fuzzer.stats[f"known finding: {finding}"] += 1
    return fuzzer


@pytest.mark.parametrize("setup", sorted(SETUPS))
@settings(max_examples=8, derandomize=True, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), steps=st.integers(1, QUICK_STEPS))
def test_arbitrary_inputs_break_no_core(setup: str, seed: int, steps: int) -> None:
    """Short seeded runs. Hypothesis picks the seeds (the same ones every time) and, on a failure,
    shrinks the step count to the first failing input: a run is a prefix of any longer run of its
    seed. (Hypothesis drawing every choice itself overruns its buffer within a few dozen steps.)"""
    replay(setup, seed, steps)


@pytest.mark.parametrize("profile", [profile.name for profile in PROFILES])
def test_a_seeded_run_reaches_commits_and_every_message_type(profile: str) -> None:
    """The fuzzer is not vacuous: a few thousand inputs forge messages of every type, detect
    equivocation, penalise the Byzantine member and commit rounds (many, on a calm network)."""
    fuzzer = replay("one-byzantine", 7, 3_000, profile)
    stats = fuzzer.stats
    assert all(stats[f"forged {kind.__name__}"] > 0 for kind in MESSAGE_TYPES), stats
    assert stats["penalty"] > 0 and stats["event equivocation"] > 0, stats
    assert stats["commit"] >= {"calm": 40, "hostile": 1}.get(profile, 0), stats
    assert fuzzer.inputs >= 2_000


@cache
def sample_frames() -> tuple[bytes, ...]:
    """Encodings of messages of every type, honest and forged, from a short seeded run."""
    fuzzer = replay("byzantine-quorum", 3, 1_500, "hostile")
    # A Hello goes out only when a link comes up, which a short run may not see: add a member's own.
    hello = Hello(PROTOCOL_VERSION, 1, bytes(32))
    messages: list[Message] = [*fuzzer.knowledge.observed, *fuzzer.knowledge.forged, hello]
    assert {type(message) for message in messages} == set(MESSAGE_TYPES)
    return tuple(message.encode() for message in messages)


LIMITS = Limits(GENESIS.size, GENESIS.model.dimension)


@settings(max_examples=200, derandomize=True)
@given(data=st.binary(max_size=400))
def test_decode_refuses_arbitrary_bytes_with_message_error_only(data: bytes) -> None:
    """Any bytes decode to a canonical message or raise MessageError, nothing else."""
    check_decode(data, LIMITS)


@settings(max_examples=200, derandomize=True)
@given(rng=st.randoms(use_true_random=False), index=st.integers(0, 10**6), structural=st.booleans())
def test_decode_refuses_mutated_frames_with_message_error_only(rng: Random, index: int, structural: bool) -> None:
    """Valid frames with bytes flipped, inserted, deleted or cut, or with one decoded field changed
    and packed again: each decodes to a canonical message or raises MessageError, nothing else."""
    frames = sample_frames()
    frame = frames[index % len(frames)]
    check_decode(mutate_structure(rng, frame) if structural else mutate(rng, frame), LIMITS)


@pytest.mark.slow
def test_a_million_inputs_break_no_core(capsys: pytest.CaptureFixture[str]) -> None:
    """At least SLOW_INPUTS_MIN core inputs over seeded runs of every setup and profile; every
    check after every input passes, and the runs reach what they are meant to exercise."""
    totals: Counter[str] = Counter()
    peaks: Counter[str] = Counter()
    inputs = decodes = seeds = 0
    names = sorted(SETUPS)
    started = time.perf_counter()
    while inputs < SLOW_INPUTS_MIN:
        setup = names[seeds % len(names)]
        profile = PROFILES[(seeds // len(names)) % len(PROFILES)].name
        fuzzer = replay(setup, 1_000 + seeds, SLOW_STEPS_PER_SEED, profile)
        inputs += fuzzer.inputs
        decodes += fuzzer.decodes
        totals.update(fuzzer.stats)
        peaks |= Counter(fuzzer.peaks)  # the larger of each
        seeds += 1
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\ncore fuzzer: {inputs} core inputs and {decodes} decodes over {seeds} seeds in {elapsed:.0f} s")
        print(f"throughput: {inputs / elapsed:.0f} core inputs/s")
        for key, count in sorted(totals.items()):
            print(f"  {key}: {count}")
        print("largest sizes seen (bounds: fuzz_properties.table_bounds):")
        for key, size in sorted(peaks.items()):
            print(f"  {key}: {size}")
    assert inputs >= SLOW_INPUTS_MIN
    assert totals["commit"] > 1_000 and totals["install"] > 0 and totals["restart"] > 0, totals
    kinds = [kind.__name__ for kind in MESSAGE_TYPES]
    assert all(totals[f"delivered {kind}"] + totals[f"forged {kind}"] > 0 for kind in kinds), totals
