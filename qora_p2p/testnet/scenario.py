"""Scenarios: N real node processes, Byzantine profiles and a fault schedule, from one TOML file.

Theory of operation
-------------------
A scenario file (``scenarios/*.toml``) names everything a run needs::

    name = "quickstart"
    seed = 7                         # Byzantine placement, data split, attack randomness
    rounds = 25

    [network]
    nodes = 10
    net = "transport"                # or "netns": a network namespace per member, faults on packets

    [genesis.model]                  # the genesis: a peers.toml fragment, same tables and keys
    kind = "logistic"                # logistic | mlp (with hidden = [..]) | synthetic (with dimension)

    [genesis.aggregation]
    rule = "centered_clipping"       # with no parameters: the rule's defaults (tau_scale = 1.0, ...)

    [genesis.reputation]             # any ledger parameter; enabled = false turns the ledger off
    ban_rounds = 50

    [genesis.timing]
    collect_timeout_ms = 200

    [workload]                       # every member's local training (profiles may override)
    dataset = "digits"
    partition = "dirichlet"
    alpha = 0.5
    steps = 10                       # local minibatch steps per round (or epochs = E passes)

    [[byzantine]]                    # profiles from nodes/ (or a path), with counts
    profile = "sign_flip"
    count = 1

    [[faults]]                       # when the first honest member commits at_round and no member
                                     # abstains (a start-up straggler is already the tolerated fault),
                                     # or at_s seconds in
    at_round = 5
    action = "kill"                  # kill | restart | stop | continue | start | partition | heal | delay | drop
                                     # and, with net = "netns": link_down | link_up | rate | firewall_close | firewall_open
    nodes = [2]                      # member indices (partition: groups = [[...], [...]])
                                     # delay_ms = 50, drop = 0.1, rate_kbit = 2000 for those actions

The ``[genesis]`` table is read by the genesis schema itself (`qora_p2p.protocol.genesis`), so it
takes every peers.toml parameter under the same name and fails with the same messages, prefixed
``genesis.``; the runner fills in ``network_id`` (from the name) and ``members``. For a bundled
dataset the model's ``features`` and ``classes`` default to the dataset's shape
(`qora_p2p.node.network.with_model_defaults`), and ``kind`` to logistic.

Byzantine members are placed at indices drawn from the seed. Members named by a ``start`` fault
start late. Every value is validated on load; an error names the field (``faults[2].action``).

`run_scenario` writes the network, starts the processes (`qora_p2p.testnet.cluster`), applies faults as
their triggers come, prints one progress line per round (honest accuracy, hash agreement, bans),
then stops everything and writes the run directory (see `qora_p2p.testnet.report`).

Link faults go through `qora_p2p.testnet.links`: by default they are injected in each node's
transport (a fault file the node re-reads; messages between groups are dropped while TCP
connections stay up, and delay and drop act on every member). With ``net = "netns"`` (or
``qora-scenario run --net netns``) every member runs in its own network namespace and faults act
on packets (`qora_p2p.testnet.netns`); the namespaces are torn down however the run ends. The
report states the method.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qora_p2p.errors import ConfigError
from qora_p2p.learning.training import TrainingConfig
from qora_p2p.node.network import DATASET_DEFAULT, DATASET_SHAPES, with_model_defaults
from qora_p2p.protocol.genesis import Genesis, ModelSpec, genesis_from_fragment, placeholder_members
from qora_p2p.schema import Table, merge, read_toml
from qora_p2p.testnet.cluster import LocalCluster
from qora_p2p.testnet.links import NETNS_ONLY_ACTIONS, NETS, Links, TransportLinks
from qora_p2p.testnet.netns import RATE_KBIT_MAX, PacketNetwork
from qora_p2p.testnet.profile import Profile, load_profile

__all__ = ["Fault", "Scenario", "ScenarioRun", "load_scenario", "parse_scenario", "run_scenario", "with_genesis", "with_net"]

NODES_MAX = 64  # processes on one machine; beyond this use several machines
ROUNDS_MAX = 10_000
ACTIONS = ("kill", "restart", "stop", "continue", "start", "partition", "heal", "delay", "drop", *NETNS_ONLY_ACTIONS)
MEMBER_ACTIONS = ("kill", "restart", "stop", "continue", "start", "link_down", "link_up", "rate", "firewall_close", "firewall_open")
POLL_S = 0.25  # how often the runner looks at the nodes
SCENARIO_BYTES_MAX = 256 << 10
NETWORK_ID_LENGTH_MAX = 60  # a network id is derived from the scenario name, kept under the 64 allowed


@dataclass(frozen=True)
class Fault:
    action: str
    nodes: tuple[int, ...] = ()
    groups: tuple[tuple[int, ...], ...] = ()
    at_round: int | None = None
    at_s: float | None = None
    delay_ms: int = 0
    drop: float = 0.0
    rate_kbit: int = 0

    def describe(self) -> str:
        when = f"round {self.at_round}" if self.at_round is not None else f"{self.at_s:g} s"
        target = f" groups {[list(g) for g in self.groups]}" if self.groups else (f" nodes {list(self.nodes)}" if self.nodes else "")
        extra = {"delay": f" {self.delay_ms} ms", "drop": f" p={self.drop:g}", "rate": f" {self.rate_kbit} kbit/s"}.get(self.action, "")
        return f"at {when}: {self.action}{target}{extra}"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    seed: int
    rounds: int
    nodes: int
    fragment: Mapping[str, Any]  # the [genesis] table, model defaults filled in
    genesis: Genesis  # the fragment read by the genesis schema, with placeholder members
    workload: Mapping[str, Any]
    byzantine: tuple[tuple[str, int], ...]  # (profile name or path, count)
    faults: tuple[Fault, ...]
    stall_timeout_s: float
    source: Path | None = None
    net: str = "transport"  # how link faults are made: qora_p2p.testnet.links.NETS
    profiles: dict[str, tuple[Path, Profile]] = field(default_factory=dict)

    @property
    def byzantine_count(self) -> int:
        return sum(count for _, count in self.byzantine)

    @property
    def model(self) -> ModelSpec:
        return self.genesis.model

    @property
    def rule(self) -> str:
        return self.genesis.rule

    @property
    def network_id(self) -> str:
        return self.genesis.network_id

    @property
    def origin(self) -> str:
        return str(self.source) if self.source else "scenario"


def _network_id(name: str) -> str:
    return name.replace(" ", "-")[:NETWORK_ID_LENGTH_MAX] or "scenario"


def _genesis(fragment: Mapping[str, Any], name: str, nodes: int, dataset: str, origin: str) -> tuple[dict[str, Any], Genesis]:
    """The scenario's fragment with model defaults, and the genesis it makes for ``nodes`` members."""
    completed = with_model_defaults(fragment, dataset)
    genesis = genesis_from_fragment(completed, _network_id(name), placeholder_members(nodes), origin, "genesis")
    shape = DATASET_SHAPES.get(dataset)
    if shape is not None and genesis.model.kind != "synthetic" and (genesis.model.features, genesis.model.classes) != shape:
        raise Table(completed, "genesis.model", origin).error(
            "features", f"{dataset} has {shape[0]} features and {shape[1]} classes, the model {genesis.model.features} and {genesis.model.classes}"
        )
    return completed, genesis


