"""Sweeps: thousands of seeded configurations, every checker on, each failure with its replay line.

Theory of operation
-------------------
`sweep_config` draws one configuration from its seed alone: N from 4 to 31 (small networks more
often, as a run costs about N**2), f or fewer Byzantine members, one of every strategy and every
adversary (and "mixed" of each), one of every fault profile (the long stall too), 2 or 3 rounds, a
small update length, a robust rule (centered clipping, median, or trimmed mean trimming f), the
ledger on or off. A run with an adversary of `KNOWN_FAILURES` that nearly always stalls the
network has at most `STALLING_NODES_MAX` members: a larger one costs tens of seconds and shows
nothing new.
Every configuration is one ``qora-sim`` can express, so `replay_command` replays a failure event
for event. `run_sweep` runs seeds in worker processes (spawned, each with its own interpreter) and
returns every `Outcome`, in seed order.

`KNOWN_FAILURES` lists protocol bugs the adversaries found that are still open, each with the test
that pins it as a strict xfail: a failed run is *known* when one of its Byzantine members runs that
adversary and its first violation is of that kind. A sweep passes when it has no other failure,
and (over enough seeds) when every known failure still occurs: once one is fixed, its entry goes.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from qora_p2p.errors import QoraError
from qora_p2p.protocol.genesis import default_rule_params
from qora_p2p.sim.adversaries import ADVERSARIES
from qora_p2p.sim.config import STRATEGIES, SimConfig, replay_command
from qora_p2p.sim.faults import ALL_FAULT_PROFILES
from qora_p2p.sim.loop import run_simulation

__all__ = ["KNOWN_FAILURES", "NODES_MAX", "NODES_MIN", "Outcome", "SweepReport", "run_seed", "run_sweep", "sweep_config"]

NODES_MIN, NODES_MAX = 4, 31
# (share of the runs, smallest N, largest N): most runs small, some large ones
NODE_BANDS = ((0.65, 4, 9), (0.25, 10, 18), (0.10, 19, 31))
STALLING_NODES_MAX = 7  # a run with an adversary that nearly always stalls: a larger N costs tens of seconds
BEHAVIOURS = (*(("strategy", name) for name in ("mixed", *STRATEGIES)), *(("adversary", name) for name in ("mixed", *ADVERSARIES)))
RULES = ("centered_clipping", "median", "trimmed_mean")
DIMENSIONS = (8, 16, 32)
ROUNDS = (2, 3)
CHUNK_SEEDS = 16  # seeds a worker takes at a time: few round trips, still balanced at the end


@dataclass(frozen=True, slots=True)
class KnownFailure:
    adversary: str
    prefixes: tuple[str, ...]  # what the run's first violation starts with
    bug: str
    test: str  # the strict xfail that pins it
    nodes_max: int = NODES_MAX  # largest N of a sweep run with this adversary


KNOWN_FAILURES: tuple[KnownFailure, ...] = ()  # none open: stripped_history, update_versions and bogus_digests are fixed


def _nodes(rng: random.Random, nodes_max: int) -> int:
    draw, low, high = rng.random(), NODES_MIN, nodes_max
    for share, band_low, band_high in NODE_BANDS:
        if draw < share:
            low, high = band_low, band_high
            break
        draw -= share
    return rng.randint(min(low, nodes_max), min(high, nodes_max))


def sweep_config(seed: int, nodes_max: int = NODES_MAX) -> SimConfig:
    """The configuration of one sweep seed (see the module notes)."""
    rng = random.Random(f"qora-sim/sweep/{seed}")
    nodes = _nodes(rng, nodes_max)
    byzantine = (nodes - 1) // 3 if rng.random() < 0.6 else rng.randint(0, (nodes - 1) // 3)
    kind, behaviour = rng.choice(BEHAVIOURS)
    if kind == "adversary" and nodes > _nodes_max(behaviour, byzantine):
        nodes = _nodes_max(behaviour, byzantine)
        byzantine = min(byzantine, (nodes - 1) // 3)
    faulty = (nodes - 1) // 3
    rule = rng.choice(RULES)
    return SimConfig(
        nodes=nodes,
        byzantine=byzantine,
        rounds=rng.choice(ROUNDS),
        seed=seed,
        dimension=rng.choice(DIMENSIONS),
        faults=rng.choice(list(ALL_FAULT_PROFILES)),
        strategy=behaviour if kind == "strategy" else "mixed",
        adversary=behaviour if kind == "adversary" else "",
        rule=rule,
        rule_params=tuple(default_rule_params(rule).items()),  # as qora-sim --rule sets them
        ledger=rng.random() < 0.85,
        genesis_settings=(f"aggregation.trim={faulty}",) if rule == "trimmed_mean" else (),
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """One seed's run: its configuration's text, its replay line, the first violations."""

    seed: int
    config: str
    replay: str
    violations: tuple[str, ...]
    sim_ms: int
    wall_s: float
    known: str = ""  # the adversary of a `KNOWN_FAILURES` entry this failure is

    @property
    def ok(self) -> bool:
        return not self.violations


def _nodes_max(adversary: str, byzantine: int) -> int:
    """The largest N of a run whose ``byzantine`` members ``adversary`` drives (`KNOWN_FAILURES`)."""
    names = list(ADVERSARIES)[:byzantine] if adversary == "mixed" else [adversary]
    return min([known.nodes_max for known in KNOWN_FAILURES if known.adversary in names], default=NODES_MAX)


def _known(config: SimConfig, first: str) -> str:
    adversaries = {config.adversary_of(member) for member in config.byzantine_members}
    for known in KNOWN_FAILURES:
        if known.adversary in adversaries and first.startswith(known.prefixes):
            return known.adversary
    return ""


def run_seed(seed: int, nodes_max: int = NODES_MAX) -> Outcome:
    """Run one seed's configuration (an error building it is a failure too)."""
    config = sweep_config(seed, nodes_max)
    started = time.perf_counter()
    try:
        result = run_simulation(config)
    except QoraError as error:
        return Outcome(seed, str(config), replay_command(config), (f"sweep: the configuration is refused: {error}",), 0, 0.0)
    violations = tuple(result.violations[:3])
    known = _known(config, violations[0]) if violations else ""
    return Outcome(seed, str(config), replay_command(config), violations, result.sim_ms, time.perf_counter() - started, known)


