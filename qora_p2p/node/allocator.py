"""glibc's allocator, set up for a node's large, short-lived buffers.

Every round a node allocates and frees buffers of hundreds of kilobytes: received frames and
messages, update payloads, the aggregation's input matrix and its blocks, the model and its
snapshot. With glibc's defaults many of them are served by ``mmap`` and given back with ``munmap``,
or trimmed off the top of the heap when freed, so the next round faults the same pages in again
and the kernel zeroes each one (``perf`` on a member of ``benchmarks/bench_round.py``, N = 10,
P = 100K: page faults and page clearing were about 7 % of the member's CPU).

`tune_allocator` raises both thresholds once, at start (``mallopt``): allocations below
``MMAP_THRESHOLD_BYTES`` come from the heap, and freed heap is kept up to
``TRIM_THRESHOLD_BYTES`` for the next round. Measured with ten members on this machine (alternating
runs of 25 rounds, mean CPU per member and round): 0.0575 / 0.0583 / 0.0502 s with glibc's
defaults, 0.0512 / 0.0534 / 0.0446 s tuned; round p50 305 / 303 / 266 ms against 264 / 275 /
234 ms; peak RSS per member 99 MB against 100 MB. On configurations it was not tuned on: four
members, P = 1M, 0.2365 / 0.2452 s against 0.2164 / 0.2255 s; four members, P = 10K (buffers below
glibc's default thresholds), no difference (0.0100 / 0.0124 s against 0.0111 / 0.0113 s).
``qora-node --system-allocator`` leaves the defaults. Elsewhere (not glibc) this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

TRIM_THRESHOLD_BYTES = 64 << 20  # freed heap kept for reuse before any is given back to the kernel
MMAP_THRESHOLD_BYTES = 16 << 20  # allocations from this size on get their own mapping
_M_TRIM_THRESHOLD = -1  # glibc's malloc.h parameter numbers
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Set glibc's trim and mmap thresholds; False (and nothing changed) where the C library is
    not glibc or refuses the values."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl and others: no libc.so.6 or no mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
