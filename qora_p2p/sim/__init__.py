"""The deterministic simulator: N unmodified protocol cores in one process, replayable from a seed.

See `qora_p2p.sim.loop` for the theory of operation.
"""

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

__all__ = ["FAULT_PROFILES", "STRATEGIES", "Fault", "Links", "RoundStats", "SimConfig", "SimResult", "Simulation", "run_simulation"]