def with_genesis(scenario: Scenario, changes: Mapping[str, Any]) -> Scenario:
    """``scenario`` with ``changes`` (a genesis fragment) laid over its ``[genesis]`` table.

    Raises:
        ConfigError: the changed genesis is invalid (named as in a scenario file).
    """
    dataset = str(scenario.workload.get("dataset", DATASET_DEFAULT))
    fragment, genesis = _genesis(merge(scenario.fragment, changes), scenario.name, scenario.nodes, dataset, scenario.origin)
    return replace(scenario, fragment=fragment, genesis=genesis)


def _fault(reader: Table, nodes: int) -> Fault:
    reader.only("at_round", "at_s", "action", "nodes", "groups", "delay_ms", "drop", "rate_kbit")
    action = reader.get("action", str)
    if action not in ACTIONS:
        raise reader.error("action", f"must be one of {', '.join(ACTIONS)}, got {action!r}")
    at_round = reader.get("at_round", int, None, low=0, high=ROUNDS_MAX)
    at_s = reader.get("at_s", (int, float), None, low=0, high=86_400)
    if (at_round is None) == (at_s is None):
        raise reader.error("at_round", "give exactly one of at_round and at_s")

    def members(values: Any, where: str) -> tuple[int, ...]:
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < nodes for v in values):
            raise reader.error(where, f"must be a list of member indices in 0..{nodes - 1}")
        return tuple(values)

    listed = members(reader.get("nodes", list, []), "nodes")
    groups: tuple[tuple[int, ...], ...] = ()
    if action == "partition":
        raw = reader.get("groups", list)
        groups = tuple(members(group, "groups") for group in raw)
        flat = [member for group in groups for member in group]
        if len(groups) < 2 or len(flat) != len(set(flat)):
            raise reader.error("groups", "need at least two disjoint groups")
    elif action in MEMBER_ACTIONS and not listed:
        raise reader.error("nodes", f"{action} needs the members it acts on")
    delay_ms = reader.get("delay_ms", int, 0, low=0, high=10_000)
    drop = float(reader.get("drop", (int, float), 0.0, low=0.0, high=1.0))
    rate_kbit = reader.get("rate_kbit", int, 0, low=0, high=RATE_KBIT_MAX)
    if action == "rate" and not rate_kbit:
        raise reader.error("rate_kbit", "rate needs rate_kbit, the limit in kbit/s (at least 1)")
    return Fault(action, listed, groups, at_round, None if at_s is None else float(at_s), delay_ms, drop, rate_kbit)


