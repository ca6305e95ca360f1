"""What a test-network member plugs into its node: misbehaviour, forged updates, link faults.

`member_hooks` turns a node profile's Byzantine settings (`qora_p2p.testnet.profile`) and a scenario
runner's fault file into the node's `NodeHooks`; an honest profile with no fault file gets none,
so the node runs exactly as in production.
"""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

from qora_p2p.identity import Identity
from qora_p2p.learning.attacks import Attack
from qora_p2p.node.driver import NodeHooks
from qora_p2p.node.workload import Workload
from qora_p2p.protocol.behaviour import Misbehaviour
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.testnet.faults import FaultInjector
from qora_p2p.testnet.forging import Forger

__all__ = ["member_hooks"]


def member_hooks(
    genesis: Genesis,
    identity: Identity,
    workload: Workload,
    *,
    behaviour: str | None = None,
    behaviour_seed: int = 0,
    fault_file: Path | None = None,
) -> NodeHooks:
    """The hooks of one test member.

    Args:
        workload: the member's workload; a learning attack in its config turns on forging.
        behaviour: a protocol misbehaviour (`qora_p2p.protocol.behaviour.PROTOCOL_BEHAVIOURS`).
        behaviour_seed: the misbehaviour's random stream.
        fault_file: a JSON file of link faults the scenario runner rewrites.

    Raises:
        ConfigError: an unknown behaviour.
    """
    member = workload.member
    effect_filter = None
    if behaviour:
        effect_filter = Misbehaviour(behaviour, identity, genesis.hash, member, genesis.size, random.Random(behaviour_seed))
    forger = Forger(workload) if type(workload.attack) is not Attack else None
    injector = FaultInjector(member) if fault_file is not None else None
    names = [f"behaviour:{behaviour}"] if behaviour else []
    names += [f"attack:{workload.attack.name}"] if forger else []
    names += ["fault_file"] if injector else []
    return NodeHooks(
        effect_filter=effect_filter,
        observe=forger.observe if forger is not None else None,
        forge=forger,
        link_filter=injector,
        tasks=(partial(injector.watch, fault_file, genesis.size),) if injector is not None and fault_file is not None else (),
        names=tuple(names),
    )
