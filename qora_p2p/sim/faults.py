"""Simulated links and faults: delays, loss, duplicates, crashes, partitions, and the named profiles.

A fault profile maps a configuration and a seeded random stream to the network's links and a
schedule of faults, so a run's faults are as reproducible as everything else in it. Faults stop
well before the end of a run (liveness is checked once the network is calm again).

`FAULT_PROFILES` are the profiles the pinned trace hashes cover (every strategy meets each of
them); `STALL_PROFILES` came later: ``stall`` splits the members into two halves, neither a quorum,
for `STALL_MS` (longer than a message budget window and many capped timeouts), then heals.
`ALL_FAULT_PROFILES` holds both.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qora_p2p.sim.loop import SimConfig

__all__ = ["ALL_FAULT_PROFILES", "FAULT_PROFILES", "STALL_PROFILES", "Fault", "Links"]

STALL_MS = 40_000


@dataclass(frozen=True, slots=True)
class Links:
    """The network: one-way delay uniform in [low, high] ms, drop and duplicate probabilities."""

    delay_ms: tuple[int, int] = (5, 40)
    drop: float = 0.0
    duplicate: float = 0.0


@dataclass(frozen=True, slots=True)
class Fault:
    """At ``at_ms``: crash or restart members, partition them from the rest, or heal."""

    at_ms: int
    kind: str  # "crash" | "restart" | "partition" | "heal" | "calm" (links back to no loss)
    members: tuple[int, ...] = ()


def _profile_none(config: SimConfig, rng: random.Random) -> tuple[Links, list[Fault]]:
    return Links(), []


def _profile_lossy(config: SimConfig, rng: random.Random) -> tuple[Links, list[Fault]]:
    return Links((5, 120), drop=0.05, duplicate=0.02), [Fault(config.rounds * 1500, "calm")]


def _profile_partition(config: SimConfig, rng: random.Random) -> tuple[Links, list[Fault]]:
    honest = [member for member in range(config.nodes) if member not in config.byzantine_members]
    minority = tuple(sorted(rng.sample(honest, max(1, (config.nodes - 1) // 3 - len(config.byzantine_members) or 1))))
    start = 1500
    return Links(), [Fault(start, "partition", minority), Fault(start + 8000, "heal")]


def _profile_crash(config: SimConfig, rng: random.Random) -> tuple[Links, list[Fault]]:
    honest = [member for member in range(config.nodes) if member not in config.byzantine_members]
    faults = []
    for index, member in enumerate(rng.sample(honest, min(len(honest), 2))):
        down = 800 + 2500 * index + rng.randrange(500)
        faults += [Fault(down, "crash", (member,)), Fault(down + 2000 + rng.randrange(2000), "restart", (member,))]
    return Links(), faults


def _profile_chaos(config: SimConfig, rng: random.Random) -> tuple[Links, list[Fault]]:
    links, lossy = _profile_lossy(config, rng)
    _, partition = _profile_partition(config, rng)
    _, crashes = _profile_crash(config, rng)
    return links, sorted(lossy + partition + crashes, key=lambda fault: fault.at_ms)


FAULT_PROFILES: dict[str, Callable[[SimConfig, random.Random], tuple[Links, list[Fault]]]] = {
    "none": _profile_none,
    "lossy": _profile_lossy,
    "partition": _profile_partition,
    "crash": _profile_crash,
    "chaos": _profile_chaos,
}


def _profile_stall(config: SimConfig, rng: random.Random) -> tuple[Links, list[Fault]]:
    members = list(range(config.nodes))
    rng.shuffle(members)
    half = tuple(sorted(members[: config.nodes // 2]))
    start = 150 + rng.randrange(300)  # in round 1 or 2 (the first commit comes after about 200-400 ms)
    return Links(), [Fault(start, "partition", half), Fault(start + STALL_MS, "heal")]


STALL_PROFILES: dict[str, Callable[[SimConfig, random.Random], tuple[Links, list[Fault]]]] = {"stall": _profile_stall}
ALL_FAULT_PROFILES = {**FAULT_PROFILES, **STALL_PROFILES}