def with_net(scenario: Scenario, net: str) -> Scenario:
    """``scenario`` run on ``net`` (transport or netns).

    Raises:
        ConfigError: ``net`` is unknown, or a fault needs packet-level links that ``net`` lacks.
    """
    origin = scenario.origin
    if net not in NETS:
        raise ConfigError(f"{origin}: network.net must be one of {', '.join(NETS)}, got {net!r}")
    if net == "transport":
        for index, fault in enumerate(scenario.faults):
            if fault.action in NETNS_ONLY_ACTIONS:
                raise ConfigError(f"{origin}: faults[{index}].action: {fault.action} needs a packet-level network (network.net = \"netns\" or --net netns)")
            if fault.action in ("delay", "drop") and fault.nodes and sorted(fault.nodes) != list(range(scenario.nodes)):
                raise ConfigError(f"{origin}: faults[{index}].nodes: transport fault injection applies {fault.action} to every member; some members need --net netns")
    return replace(scenario, net=net)


def parse_scenario(document: Mapping[str, Any], source: Path | None = None) -> Scenario:
    """Validate a parsed scenario document.

    Raises:
        ConfigError: the message names the file and the field at fault.
    """
    origin = str(source) if source else "scenario"
    root = Table(document, "", origin)
    root.only("name", "description", "seed", "rounds", "stall_timeout_s", "network", "genesis", "workload", "byzantine", "faults")
    name = root.get("name", str, source.stem if source else "scenario")
    network = root.table_of("network")
    assert network is not None
    network.only("nodes", "net")
    nodes = network.get("nodes", int, low=1, high=NODES_MAX)
    net = network.get("net", str, "transport")
    workload_table = root.table_of("workload", required=False) or Table({}, "workload", origin)
    workload_table.only("dataset", "partition", "alpha", "data_seed", *[item for item in TrainingConfig.__dataclass_fields__])
    dataset = workload_table.get("dataset", str, DATASET_DEFAULT)
    genesis_table = root.table_of("genesis", required=False)
    fragment, genesis = _genesis(genesis_table.table if genesis_table else {}, name, nodes, dataset, origin)
    byzantine = []
    for reader in root.tables("byzantine"):
        reader.only("profile", "count")
        byzantine.append((reader.get("profile", str), reader.get("count", int, 1, low=0, high=NODES_MAX)))
    faults = [_fault(reader, nodes) for reader in root.tables("faults")]
    scenario = Scenario(
        name=name,
        description=root.get("description", str, ""),
        seed=root.get("seed", int, 0, low=0, high=2**31),
        rounds=root.get("rounds", int, 20, low=1, high=ROUNDS_MAX),
        nodes=nodes,
        fragment=fragment,
        genesis=genesis,
        workload=dict(workload_table.table),
        byzantine=tuple(byzantine),
        faults=tuple(faults),
        stall_timeout_s=float(root.get("stall_timeout_s", (int, float), 90, low=1, high=86_400)),
        source=source,
    )
    if scenario.byzantine_count >= nodes:
        raise root.error("byzantine", f"{scenario.byzantine_count} Byzantine members leave no honest member of {nodes}")
    scenario.profiles.update({profile: resolve_profile(profile, source) for profile, _ in byzantine})
    return with_net(scenario, net)


