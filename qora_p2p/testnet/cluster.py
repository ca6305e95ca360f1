"""A local cluster of real ``qora-node`` processes on loopback: for scenarios, tests and benchmarks.

Theory of operation
-------------------
`LocalCluster.create` writes a network (keys and peers.toml on free ports) into a directory; `start`
launches member ``i`` as its own process (``python -m qora_p2p.cli.node``) with its log appended
to ``logs/<name>.log`` and its data under ``data/<name>``. Faults act on the real processes:
SIGKILL and restart, SIGSTOP and SIGCONT, late starts. Progress is read the way an operator would:
from each node's SQLite store (read-only, which never blocks the node) and its JSON log lines.

No orphans: every child is started in its own session and, on Linux, asks the kernel to send it
SIGTERM if the parent dies (``PR_SET_PDEATHSIG``); `close` (or leaving the ``with`` block) stops
every child with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from qora_p2p.errors import QoraError
from qora_p2p.fixedpoint import FRAC_BITS_DEFAULT
from qora_p2p.node.network import create_network, free_ports
from qora_p2p.node.store import Store, StoreError
from qora_p2p.protocol.genesis import (
    RULE_DEFAULT,
    Genesis,
    ModelSpec,
    Timing,
    default_rule_params,
    genesis_fragment,
    load_genesis,
    placeholder_members,
)
from qora_p2p.protocol.ledger import LedgerParams

__all__ = ["LocalCluster", "die_with_parent", "read_log"]

STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long
POLL_INTERVAL_S = 0.1  # how often `wait_until` re-checks its condition
LOG_LINE_BYTES_MAX = 1 << 20  # longer log lines are skipped when reading logs
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover (runs in the child before exec)
    """In a child before exec: ask the kernel for SIGTERM when our parent dies (no orphans)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def read_log(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a node log, skipping lines that are not JSON objects."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if len(line) > LOG_LINE_BYTES_MAX or not line.startswith(b"{"):
                continue
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                yield item


class LocalCluster:
    """Member processes of one network under ``directory``. Use as a context manager."""

    def __init__(self, directory: Path, python: str = sys.executable, wrap: Callable[[int], Sequence[str]] | None = None) -> None:
        self.directory = Path(directory)
        self.wrap = wrap  # a command prefix per member (``ip netns exec NS``), for packet-level networks
        self.genesis: Genesis = load_genesis(self.directory / "peers.toml")
        self.names = [member.name for member in self.genesis.members]
        self.python = python
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: dict[int, IO[bytes]] = {}
        self.starts: dict[int, int] = {}

    @classmethod
    def create(
        cls,
        directory: Path,
        nodes: int,
        *,
        genesis: Mapping[str, Any] | None = None,
        model: ModelSpec | None = None,
        rule: str = RULE_DEFAULT,
        rule_params: Mapping[str, Any] | None = None,
        ledger: LedgerParams | None = LedgerParams(),
        timing: Timing = Timing(),
        frac_bits: int = FRAC_BITS_DEFAULT,
        network_id: str = "qora-local",
        host: str = "127.0.0.1",
        origin: str = "genesis",
        path: str = "",
        addresses: Sequence[tuple[str, int]] | None = None,
        wrap: Callable[[int], Sequence[str]] | None = None,
    ) -> LocalCluster:
        """Write a new network with ``nodes`` members on free loopback ports into ``directory``
        (or on ``addresses``, with each member's command prefixed by ``wrap(member)``).

        ``genesis`` is a genesis fragment (peers.toml without network_id and members, as a
        scenario's ``[genesis]`` table); without one, the fragment is made of ``model``, ``rule``,
        ``rule_params`` (the rule's defaults when None), ``ledger``, ``timing`` and ``frac_bits``.
        Either way it is validated by the genesis schema before anything is written.
        """
        if genesis is None:
            if model is None:
                raise QoraError("LocalCluster.create needs a genesis fragment or a model")
            params = default_rule_params(rule) if rule_params is None else dict(rule_params)
            genesis = genesis_fragment(Genesis(network_id, placeholder_members(1), model, rule, params, frac_bits, ledger, timing))
        if addresses is None:
            addresses = [(host, port) for port in free_ports(host, nodes)]
        elif len(addresses) != nodes:
            raise QoraError(f"{nodes} members need {nodes} addresses, got {len(addresses)}")
        create_network(Path(directory), addresses, genesis, network_id=network_id, origin=origin, path=path)
        return cls(directory, wrap=wrap)

    # ------------------------------------------------------------------------------- paths

    def key(self, index: int) -> Path:
        return self.directory / "keys" / f"{self.names[index]}.key"

    def data_dir(self, index: int) -> Path:
        return self.directory / "data" / self.names[index]

    def log_path(self, index: int) -> Path:
        return self.directory / "logs" / f"{self.names[index]}.log"

    # ------------------------------------------------------------------------------- processes

    def start(self, index: int, *, rounds: int | None = None, args: Sequence[str] = (), linger_s: float = 3.0) -> None:
        """Start member ``index`` (again, after a kill: same data directory, same key)."""
        if self.alive(index):
            raise QoraError(f"{self.names[index]} is already running")
        self.log_path(index).parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path(index).open("ab")
        command = [
            *(self.wrap(index) if self.wrap is not None else ()),
            self.python,
            "-m",
            "qora_p2p.cli.node",
            "--peers",
            str(self.directory / "peers.toml"),
            "--key",
            str(self.key(index)),
            "--data-dir",
            str(self.data_dir(index)),
            "--log-format",
            "json",
            "--linger",
            str(linger_s),
            *(["--rounds", str(rounds)] if rounds is not None else []),
            *args,
        ]
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        self.processes[index] = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        old = self.logs.pop(index, None)
        if old is not None:
            old.close()
        self.logs[index] = log
        self.starts[index] = self.starts.get(index, 0) + 1

    def alive(self, index: int) -> bool:
        process = self.processes.get(index)
        return process is not None and process.poll() is None

    def returncode(self, index: int) -> int | None:
        process = self.processes.get(index)
        return None if process is None else process.poll()

    def signal(self, index: int, signum: int) -> None:
        process = self.processes.get(index)
        if process is not None and process.poll() is None:
            process.send_signal(signum)

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` and reap it."""
        process = self.processes.get(index)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self, index: int, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM (SIGCONT first, in case it is stopped), then SIGKILL after ``grace_s``."""
        process = self.processes.get(index)
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def wait_exit(self, index: int, timeout_s: float) -> int | None:
        process = self.processes.get(index)
        if process is None:
            return None
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        for index in list(self.processes):
            self.signal(index, signal.SIGCONT)
            self.signal(index, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for index in list(self.processes):
            self.stop(index, max(0.1, deadline - time.monotonic()))
        for log in self.logs.values():
            log.close()
        self.logs.clear()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- observing

    def committed(self, index: int) -> int:
        """Rounds member ``index`` has durably committed (0 before its database exists)."""
        try:
            with Store(self.data_dir(index), self.genesis, self.genesis.members[index].public_key, readonly=True) as store:
                return store.last_round()
        except StoreError:
            return 0

    def chain(self, index: int) -> dict[str, Any]:
        """``qora-node inspect --json`` of member ``index``."""
        from qora_p2p.node.inspect import inspect_chain  # noqa: PLC0415 (sqlite, only when asked)

        return inspect_chain(self.data_dir(index))

    def hashes(self, index: int) -> list[str]:
        return [item["hash"] for item in self.chain(index)["rounds"]]

    def events(self, index: int, name: str | None = None) -> list[dict[str, Any]]:
        return [item for item in read_log(self.log_path(index)) if name is None or item.get("event") == name]

    def wait_until(self, condition: Callable[[], bool], timeout_s: float, what: str = "condition") -> None:
        """Poll ``condition`` until it holds.

        Raises:
            TimeoutError: it did not hold within ``timeout_s`` (the message says what and lists
                every member's committed round and liveness).
        """
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                status = ", ".join(
                    f"{name}: round {self.committed(index)}{'' if self.alive(index) else ' (not running, exit ' + str(self.returncode(index)) + ')'}"
                    for index, name in enumerate(self.names)
                )
                raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s ({status})")
            time.sleep(POLL_INTERVAL_S)
