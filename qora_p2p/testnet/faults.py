"""Link faults for test networks: a fault file a scenario runner writes, and the transport filter
that applies it inside one node.

Theory of operation
-------------------
A production node has no link filter. A test-network node gets a `FaultInjector` (through the
node's hooks, `qora_p2p.node.driver.NodeHooks`): the transport asks it, for every message it
sends, whether to send it, and for every message it receives, whether and after what delay to
deliver it. The injector's faults come from a small JSON file (`read_fault_file`) that the
scenario runner rewrites when a fault starts or ends; `watch` polls it.

Members in ``blocked`` are cut off in both directions (an injected partition: TCP stays up, the
messages are dropped), ``delay_ms`` delays what we receive, ``drop`` is the probability of dropping
a message we send. Randomness is a per-member stream seeded by the member index.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio

from qora_p2p.errors import ConfigError

__all__ = ["FaultInjector", "LinkFaults", "read_fault_file"]

DELAY_MS_MAX = 10_000  # injected link delay
FAULT_POLL_S = 0.1  # how often a test node looks at its fault file
FAULT_FILE_BYTES_MAX = 64 << 10

log = structlog.get_logger("qora.faults")


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """Faults injected into this member's links: members cut off in both directions, extra
    one-way delay on what we receive, and a probability of dropping a message we send."""

    blocked: frozenset[int] = frozenset()
    delay_ms: int = 0
    drop: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.delay_ms <= DELAY_MS_MAX:
            raise ConfigError(f"delay_ms must be in 0..{DELAY_MS_MAX}, got {self.delay_ms}")
        if not 0.0 <= self.drop <= 1.0:
            raise ConfigError(f"drop must be in [0, 1], got {self.drop}")


class FaultInjector:
    """The transport's link filter (`qora_p2p.node.transport.LinkFilter`) for one member."""

    def __init__(self, me: int, faults: LinkFaults = LinkFaults()) -> None:
        self.faults = faults
        self.rng = random.Random(me)

    def outgoing(self, peer: int) -> bool:
        """Whether to send a message to ``peer`` now."""
        faults = self.faults
        return peer not in faults.blocked and not (faults.drop and self.rng.random() < faults.drop)

    def incoming(self, peer: int) -> float | None:
        """None to drop a message from ``peer``, else the seconds to hold it before delivery."""
        faults = self.faults
        if peer in faults.blocked:
            return None
        return faults.delay_ms / 1000

    async def watch(self, path: Path, members: int) -> None:
        """Apply the faults in ``path`` whenever it changes, until cancelled."""
        seen: int | None = None
        while True:
            try:
                changed: int | None = path.stat().st_mtime_ns
            except FileNotFoundError:
                changed = None
            if changed != seen:
                seen = changed
                faults: LinkFaults | None = LinkFaults()
                if changed is not None:
                    try:
                        faults = read_fault_file(path, members)
                    except ConfigError as error:
                        log.warning("fault_file_invalid", error=str(error))
                        faults = None
                if faults is not None and faults != self.faults:
                    self.faults = faults
                    log.info("link_faults", blocked=sorted(faults.blocked), delay_ms=faults.delay_ms, drop=faults.drop)
            await trio.sleep(FAULT_POLL_S)


def read_fault_file(path: Path, members: int) -> LinkFaults:
    """``{"blocked": [member indices], "delay_ms": int, "drop": float}`` (every key optional).

    Raises:
        ConfigError: unreadable, not JSON, or a value out of range.
    """
    try:
        data = path.read_bytes()[: FAULT_FILE_BYTES_MAX + 1]
        document = json.loads(data) if data.strip() else {}
    except (OSError, ValueError) as error:
        raise ConfigError(f"fault file {path}: {error}") from error
    if len(data) > FAULT_FILE_BYTES_MAX or not isinstance(document, dict):
        raise ConfigError(f"fault file {path}: expected a small JSON object")
    unknown = set(document) - {"blocked", "delay_ms", "drop"}
    if unknown:
        raise ConfigError(f"fault file {path}: unknown key {sorted(unknown)[0]!r}")
    blocked = document.get("blocked", [])
    if not isinstance(blocked, list) or not all(isinstance(item, int) and not isinstance(item, bool) and 0 <= item < members for item in blocked):
        raise ConfigError(f"fault file {path}: blocked must be a list of member indices")
    delay, drop = document.get("delay_ms", 0), document.get("drop", 0.0)
    if isinstance(delay, bool) or not isinstance(delay, int) or isinstance(drop, bool) or not isinstance(drop, int | float):
        raise ConfigError(f"fault file {path}: delay_ms must be an integer and drop a number")
    return LinkFaults(frozenset(blocked), delay, float(drop))
