"""The configurations whose simulator trace hashes are pinned in ``trace_hashes.json``.

Every strategy (and "mixed") meets every fault profile once, on varied sizes, seeds, rules and
ledger settings. A trace hash covers every event the simulator processed (deliveries by CRC-32 of
their bytes, timers, trainings, computations, faults, core events), so an equal hash means the
protocol behaved identically, message for message. Regenerate the fixture only in a commit that
changes behaviour on purpose and says why:

    python3 -m tests.sim.trace_fixture > tests/sim/trace_hashes.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import cast

FIXTURE = Path(__file__).with_name("trace_hashes.json")
SIZES = ((4, 1), (5, 1), (7, 2), (10, 3))
RULES = ("centered_clipping", "median", "trimmed_mean", "fedavg")
# The strategies pinned first, in this order; strategies added later come after them, so adding
# one adds configurations and never reseeds the existing ones.
FIRST_STRATEGIES = (
    "mixed",
    "equivocate_updates",
    "equivocate_proposals",
    "conflicting_votes",
    "invalid_proposals",
    "withhold_votes",
    "silent",
    "junk",
    "replay",
    "sign_flip",
    "scaling",
)


def configurations() -> list[dict[str, object]]:
    """The pinned configurations, as keyword arguments of `SimConfig` (JSON-friendly)."""
    from qora_p2p.sim import FAULT_PROFILES, STRATEGIES  # noqa: PLC0415

    assert set(FIRST_STRATEGIES) <= {"mixed", *STRATEGIES}, "a pinned strategy no longer exists"
    strategies = (*FIRST_STRATEGIES, *(strategy for strategy in STRATEGIES if strategy not in FIRST_STRATEGIES))
    configs: list[dict[str, object]] = []
    for index, (strategy, faults) in enumerate((s, f) for s in strategies for f in FAULT_PROFILES):
        nodes, byzantine = SIZES[index % len(SIZES)]
        rule = RULES[index // len(SIZES) % len(RULES)]
        config: dict[str, object] = {
            "nodes": nodes,
            "byzantine": byzantine,
            "rounds": 4,
            "seed": 1000 + index,
            "dimension": 16,
            "faults": faults,
            "strategy": strategy,
            "ledger": index % 7 != 3,
        }
        if rule != "centered_clipping":
            config["rule"] = rule
            config["rule_params"] = [["trim", 1]] if rule == "trimmed_mean" else []
        configs.append(config)
    return configs


def sim_config(arguments: dict[str, object]):  # the SimConfig of the tree under test, so not annotated
    from qora_p2p.sim import SimConfig  # noqa: PLC0415

    values = dict(arguments)
    if "rule_params" in values:
        pairs = cast("list[list[object]]", values["rule_params"])  # JSON arrays, see configurations()
        values["rule_params"] = tuple(tuple(pair) for pair in pairs)
    return SimConfig(**values)  # type: ignore[arg-type]  # JSON-typed values; SimConfig checks them


def main() -> None:
    from qora_p2p.sim import run_simulation  # noqa: PLC0415

    entries = []
    for arguments in configurations():
        result = run_simulation(sim_config(arguments))
        entries.append({"config": arguments, "trace_hash": result.trace_hash, "ok": result.ok})
    json.dump(entries, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
