"""The simulator's event queue pops in (time, push order), as a heap of (time, sequence) does; the
trace digests its events as one SHA-256 update per event would."""

from __future__ import annotations

import hashlib
import heapq
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from qora_p2p.sim.events import TRACE_BATCH, EventQueue, Trace

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


@given(st.text(max_size=20), st.lists(st.text(max_size=40), max_size=3 * TRACE_BATCH // 2))
@settings(max_examples=30)
def test_the_trace_is_the_digest_of_one_update_per_event(start, texts):
    trace = Trace(start)
    expected = hashlib.sha256(start.encode())
    for text in texts:
        trace.add(text)
        expected.update(text.encode())
    assert trace.hexdigest() == expected.hexdigest()
    assert trace.hexdigest() == expected.hexdigest()  # asking again changes nothing
