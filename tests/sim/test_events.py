"""The simulator's event queue pops in (time, push order), as a heap of (time, sequence) does."""

from __future__ import annotations

import heapq
import itertools

from hypothesis import given
from hypothesis import strategies as st

from qora_p2p.sim.events import EventQueue

# Each step either pushes an event at an offset from the last popped time (negative offsets: a
# time earlier than the one being drained) or pops one.
steps = st.lists(st.one_of(st.integers(-3, 5).map(lambda offset: ("push", offset)), st.just(("pop", 0))), max_size=200)


@given(steps)
def test_the_queue_pops_what_a_heap_of_time_and_sequence_pops(script):
    heap: list[tuple[int, int]] = []
    queue, sequence, now = EventQueue(), itertools.count(), 0
    for action, offset in script:
        if action == "push":
            number = next(sequence)
            queue.push(now + offset, "event", number)
            heapq.heappush(heap, (now + offset, number))
        elif heap:
            at, number = heapq.heappop(heap)
            assert queue.pop() == (at, "event", number)
            now = at
        assert bool(queue) == bool(heap) and len(queue) == len(heap)
    while heap:
        at, number = heapq.heappop(heap)
        assert queue.pop() == (at, "event", number)
    assert not queue
