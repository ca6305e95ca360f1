"""What the core asks its driver to do: a closed union of effects and the one function that runs them.

Theory of operation
-------------------
The core (`qora_p2p.protocol.core`) never acts; it returns effects, in the order the driver must
execute them. Both drivers (the Trio node and the simulator) run every effect through `execute`,
which dispatches on the effect's type to one method of an `EffectHandler` and ends in
`typing.assert_never`: a new effect type that a driver does not handle is a type error (mypy) and an
assertion at run time, never silently dropped.

=============  ======================================================================================
effect         what the driver does
=============  ======================================================================================
Send           encode the message and send it to one member
Broadcast      encode it once and send it to every other member
Raw            send bytes as they are (only Byzantine effect filters of test networks produce it)
SignedSlot     make the last-signed guard durable *before* any later effect leaves the process
Train          compute this member's update of a round from the agreed model, then `submit_update`
Compute        run `compute_round` off the event loop, then `computed`
Commit         persist the committed round (record, certificate, state) atomically
Installed      persist records and a state caught up from peers atomically
Event          something worth a log line (the core never logs)
Penalize       a peer broke the protocol: count it against that peer
=============  ======================================================================================

A handler's methods all return the same type ``T``: the simulator's return None, the Trio node's
return coroutines that the driver awaits, so one `execute` serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, assert_never

from qora_p2p.protocol.messages import Message, Record

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from qora_p2p.protocol.state import AgreedState, RoundResult

__all__ = [
    "Broadcast",
    "Commit",
    "Compute",
    "Effect",
    "EffectHandler",
    "Event",
    "Installed",
    "Penalize",
    "Raw",
    "Send",
    "SignedSlot",
    "Slot",
    "Train",
    "execute",
]

Slot = tuple[str, int, int]  # (message kind, round, view) of something this member signed


@dataclass(frozen=True, slots=True)
class Send:
    peer: int
    message: Message


@dataclass(frozen=True, slots=True)
class Broadcast:
    message: Message


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes sent to ``peer`` as they are, bypassing the message encoder (junk or a replay)."""

    peer: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SignedSlot:
    """Make durable before anything later: we signed ``content`` for ``slot``."""

    slot: Slot
    content: bytes
    payload: bytes | None = None  # our update's payload, so a restart re-sends the same update


@dataclass(frozen=True, slots=True)
class Train:
    round: int
    model: npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Compute:
    """Run ``compute_round(genesis, state, senders, payloads, culprits)``; answer with `computed`."""

    request: int
    state: AgreedState
    senders: tuple[int, ...]
    payloads: tuple[bytes, ...]
    culprits: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Commit:
    record: Record
    state: AgreedState
    result: RoundResult


@dataclass(frozen=True, slots=True)
class Installed:
    """State caught up from peers: persist the records and the state."""

    records: tuple[Record, ...]
    state: AgreedState


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Penalize:
    peer: int
    reason: str


Effect = Send | Broadcast | Raw | SignedSlot | Train | Compute | Commit | Installed | Event | Penalize

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


class EffectHandler(Protocol, Generic[T_co]):
    """One method per effect type; `execute` calls exactly one of them."""

    def send(self, effect: Send) -> T_co: ...
    def broadcast(self, effect: Broadcast) -> T_co: ...
    def raw(self, effect: Raw) -> T_co: ...
    def signed_slot(self, effect: SignedSlot) -> T_co: ...
    def train(self, effect: Train) -> T_co: ...
    def compute(self, effect: Compute) -> T_co: ...
    def commit(self, effect: Commit) -> T_co: ...
    def installed(self, effect: Installed) -> T_co: ...
    def event(self, effect: Event) -> T_co: ...
    def penalize(self, effect: Penalize) -> T_co: ...


def execute(effect: Effect, handler: EffectHandler[T]) -> T:  # noqa: PLR0911 (one case per effect type)
    """Run ``effect`` through the handler method for its type (an object of any other type fails
    the type check and, at run time, `assert_never`'s AssertionError: a bug, never input)."""
    match effect:
        case Send():
            return handler.send(effect)
        case Broadcast():
            return handler.broadcast(effect)
        case Raw():
            return handler.raw(effect)
        case SignedSlot():
            return handler.signed_slot(effect)
        case Train():
            return handler.train(effect)
        case Compute():
            return handler.compute(effect)
        case Commit():
            return handler.commit(effect)
        case Installed():
            return handler.installed(effect)
        case Event():
            return handler.event(effect)
        case Penalize():
            return handler.penalize(effect)
        case _:
            assert_never(effect)
