"""The clock on the wire: CLOCK_MONOTONIC nanoseconds (``time.monotonic_ns()``).

``time.perf_counter_ns()`` (the loop's stage clock) is only defined within one process, so
it never goes on the wire. CLOCK_MONOTONIC is one clock for every process on a Linux host
(nanoseconds since boot, never stepped), so a subscriber on the same machine can subtract a
wire timestamp from its own ``monotonic_ns()`` to get latency. It is not comparable across
machines.
"""

from __future__ import annotations

import time

#: Read the wire clock.
now_ns = time.monotonic_ns


def _perf_offset_ns() -> int:
    """wire time - perf_counter time; exactly 0 where both are the same clock (Linux)."""
    perf, mono = time.get_clock_info("perf_counter"), time.get_clock_info("monotonic")
    if perf.implementation == mono.implementation:
        return 0
    brackets = []
    for _ in range(10):  # keep the tightest bracket of one perf_counter read
        a = time.monotonic_ns()
        p = time.perf_counter_ns()
        b = time.monotonic_ns()
        brackets.append((b - a, (a + b) // 2 - p))
    return min(brackets)[1]


PERF_OFFSET_NS = _perf_offset_ns()


def from_perf_ns(t_perf_ns: int) -> int:
    """Convert a ``perf_counter_ns()`` stamp of this process to the wire clock."""
    return t_perf_ns + PERF_OFFSET_NS
