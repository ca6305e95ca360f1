"""Byzantine members driven by arbitrary code: the interface between the simulator and an adversary.

Theory of operation
-------------------
A strategy (`qora_p2p.protocol.behaviour`) filters an honest core's effects; an **adversary** is
any object with the `Adversary` methods, and sees and does what an omniscient attacker that owns
the Byzantine members' keys could:

* it sees **every message an honest member sends**, at the moment it is sent (before delivery: a
  rushing attacker), decoded and as bytes, with its sender and receivers (`observe`, when
  ``observes`` is true), and every message delivered to its own member (`delivered`);
* it knows its member's index and key, every colluder's key (`World.identity_of`), the genesis,
  the simulated time, and its own seeded random stream;
* it sends **any bytes, signed or not, to any member, now or later** (`World.send`,
  `World.broadcast`) and asks to be woken (`World.wake`). Its bytes travel over the same simulated
  links as everyone's: the receiver decodes them with the codec's limits and hands them to its
  core as if a peer had sent them;
* with ``runs_core`` true, the simulator also drives an honest `NodeCore` for the member (trained
  updates, timers, computations, the member's durable store), delivers to it every message the
  member receives, and executes whatever `outgoing` returns in place of each of its effects: the
  adversary deviates from the protocol only where it wants to, and `World.core` lets it read the
  honest state (round, records, agreed state) it forges from. With ``runs_core`` false the member
  has no core and sends nothing the adversary does not send.

Adversaries are named in `qora_p2p.sim.adversaries.ADVERSARIES` (``SimConfig.adversary``), so a run
stays a function of its printable configuration; `Simulation` also takes adversary objects
directly (``adversaries={member: object}``), for one-off experiments. An adversary's exception is
recorded as a violation of the run (``adversary exception: ...``), never mistaken for the
protocol's.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from qora_p2p.identity import Identity
    from qora_p2p.protocol.core import NodeCore
    from qora_p2p.protocol.effects import Effect
    from qora_p2p.protocol.genesis import Genesis
    from qora_p2p.protocol.messages import Limits, Message

__all__ = ["Adversary", "BaseAdversary", "Host", "Observed", "World"]


@dataclass(frozen=True, slots=True)
class Observed:
    """One message an honest member sent: to one member, or to every other (a broadcast)."""

    sender: int
    receivers: tuple[int, ...]
    message: Message
    data: bytes
    at_ms: int


class Host(Protocol):
    """What the simulator offers a `World` (implemented by `qora_p2p.sim.loop.Simulation`)."""

    now: int

    def adversary_send(self, member: int, receiver: int, data: bytes, delay_ms: int) -> None: ...
    def adversary_wake(self, member: int, at_ms: int, tag: str) -> None: ...
    def adversary_core(self, member: int) -> NodeCore | None: ...


class World:
    """An adversary's view of the run and its means of acting, for one Byzantine member.

    Attributes:
        me: the member's index; identity: its key; genesis, limits: the network.
        byzantine: every Byzantine member (colluders), ascending.
        rng: the adversary's own random stream (seeded from the run's seed and the member).
        coalition: one dictionary shared by every adversary of the run, to coordinate.
    """

    def __init__(
        self,
        host: Host,
        me: int,
        identities: Sequence[Identity],
        genesis: Genesis,
        limits: Limits,
        byzantine: tuple[int, ...],
        rng: random.Random,
        coalition: dict[Any, Any],
    ) -> None:
        self._host, self._identities = host, identities
        self.me, self.identity, self.genesis, self.limits = me, identities[me], genesis, limits
        self.byzantine, self.rng, self.coalition = byzantine, rng, coalition
        self.members = genesis.size
        self.honest = tuple(member for member in range(genesis.size) if member not in byzantine)

    @property
    def now(self) -> int:
        """The simulated time, in milliseconds."""
        return self._host.now

    @property
    def core(self) -> NodeCore | None:
        """The member's honest core (adversaries with ``runs_core``), to read its state; None otherwise."""
        return self._host.adversary_core(self.me)

    def identity_of(self, member: int) -> Identity:
        """A colluder's signing key.

        Raises:
            ValueError: ``member`` is honest (an adversary never holds an honest key).
        """
        if member not in self.byzantine:
            raise ValueError(f"member {member} is honest: its key is not the adversary's")
        return self._identities[member]

    def send(self, receiver: int, data: bytes | Message, delay_ms: int = 0) -> None:
        """Send bytes (or a message, encoded) to ``receiver`` after ``delay_ms``, over the links."""
        payload = data if isinstance(data, bytes) else data.encode()
        self._host.adversary_send(self.me, receiver, payload, max(0, delay_ms))

    def broadcast(self, data: bytes | Message, delay_ms: int = 0) -> None:
        """`send` to every other member."""
        payload = data if isinstance(data, bytes) else data.encode()
        for receiver in range(self.members):
            if receiver != self.me:
                self._host.adversary_send(self.me, receiver, payload, max(0, delay_ms))

    def wake(self, delay_ms: int, tag: str = "") -> None:
        """Call the adversary's `wake` with ``tag`` after ``delay_ms`` (at least 1 ms)."""
        self._host.adversary_wake(self.me, self.now + max(1, delay_ms), tag)


class Adversary(Protocol):
    """A Byzantine member's behaviour (see the module notes). `BaseAdversary` gives defaults."""

    runs_core: bool  # drive an honest core for this member, its effects passed through `outgoing`
    observes: bool  # call `observe` with every message an honest member sends
    # Carry messages to this member at all (`delivered`). False only for one without a core that
    # ignores what it is sent: the links then draw nothing for it and the queue holds nothing for it.
    hears: bool

    def start(self, world: World) -> None:
        """The run begins (after every core's first effects)."""

    def outgoing(self, effect: Effect, world: World) -> Sequence[Effect]:
        """What to execute instead of one of the member's own core's effects."""

    def observe(self, seen: Observed, world: World) -> None:
        """An honest member sent a message (``observes`` only)."""

    def delivered(self, sender: int, data: bytes, message: Message | None, world: World) -> None:
        """``sender`` sent the member ``data`` (``message`` is None if it does not decode). With
        ``runs_core``, the core receives the message next."""

    def wake(self, tag: str, world: World) -> None:
        """A wake-up asked for with `World.wake`."""


class BaseAdversary:
    """An adversary that runs an honest core and changes nothing: override what to deviate in."""

    runs_core: bool = True
    observes: bool = False
    hears: bool = True

    def start(self, world: World) -> None:
        return None

    def outgoing(self, effect: Effect, world: World) -> Sequence[Effect]:
        return (effect,)

    def observe(self, seen: Observed, world: World) -> None:
        return None

    def delivered(self, sender: int, data: bytes, message: Message | None, world: World) -> None:
        return None

    def wake(self, tag: str, world: World) -> None:
        return None
