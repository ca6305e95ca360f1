"""The two ways a scenario run injects link faults, behind one interface.

- `TransportLinks` (``net = "transport"``, the default): each node's transport drops or delays
  messages, told by a fault file the runner rewrites (`qora_p2p.testnet.faults`). Every member runs
  on loopback; TCP connections stay up through a partition. Needs nothing but Python.
- `qora_p2p.testnet.netns.PacketNetwork` (``net = "netns"``): one network namespace per member,
  faults on packets. Needs root, iproute2, nftables and ethtool.

Both have ``partition``, ``heal``, ``set_loss``, ``set_delay``, ``set_link``, ``set_firewall``,
``set_rate`` and ``method``; the transport refuses the faults it cannot model
(`NETNS_ONLY_ACTIONS`) when a scenario is loaded, not in the middle of a run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from qora_p2p.errors import ConfigError

__all__ = ["NETNS_ONLY_ACTIONS", "NETS", "Links", "TransportLinks"]

NETS = ("transport", "netns")
NETNS_ONLY_ACTIONS = ("link_down", "link_up", "rate", "firewall_close", "firewall_open")
TRANSPORT_METHOD = "transport fault injection (messages between groups dropped in both directions; TCP connections stay up)"


class Links(Protocol):
    @property
    def method(self) -> str: ...

    def partition(self, groups: Sequence[Sequence[int]]) -> None: ...

    def heal(self) -> None: ...

    def set_loss(self, probability: float, members: Sequence[int] = ()) -> None: ...

    def set_delay(self, members: Sequence[int], delay_ms: int) -> None: ...

    def set_link(self, members: Sequence[int], up: bool) -> None: ...

    def set_firewall(self, members: Sequence[int], closed: bool) -> None: ...

    def set_rate(self, members: Sequence[int], kbit: int | None) -> None: ...


class TransportLinks:
    """Faults through every member's fault file (``faults/<name>.json``): partitions per member,
    one delay and one drop probability for every member."""

    method = TRANSPORT_METHOD

    def __init__(self, directory: Path, names: Sequence[str]) -> None:
        self.directory = directory
        self.names = list(names)
        self.blocked: dict[int, set[int]] = {}
        self.delay_ms = 0
        self.drop = 0.0
        self._write()

    def path(self, member: int) -> Path:
        return self.directory / f"{self.names[member]}.json"

    def _write(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for member in range(len(self.names)):
            path = self.path(member)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps({"blocked": sorted(self.blocked.get(member, ())), "delay_ms": self.delay_ms, "drop": self.drop}))
            temporary.replace(path)

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        self.blocked = {}
        for index, group in enumerate(groups):
            others = {member for position, other in enumerate(groups) if position != index for member in other}
            for member in group:
                self.blocked[member] = set(others)
        self._write()

    def heal(self) -> None:
        self.blocked, self.delay_ms, self.drop = {}, 0, 0.0
        self._write()

    def set_loss(self, probability: float, members: Sequence[int] = ()) -> None:
        self._every_member(members, "drop")
        self.drop = probability
        self._write()

    def set_delay(self, members: Sequence[int], delay_ms: int) -> None:
        self._every_member(members, "delay")
        self.delay_ms = delay_ms
        self._write()

    def set_link(self, members: Sequence[int], up: bool) -> None:
        raise ConfigError("link_down and link_up need a packet-level network (--net netns)")

    def set_firewall(self, members: Sequence[int], closed: bool) -> None:
        raise ConfigError("firewalls need a packet-level network (--net netns)")

    def set_rate(self, members: Sequence[int], kbit: int | None) -> None:
        raise ConfigError("rate limits need a packet-level network (--net netns)")

    def _every_member(self, members: Sequence[int], action: str) -> None:
        if members and sorted(members) != list(range(len(self.names))):
            raise ConfigError(f"transport fault injection applies {action} to every member; a {action} on some members needs --net netns")
