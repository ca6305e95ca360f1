"""Packet-level test networks: one Linux network namespace per member, and faults that act on
packets (partitions, links down, loss, rate, delay, a member's own firewall).

Theory of operation
-------------------
`PacketNetwork.create` builds, for a run with prefix ``P`` (``qora-<pid>-<random>``)::

    P-m0: lo, eth0 198.18.0.1/24 ──veth── m0 ┐
    P-m1: lo, eth0 198.18.0.2/24 ──veth── m1 ┤ br0 (a bridge in P-hub, no address)
    P-m2: lo, eth0 198.18.0.3/24 ──veth── x2 ═ delay forwarder ═ y2 ──veth── m2 ┘

Every interface is created inside a namespace of the run (``ip -n NS link add ... peer ... netns
NS2``), so nothing is ever added to the machine's own namespace, and no namespace of the run has an
interface out of it: the test addresses (198.18.0.0/24, RFC 2544's benchmarking range) have no
route off the machine, and the machine's namespace has no route to them. `verify` checks this
before any node starts (every address, route and veth peer of every namespace of the run) and
`PacketNetwork` is only ever handed to processes it starts inside the namespaces itself.

Faults, all applied in the hub (or in a member's own namespace for its firewall):

- partition into groups, and heal: one nftables ``bridge`` table, rewritten atomically
  (``nft -f``), drops frames between groups; ARP goes too, so dialling fails as on a real split;
- link down and up: ``ip link set mI down`` (the member's port, and its delay link if it has one);
- loss ``p``: ``numgen random`` rules; with members named, each direction of each named member's
  link drops ``p`` of its frames; with none, every frame crossing the bridge is dropped with
  probability ``p``, once;
- rate: ``tc tbf`` on both ends of a member's link (its upload and its download);
- delay: `qora_p2p.testnet.delay`, a userspace forwarder spliced into the member's link when the
  network is built (this kernel has no ``tc netem``); ``ms`` is added to each direction, so a round
  trip to the member grows by twice that. Checksum and segmentation offloads are turned off on
  every member's interface (``ethtool``) so that frames reach the forwarder whole;
- firewall: a ``inet`` nftables table in the member's namespace that drops every packet it
  sends or receives on eth0 (its own host firewall, where conntrack and the TCP stack see it).

`teardown` stops the forwarders and deletes every namespace of the run, which removes its
interfaces, nftables tables and qdiscs with it; it runs on success, failure and Ctrl-C (the
runner's ``finally``). A run that was SIGKILLed leaves namespaces behind: `sweep_stale` removes those
whose runner process is gone, and every new run calls it first.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from qora_p2p.errors import QoraError
from qora_p2p.testnet.cluster import die_with_parent

__all__ = ["LinkState", "NetnsError", "PacketNetwork", "bridge_rules", "missing_requirements", "sweep_stale"]

SUBNET = ipaddress.ip_network("198.18.0.0/24")  # RFC 2544 benchmarking range: never routed publicly
PORT = 7000
MEMBERS_MAX = 250
PREFIX = "qora-"
TOOLS = {"ip": "iproute2", "nft": "nftables", "tc": "iproute2", "ethtool": "ethtool"}
COMMAND_TIMEOUT_S = 20.0
RATE_KBIT_MAX = 10_000_000
NETNS_DIR = Path("/run/netns")
LINK_UP_TIMEOUT_S = 5.0
LINK_POLL_S = 0.02
LOSS_SCALE = 1_000_000  # loss probabilities are applied in millionths


class NetnsError(QoraError):
    """A packet-level network could not be built, checked or changed (the message says why)."""


def missing_requirements() -> list[str]:
    """What this machine lacks for packet-level networks (empty when nothing is missing)."""
    missing = []
    if sys.platform != "linux":
        missing.append("Linux (network namespaces)")
    if os.geteuid() != 0:
        missing.append("root (network namespaces, nftables and tc need CAP_NET_ADMIN)")
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {package})")
    return missing


def _run(command: Sequence[str], stdin: str | None = None) -> str:
    try:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)  # noqa: S603 (fixed tools, our arguments)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NetnsError(f"{' '.join(command)}: {error}") from error
    if result.returncode != 0:
        raise NetnsError(f"{' '.join(command)}: {result.stderr.strip() or 'exit ' + str(result.returncode)}")
    return result.stdout


def _owner_alive(name: str) -> bool:
    """Whether the runner that made namespace ``name`` (``qora-<pid>-...``) is still running."""
    try:
        pid = int(name[len(PREFIX) :].split("-", 1)[0])
    except ValueError:
        return True  # not one of ours by shape: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    try:
        return sorted(path.name for path in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def sweep_stale() -> list[str]:
    """Delete the namespaces of earlier runs whose runner died without tearing down; their names."""
    removed = []
    for name in _namespaces():
        if name.startswith(PREFIX) and not _owner_alive(name):
            with contextlib.suppress(NetnsError):
                _run(["ip", "netns", "del", name])
                removed.append(name)
    return removed


@dataclass
class LinkState:
    """The packet faults in force, as the runner last set them."""

    groups: tuple[tuple[int, ...], ...] = ()
    loss_all: float = 0.0
    loss: dict[int, float] = field(default_factory=dict)
    down: set[int] = field(default_factory=set)
    firewalled: set[int] = field(default_factory=set)
    rate_kbit: dict[int, int] = field(default_factory=dict)
    delay_ms: dict[int, int] = field(default_factory=dict)


class PacketNetwork:
    """The namespaces of one run. Use as a context manager (``create`` on entry, ``teardown`` on exit)."""

    def __init__(self, members: int, delayed: Iterable[int] = (), port: int = PORT) -> None:
        if not 1 <= members <= MEMBERS_MAX:
            raise NetnsError(f"a packet-level network holds 1..{MEMBERS_MAX} members, got {members}")
        self.members = members
        self.delayed = frozenset(delayed)
        if not self.delayed <= set(range(members)):
            raise NetnsError(f"delayed members {sorted(self.delayed)} are not all in 0..{members - 1}")
        self.port = port
        self.prefix = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.created: list[str] = []
        self.forwarders: dict[int, subprocess.Popen[bytes]] = {}
        self.state = LinkState()

    # ---------------------------------------------------------------------------- names

    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    def namespace(self, member: int) -> str:
        return f"{self.prefix}-m{member}"

    def address(self, member: int) -> str:
        return str(SUBNET.network_address + member + 1)

    def addresses(self) -> list[tuple[str, int]]:
        return [(self.address(member), self.port) for member in range(self.members)]

    def wrap(self, member: int) -> list[str]:
        """The command prefix that runs a program inside ``member``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(member)]

    @property
    def method(self) -> str:
        return (
            f"packet level: one network namespace per member on a bridge ({SUBNET}); partitions, loss and links down "
            "in nftables and ip link, rate in tc tbf, delay in a userspace forwarder, firewalls in each member's nftables"
        )

    # ---------------------------------------------------------------------------- build and tear down

    def create(self) -> None:
        """Build every namespace, link and the bridge, start the delay forwarders, then `verify`.

        Raises:
            NetnsError: a requirement is missing or a step failed (what was built is torn down).
        """
        missing = missing_requirements()
        if missing:
            raise NetnsError("packet-level networks (--net netns) need " + "; ".join(missing))
        sweep_stale()
        try:
            self._build()
            self.verify()
        except BaseException:
            self.teardown()
            raise

    def _add_namespace(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self.created.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        ipv6 = "/proc/sys/net/ipv6/conf/all/disable_ipv6"
        _run(["ip", "netns", "exec", name, "sh", "-c", f"test ! -e {ipv6} || echo 1 > {ipv6}"])  # no IPv6 chatter

    def _build(self) -> None:
        hub = self.hub
        self._add_namespace(hub)
        _run(["ip", "-n", hub, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", hub, "link", "set", "br0", "up"])
        for member in range(self.members):
            namespace = self.namespace(member)
            self._add_namespace(namespace)
            port = f"m{member}"
            if member in self.delayed:
                _run(["ip", "-n", hub, "link", "add", f"x{member}", "type", "veth", "peer", "name", "eth0", "netns", namespace])
                _run(["ip", "-n", hub, "link", "add", f"y{member}", "type", "veth", "peer", "name", port])
                for end in (f"x{member}", f"y{member}"):
                    _run(["ip", "netns", "exec", hub, "ethtool", "-K", end, "tx", "off", "tso", "off", "gso", "off", "gro", "off"])
                    _run(["ip", "-n", hub, "link", "set", end, "up"])
            else:
                _run(["ip", "-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace])
            _run(["ip", "-n", hub, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", namespace, "addr", "add", f"{self.address(member)}/{SUBNET.prefixlen}", "dev", "eth0"])
            _run(["ip", "netns", "exec", namespace, "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off", "gro", "off"])
            _run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
        for member in sorted(self.delayed):
            self._start_forwarder(member)
        self._write_rules()

    def _start_forwarder(self, member: int) -> None:
        command = ["ip", "netns", "exec", self.hub, sys.executable, "-m", "qora_p2p.testnet.delay", f"x{member}", f"y{member}"]
        self.forwarders[member] = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, preexec_fn=die_with_parent  # noqa: PLW1509
        )

    def teardown(self) -> list[str]:
        """Stop the forwarders and delete every namespace of the run. Returns what could not be
        removed (empty when everything went); never raises."""
        for process in self.forwarders.values():
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
                process.terminate()
        for process in self.forwarders.values():
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.forwarders.clear()
        left = []
        for name in reversed(self.created):
            try:
                _run(["ip", "netns", "del", name])
            except NetnsError:
                left.append(name)
        self.created = []
        return left

    def __enter__(self) -> PacketNetwork:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # ---------------------------------------------------------------------------- safety

    def verify(self) -> None:
        """Check that the run's addresses live only inside its namespaces and have no way out.

        Raises:
            NetnsError: a namespace holds an interface, address or route that was not expected, a
                veth leads out of the run, or the machine's namespace holds a test address.
        """
        for name in self.created:
            self._verify_namespace(name)
        for entry in self._json(["ip", "-j", "addr", "show"]):
            for info in entry.get("addr_info", []):
                if ipaddress.ip_address(info["local"]) in SUBNET:
                    raise NetnsError(f"the machine's own namespace holds test address {info['local']} on {entry['ifname']}; refusing to run")

    def _verify_namespace(self, name: str) -> None:
        ours = set(self.created)
        ids = {entry["nsid"]: entry.get("name") for entry in self._json(["ip", "-n", name, "-j", "netns", "list-id"])}
        expected = {"br0"} | {f"{kind}{m}" for m in range(self.members) for kind in "mxy"} if name == self.hub else {"eth0"}
        for link in self._json(["ip", "-n", name, "-j", "link", "show"]):
            interface = link["ifname"]
            if interface != "lo" and interface.split("@", 1)[0] not in expected:
                raise NetnsError(f"{name}: unexpected interface {interface}")
            if "link_netnsid" in link and ids.get(link["link_netnsid"]) not in ours:
                raise NetnsError(f"{name}: {interface} leads to a namespace outside this run")
        for entry in self._json(["ip", "-n", name, "-j", "addr", "show"]):
            for info in entry.get("addr_info", []):
                address = ipaddress.ip_address(info["local"])
                if not (address.is_loopback or address.is_link_local) and (name == self.hub or address not in SUBNET):
                    raise NetnsError(f"{name}: unexpected address {address} on {entry['ifname']}")
        for route in self._json(["ip", "-n", name, "-j", "-4", "route", "show"]) + self._json(["ip", "-n", name, "-j", "-6", "route", "show"]):
            destination = route.get("dst", "")
            if destination == "default":
                raise NetnsError(f"{name}: a default route")
            network = ipaddress.ip_network(destination, strict=False)
            if not network.is_link_local and (name == self.hub or network != SUBNET):
                raise NetnsError(f"{name}: unexpected route {destination}")

    @staticmethod
    def _json(command: Sequence[str]) -> list[dict[str, Any]]:
        text = _run(command).strip()
        data = json.loads(text) if text else []
        return data if isinstance(data, list) else []

    # ---------------------------------------------------------------------------- faults

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        self.state.groups = tuple(tuple(group) for group in groups)
        self._write_rules()

    def set_loss(self, probability: float, members: Sequence[int] = ()) -> None:
        if not 0.0 <= probability <= 1.0:
            raise NetnsError(f"loss must be in [0, 1], got {probability}")
        if members:
            self.state.loss.update(dict.fromkeys(members, probability))
        else:
            self.state.loss_all = probability
        self._write_rules()

    def set_link(self, members: Sequence[int], up: bool) -> None:
        """Take members' links down, or bring them up; up returns once the kernel has the links
        running (it activates a link's queue up to a second after its carrier returns, and drops
        what is sent before that)."""
        for member in members:
            for interface in [f"m{member}"] + ([f"x{member}"] if member in self.delayed else []):
                _run(["ip", "-n", self.hub, "link", "set", interface, "up" if up else "down"])
            (self.state.down.discard if up else self.state.down.add)(member)
        deadline = time.monotonic() + LINK_UP_TIMEOUT_S
        for member in members if up else ():
            for namespace, interface in ((self.namespace(member), "eth0"), (self.hub, f"m{member}")):
                while self._json(["ip", "-n", namespace, "-j", "link", "show", "dev", interface])[0].get("operstate") != "UP":
                    if time.monotonic() > deadline:
                        raise NetnsError(f"{namespace}: {interface} did not come up within {LINK_UP_TIMEOUT_S:.0f} s")
                    time.sleep(LINK_POLL_S)

    def set_firewall(self, members: Sequence[int], closed: bool) -> None:
        for member in members:
            namespace = self.namespace(member)
            if closed and member not in self.state.firewalled:
                rules = (
                    "table inet qora_firewall {\n"
                    "  chain input { type filter hook input priority 0; policy accept; iifname \"eth0\" drop; }\n"
                    "  chain output { type filter hook output priority 0; policy accept; oifname \"eth0\" drop; }\n"
                    "}\n"
                )
                _run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], rules)
                self.state.firewalled.add(member)
            elif not closed and member in self.state.firewalled:
                _run(["ip", "netns", "exec", namespace, "nft", "delete", "table", "inet", "qora_firewall"])
                self.state.firewalled.discard(member)

    def set_rate(self, members: Sequence[int], kbit: int | None) -> None:
        """Limit each member's upload and download to ``kbit`` kbit/s (None lifts the limit)."""
        if kbit is not None and not 1 <= kbit <= RATE_KBIT_MAX:
            raise NetnsError(f"rate must be in 1..{RATE_KBIT_MAX} kbit/s, got {kbit}")
        for member in members:
            for namespace, interface in ((self.namespace(member), "eth0"), (self.hub, f"m{member}")):
                with contextlib.suppress(NetnsError):  # no qdisc yet
                    _run(["tc", "-n", namespace, "qdisc", "del", "dev", interface, "root"])
                if kbit is not None:
                    burst = max(16, kbit // 80)  # about 100 ms of traffic, and at least a few frames, in kbit
                    _run(["tc", "-n", namespace, "qdisc", "add", "dev", interface, "root", "tbf", "rate", f"{kbit}kbit", "burst", f"{burst}kbit", "latency", "200ms"])
            if kbit is None:
                self.state.rate_kbit.pop(member, None)
            else:
                self.state.rate_kbit[member] = kbit

    def set_delay(self, members: Sequence[int], delay_ms: int) -> None:
        for member in members:
            process = self.forwarders.get(member)
            if process is None or process.stdin is None:
                raise NetnsError(f"member {member} has no delay link (the network was built with delay links for {sorted(self.delayed)})")
            if process.poll() is not None:
                raise NetnsError(f"the delay forwarder of member {member} exited ({process.returncode})")
            stdin: IO[bytes] = process.stdin
            stdin.write(f"{delay_ms}\n".encode())
            stdin.flush()
            self.state.delay_ms[member] = delay_ms

    def heal(self) -> None:
        """Lift every fault: partition, loss, links down, firewalls, rates and delays."""
        self.state.groups, self.state.loss_all = (), 0.0
        self.state.loss.clear()
        self._write_rules()
        self.set_link(sorted(self.state.down), up=True)
        self.set_firewall(sorted(self.state.firewalled), closed=False)
        self.set_rate(sorted(self.state.rate_kbit), None)
        self.set_delay(sorted(member for member, delay in self.state.delay_ms.items() if delay), 0)

    def _write_rules(self) -> None:
        """Replace the hub's bridge table in one transaction (a fault never half applies)."""
        _run(["ip", "netns", "exec", self.hub, "nft", "-f", "-"], bridge_rules(self.state))


def bridge_rules(state: LinkState) -> str:
    """The nft script for the hub's ``bridge qora`` table that makes ``state``'s partition and loss:
    it deletes the table and makes it again, so ``nft -f`` applies it as one transaction."""
    rules = []

    def ports(members: Iterable[int]) -> str:
        return "{ " + ", ".join(f'"m{member}"' for member in sorted(members)) + " }"

    for index, group in enumerate(state.groups):
        others = [member for other in state.groups[index + 1 :] for member in other]
        if group and others:
            rules += [f"iifname {ports(group)} oifname {ports(others)} drop", f"iifname {ports(others)} oifname {ports(group)} drop"]
    def lose(match: str, probability: float) -> list[str]:
        threshold = round(probability * LOSS_SCALE)
        if threshold <= 0:
            return []
        return [f"{match}drop" if threshold >= LOSS_SCALE else f"{match}numgen random mod {LOSS_SCALE} < {threshold} drop"]

    for member, probability in sorted(state.loss.items()):
        rules += lose(f'iifname "m{member}" ', probability) + lose(f'oifname "m{member}" ', probability)
    rules += lose("", state.loss_all)
    body = "".join(f"    {rule}\n" for rule in rules)
    return (
        "table bridge qora\ndelete table bridge qora\n"  # create-then-delete: works whether or not it exists
        "table bridge qora {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n" + body + "  }\n}\n"
    )