def resolve_profile(name: str, source: Path | None) -> tuple[Path, Profile]:
    """A profile by path, or by name in ``nodes/`` (beside the scenario's folder, then here)."""
    candidates = [Path(name)] if name.endswith(".toml") else []
    bases = ([source.resolve().parent.parent / "nodes", source.resolve().parent / "nodes"] if source else []) + [Path("nodes")]
    candidates += [base / f"{name}.toml" for base in bases]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve(), load_profile(candidate)
    raise ConfigError(f"profile {name!r}: no file {name}.toml in {', '.join(str(base) for base in bases)}")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file.

    Raises:
        ConfigError: unreadable, not TOML, or invalid (the message names the field).
    """
    source = Path(path)
    document = read_toml(source, "scenario", SCENARIO_BYTES_MAX)
    return parse_scenario(document, source)


# ------------------------------------------------------------------------------------------ running


@dataclass
class ScenarioRun:
    """What happened in a run (the report is made from it)."""

    scenario: Scenario
    directory: Path
    roles: dict[int, str]  # member -> profile name ("honest" for honest members)
    reference: int  # the honest member whose log lines the report prefers (the others' fill gaps)
    applied: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    interrupted: bool = False
    failure: str | None = None
    seconds: float = 0.0
    killed: set[int] = field(default_factory=set)  # members killed and not (yet) restarted
    method: str = TransportLinks.method  # how link faults were made, for the report

    @property
    def honest(self) -> list[int]:
        return [member for member, role in sorted(self.roles.items()) if role == "honest"]


def assign_roles(scenario: Scenario) -> dict[int, str]:
    """Byzantine members at indices drawn from the scenario seed; the rest honest."""
    rng = random.Random(f"qora-scenario/{scenario.seed}")
    chosen = rng.sample(range(scenario.nodes), scenario.byzantine_count)
    roles = dict.fromkeys(range(scenario.nodes), "honest")
    position = 0
    for profile, count in scenario.byzantine:
        for member in chosen[position : position + count]:
            roles[member] = profile
        position += count
    return roles


def coalitions(scenario: Scenario, roles: Mapping[int, str]) -> dict[int, tuple[int, ...]]:
    """Each learning attacker's coalition: the members running the same profile (colluders know
    one another, so none takes another's forgery for an honest update)."""
    result = {}
    for member, role in roles.items():
        if role != "honest" and scenario.profiles[role][1].workload.attack != "none":
            result[member] = tuple(other for other, same in sorted(roles.items()) if same == role)
    return result


def _node_args(scenario: Scenario, role: str, fault_file: Path | None, coalition: tuple[int, ...] = ()) -> list[str]:
    """A member's qora-node arguments; ``fault_file`` is its transport fault file (None on a packet
    network, whose nodes run with no test hook in their transport)."""
    workload = scenario.workload
    args = ["--data-seed", str(workload.get("data_seed", scenario.seed))]
    if fault_file is not None:
        args += ["--fault-file", str(fault_file)]
    for key in ("dataset", "partition", "alpha", *TrainingConfig.__dataclass_fields__):  # every key the workload table accepts
        if key in workload:
            args += ["--" + key.replace("_", "-"), str(workload[key])]
    if role != "honest":
        args += ["--profile", str(scenario.profiles[role][0])]
    if coalition:
        args += ["--colluder-members", ",".join(str(member) for member in coalition)]
    return args