@dataclass
class SweepReport:
    """Every outcome of a sweep, in seed order."""

    outcomes: list[Outcome]
    wall_s: float
    workers: int
    behaviours: Counter[str] = field(default_factory=Counter)  # runs per strategy or adversary

    @property
    def failures(self) -> list[Outcome]:
        """Failures that no `KNOWN_FAILURES` entry explains."""
        return [outcome for outcome in self.outcomes if not outcome.ok and not outcome.known]

    @property
    def known(self) -> Counter[str]:
        return Counter(outcome.known for outcome in self.outcomes if outcome.known)

    def lines(self, shown: int = 20) -> list[str]:
        """A summary, then up to ``shown`` unexplained failures with their replay lines."""
        simulated = sum(outcome.sim_ms for outcome in self.outcomes) / 1000
        lines = [
            f"{len(self.outcomes)} runs in {self.wall_s:.0f} s on {self.workers} worker(s) ({simulated:.0f} s simulated): "
            f"{len(self.outcomes) - len(self.failures) - sum(self.known.values())} passed, {sum(self.known.values())} known failures, "
            f"{len(self.failures)} new failures"
        ]
        for known in KNOWN_FAILURES:
            lines.append(f"  known: {known.adversary}: {self.known.get(known.adversary, 0)} runs ({known.bug}; {known.test})")
        for outcome in self.failures[:shown]:
            lines += [f"FAILED seed {outcome.seed}: {outcome.violations[0]}", f"  {outcome.config}", f"  replay: {outcome.replay}"]
        return lines


def run_sweep(
    seeds: Iterable[int],
    workers: int = 2,
    nodes_max: int = NODES_MAX,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> SweepReport:
    """Run every seed's configuration, in ``workers`` processes (1: in this one)."""
    seeds = list(seeds)
    started = time.perf_counter()
    task = partial(run_seed, nodes_max=nodes_max)
    outcomes = []
    if workers <= 1:
        for seed in seeds:
            outcomes.append(task(seed))
            if on_outcome is not None:
                on_outcome(outcomes[-1])
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for outcome in pool.imap_unordered(task, seeds, chunksize=CHUNK_SEEDS):
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
    outcomes.sort(key=lambda outcome: outcome.seed)
    behaviours = Counter(_behaviour(sweep_config(seed, nodes_max)) for seed in seeds)
    return SweepReport(outcomes, time.perf_counter() - started, max(1, workers), behaviours)


def _behaviour(config: SimConfig) -> str:
    return f"adversary {config.adversary}" if config.adversary else f"strategy {config.strategy}"
