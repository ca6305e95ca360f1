"""`execute` sends every effect type to exactly its handler method, and refuses anything else."""

from typing import Any, get_args

import numpy as np
import pytest

from qora_p2p.protocol.effects import (
    Broadcast,
    Commit,
    Compute,
    Effect,
    Event,
    Installed,
    Penalize,
    Raw,
    Send,
    SignedSlot,
    Train,
    execute,
)
from qora_p2p.protocol.messages import Hello

HELLO = Hello(1, 1, bytes(32))
SAMPLES: list[Any] = [
    Send(1, HELLO),
    Broadcast(HELLO),
    Raw(2, b"junk"),
    SignedSlot(("prevote", 1, 0), b"v"),
    Train(1, np.zeros(2, dtype=np.int64)),
    Compute(1, None, (0,), (b"",), ()),  # type: ignore[arg-type]  # execute never looks inside
    Commit(None, None, None),  # type: ignore[arg-type]
    Installed((), None),  # type: ignore[arg-type]
    Event("round_started"),
    Penalize(3, "bad"),
]
METHODS = ["send", "broadcast", "raw", "signed_slot", "train", "compute", "commit", "installed", "event", "penalize"]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def __getattr__(self, name: str) -> Any:
        if name not in METHODS:
            raise AttributeError(name)

        def record(effect: object) -> str:
            self.calls.append((name, effect))
            return name

        return record


def test_the_samples_cover_the_whole_union():
    """One sample per member of the Effect union, so the dispatch test below is exhaustive."""
    assert {type(sample) for sample in SAMPLES} == set(get_args(Effect))


@pytest.mark.parametrize(("effect", "method"), list(zip(SAMPLES, METHODS, strict=True)), ids=METHODS)
def test_each_effect_reaches_only_its_method(effect, method):
    """The handler's return value comes back from execute, and no other method is called."""
    recorder = Recorder()
    assert execute(effect, recorder) == method
    assert recorder.calls == [(method, effect)]


def test_a_non_effect_is_a_bug_not_silently_dropped():
    """Something that is not an effect fails loudly (assert_never), calling no handler."""
    recorder = Recorder()
    with pytest.raises(AssertionError):
        execute(HELLO, recorder)  # type: ignore[arg-type]
    assert recorder.calls == []