class _Tail:
    """New JSON lines of a node log since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def lines(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        items = []
        for line in data[:end].splitlines():
            if line.startswith(b"{"):
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict):
                    items.append(item)
        return items


def run_scenario(
    scenario: Scenario,
    out: Path,
    *,
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
    on_fault: Callable[[dict[str, Any]], None] | None = None,
) -> ScenarioRun:
    """Run ``scenario`` with its network under ``out``; see the module notes.

    Triggers and progress follow the most advanced honest member (any one may be killed).
    ``on_round(round, status)`` is called once per round as the first honest member commits it, with
    the honest accuracy, whether every honest member that has the round agrees on its hash, and the
    members banned so far.
    """
    out.mkdir(parents=True, exist_ok=True)
    roles = assign_roles(scenario)
    honest = [member for member, role in roles.items() if role == "honest"]
    late = {member for fault in scenario.faults if fault.action == "start" for member in fault.nodes}
    reference = next((member for member in honest if member not in late), honest[0])
    run = ScenarioRun(scenario, out, roles, reference)
    packets = None
    if scenario.net == "netns":
        delayed = {member for fault in scenario.faults if fault.action == "delay" for member in (fault.nodes or range(scenario.nodes))}
        packets = PacketNetwork(scenario.nodes, delayed)
        packets.create()  # raises NetnsError (what is missing, or which check failed) before any node starts
    try:
        return _follow(scenario, run, packets, on_round, on_fault)
    finally:
        if packets is not None:
            left = packets.teardown()
            if left:
                run.failure = (run.failure + "; " if run.failure else "") + f"could not delete namespaces {left}"


def _follow(  # noqa: PLR0912 (the runner's one loop: start, follow, apply faults, detect stalls, stop)
    scenario: Scenario,
    run: ScenarioRun,
    packets: PacketNetwork | None,
    on_round: Callable[[int, dict[str, Any]], None] | None,
    on_fault: Callable[[dict[str, Any]], None] | None,
) -> ScenarioRun:
    roles, out, honest = run.roles, run.directory, run.honest
    late = {member for fault in scenario.faults if fault.action == "start" for member in fault.nodes}
    cluster = LocalCluster.create(
        out / "network",
        scenario.nodes,
        genesis=scenario.fragment,
        network_id=scenario.network_id,
        origin=scenario.origin,
        path="genesis",
        addresses=None if packets is None else packets.addresses(),
        wrap=None if packets is None else packets.wrap,
    )
    started = time.monotonic()
    links: Links = packets if packets is not None else TransportLinks(cluster.directory / "faults", cluster.names)
    run.method = links.method
    coalition = coalitions(scenario, roles)
    node_args = {
        member: _node_args(scenario, roles[member], links.path(member) if isinstance(links, TransportLinks) else None, coalition.get(member, ()))
        for member in range(scenario.nodes)
    }
    pending = list(scenario.faults)
    tails = {member: _Tail(cluster.log_path(member)) for member in range(scenario.nodes)}
    hashes: dict[int, dict[int, str]] = {member: {} for member in range(scenario.nodes)}
    first_lines: dict[int, dict[str, Any]] = {}  # round -> the first honest round line seen
    abstaining: set[int] = set()  # members whose last node_started said so, until abstain_ended
    announced: set[int] = set()  # members whose node_started line since their last (re)start is in
    reported = 0
    last_progress = time.monotonic()
    try:
        with cluster:
            for member in range(scenario.nodes):
                if member not in late:
                    cluster.start(member, rounds=scenario.rounds, args=node_args[member], linger_s=5.0)
            while True:
                for member, tail in tails.items():
                    for line in tail.lines():
                        if line.get("event") == "round_committed":
                            hashes[member][line["round"]] = line["hash"]
                            if roles[member] == "honest":
                                first_lines.setdefault(line["round"], line)
                                last_progress = time.monotonic()
                        elif line.get("event") == "caught_up":
                            last_progress = time.monotonic()
                        elif line.get("event") == "node_started":
                            announced.add(member)
                            (abstaining.add if line.get("abstaining") else abstaining.discard)(member)
                        elif line.get("event") == "abstain_ended":
                            abstaining.discard(member)
                committed = max(first_lines, default=0)
                while reported < committed:
                    reported += 1
                    first = first_lines.get(reported)
                    if first is None:
                        continue  # every honest member caught up past it (no round line)
                    holders = [hashes[m][reported] for m in honest if reported in hashes[m]]
                    status = {
                        "accuracy": first.get("accuracy"),
                        "agree": len(set(holders)) <= 1,
                        "holders": len(holders),
                        "banned": first.get("banned", []),
                        "view": first.get("view"),
                        "ms": first.get("total_ms"),
                    }
                    if on_round is not None:
                        on_round(reported, status)
                elapsed = time.monotonic() - started
                # A member that started after its peers passed round 1 abstains (qora_p2p.protocol.abstain):
                # the network already counts it as its one tolerated fault, so a round-timed fault waits
                # until it signs again rather than exceed f on top of it.
                running = [m for m in cluster.processes if m not in run.killed and cluster.returncode(m) is None]
                settled = all(m in announced and m not in abstaining for m in running)
                for fault in list(pending):
                    due = (fault.at_round is not None and committed >= fault.at_round and settled) or (fault.at_s is not None and elapsed >= fault.at_s)
                    if due:
                        pending.remove(fault)
                        _apply(cluster, fault, run, node_args, links)
                        if fault.action in ("start", "restart"):
                            announced.difference_update(fault.nodes)
                            settled = False
                        event = {
                            "fault": fault.describe(),
                            "seconds": round(elapsed, 2),
                            "round": committed,
                            "held": {member: max(hashes[member], default=0) for member in range(scenario.nodes)},  # each member's last round
                        }
                        run.applied.append(event)
                        if on_fault is not None:
                            on_fault(event)
                        last_progress = time.monotonic()
                expected = [m for m in honest if m not in run.killed]
                if not pending and all(max(hashes[m], default=0) >= scenario.rounds or cluster.returncode(m) == 0 for m in expected):
                    run.finished = True
                    break
                if time.monotonic() - last_progress > scenario.stall_timeout_s:
                    run.failure = f"no round committed for {scenario.stall_timeout_s:.0f} s (stuck at round {committed})"
                    break
                crashed = [m for m in expected if cluster.returncode(m) not in (None, 0)]
                if crashed:
                    run.failure = f"honest member(s) {crashed} exited with an error; see their logs"
                    break
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        run.interrupted = True
        run.failure = "interrupted"
    run.seconds = time.monotonic() - started
    return run


def _apply(cluster: LocalCluster, fault: Fault, run: ScenarioRun, node_args: dict[int, list[str]], links: Links) -> None:  # noqa: PLR0912 (one branch per fault action)
    action = fault.action
    for member in fault.nodes:
        if action == "kill":
            cluster.kill(member)
            run.killed.add(member)
        elif action in ("restart", "start"):
            if not cluster.alive(member):
                cluster.start(member, rounds=run.scenario.rounds, args=node_args[member], linger_s=5.0)
            run.killed.discard(member)
        elif action == "stop":
            cluster.signal(member, signal.SIGSTOP)
        elif action == "continue":
            cluster.signal(member, signal.SIGCONT)
    if action == "partition":
        links.partition(fault.groups)
    elif action == "heal":
        links.heal()
    elif action == "delay":
        links.set_delay(fault.nodes or range(run.scenario.nodes), fault.delay_ms)
    elif action == "drop":
        links.set_loss(fault.drop, fault.nodes)
    elif action in ("link_down", "link_up"):
        links.set_link(fault.nodes, up=action == "link_up")
    elif action in ("firewall_close", "firewall_open"):
        links.set_firewall(fault.nodes, closed=action == "firewall_close")
    elif action == "rate":
        links.set_rate(fault.nodes, fault.rate_kbit)
