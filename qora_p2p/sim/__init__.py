"""The deterministic simulator: N unmodified protocol cores in one process, replayable from a seed.

See `qora_p2p.sim.loop` for the theory of operation, `qora_p2p.sim.adversary` for Byzantine
members driven by arbitrary code, and `qora_p2p.sim.sweep` for sweeps over thousands of seeds.
"""

from qora_p2p.sim.adversaries import ADVERSARIES
from qora_p2p.sim.adversary import Adversary, BaseAdversary, Observed, World
from qora_p2p.sim.config import replay_command
from qora_p2p.sim.faults import ALL_FAULT_PROFILES
from qora_p2p.sim.loop import (
    FAULT_PROFILES,
    STRATEGIES,
    Fault,
    Links,
    RoundStats,
    SimConfig,
    SimResult,
    Simulation,
    run_simulation,
)

__all__ = [
    "ADVERSARIES",
    "ALL_FAULT_PROFILES",
    "FAULT_PROFILES",
    "STRATEGIES",
    "Adversary",
    "BaseAdversary",
    "Fault",
    "Links",
    "Observed",
    "RoundStats",
    "SimConfig",
    "SimResult",
    "Simulation",
    "World",
    "replay_command",
    "run_simulation",
]
