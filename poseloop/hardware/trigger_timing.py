"""Every trigger's true latency: camera exposure -> device output, on the device's own clock.

The reference firmware with ``TIMING 1`` stamps, on its microsecond clock, each rising edge
of the camera's exposure strobe (``S <n> <us>``) and the moment each ON/OFF/PULSE took
effect (``OK PULSE 1 5 @<us>``); ``TIME`` answers its clock. For each traced action (a
fired rule's command) this module finds

* ``t_output_us``: the stamp in that command's reply (replies come in command order, so
  the oldest traced command with the same text is the one answered);
* ``t_exposure_us``: the last strobe edge before the frame's capture time, the host's
  capture time mapped to the device's clock by :class:`ClockMap` (round trips of ``TIME``).
  This assumes a frame reaches the host before the next exposure starts, true for
  triggered or free-running cameras whose transfer takes less than a frame interval.

``latency_us = t_output_us - t_exposure_us`` needs no clock mapping: both are device stamps.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from poseloop.realtime.types import ActionRecord

_WRAP = 1 << 32  # the device's microsecond clock wraps after 2^32 us (71.6 min)
_SAMPLES = 32  # clock samples kept for the fit
_TRACES = 4096  # traced commands awaiting their reply
_STROBES = 4096  # strobe edges kept (40 s at 100 Hz)


class Unwrapper:
    """A wrapping 32-bit device clock -> a monotone count, each value taken nearest the last
    (reports arrive slightly out of order: a strobe is reported after a reply stamped later)."""

    def __init__(self) -> None:
        self._last: int | None = None

    def __call__(self, raw: int) -> int:
        if self._last is None:
            self._last = raw
            return raw
        value = (self._last - self._last % _WRAP) + raw
        if value - self._last > _WRAP // 2:
            value -= _WRAP
        elif self._last - value > _WRAP // 2:
            value += _WRAP
        self._last = max(self._last, value)
        return value


@dataclass
class ClockSample:
    """One TIME round trip: host send and receive (perf_counter ns), device clock (us)."""

    t_send_ns: int
    t_recv_ns: int
    device_us: int

    @property
    def rtt_ns(self) -> int:
        return self.t_recv_ns - self.t_send_ns


class ClockMap:
    """Host perf_counter ns <-> device us, fitted on the quickest recent round trips.

    The device read its clock somewhere inside each round trip; the middle is the estimate
    and half the round trip its bound. A line through the quicker half of the last samples
    takes the two clocks' rate difference (crystal drift) into account.
    """

    def __init__(self) -> None:
        self._samples: deque[ClockSample] = deque(maxlen=_SAMPLES)
        self._fit: tuple[float, float] | None = None  # host_ns = a + b * device_us

    def add(self, sample: ClockSample) -> None:
        self._samples.append(sample)
        quick = sorted(self._samples, key=lambda s: s.rtt_ns)[:max(1, len(self._samples) // 2)]
        dev = np.array([s.device_us for s in quick], np.float64)
        mid = np.array([(s.t_send_ns + s.t_recv_ns) / 2 for s in quick], np.float64)
        if len(quick) >= 3 and np.ptp(dev) > 1e5:  # 0.1 s of spread: the rate is measurable
            b, a = np.polyfit(dev - dev[0], mid, 1)
            self._fit = (float(a - b * dev[0]), float(b))
        else:
            self._fit = (float(np.mean(mid - 1000.0 * dev)), 1000.0)

    @property
    def ready(self) -> bool:
        return self._fit is not None

    @property
    def span_us(self) -> float:
        """Device time covered by the samples kept (the rate is fitted above 0.1 s)."""
        if len(self._samples) < 2:
            return 0.0
        return float(self._samples[-1].device_us - self._samples[0].device_us)

    @property
    def uncertainty_us(self) -> float:
        """Half the quickest round trip: how far off a mapped time can be (us)."""
        if not self._samples:
            return math.inf
        return min(s.rtt_ns for s in self._samples) / 2000.0

    def to_device_us(self, host_ns: int) -> float:
        assert self._fit is not None
        a, b = self._fit
        return (host_ns - a) / b

    def to_host_ns(self, device_us: float) -> float:
        assert self._fit is not None
        a, b = self._fit
        return a + b * device_us


class TriggerTimer:
    """Pairs traced actions with their output stamps and exposure strobes (thread-safe:
    the loop traces, the device's reader thread feeds replies, the loop drains)."""

    def __init__(self) -> None:
        self.clock = ClockMap()
        self._unwrap = Unwrapper()
        self._strobes: deque[tuple[int, int]] = deque(maxlen=_STROBES)  # (n, device us)
        self._traces: deque[tuple[ActionRecord, int, str]] = deque()
        self._done: deque[ActionRecord] = deque()
        self._lock = threading.Lock()
        #: Strobe edges the device could not report (gaps in their count).
        self.strobes_missed = 0
        #: Traced actions dropped because too many awaited replies.
        self.traces_dropped = 0

    # -- fed by the loop ------------------------------------------------------------------
    def trace(self, record: ActionRecord, t_capture_ns: int, command: str) -> None:
        """Time ``record`` (its command about to be sent; its frame captured at
        ``t_capture_ns``)."""
        with self._lock:
            if len(self._traces) >= _TRACES:
                self._done.append(self._traces.popleft()[0])
                self.traces_dropped += 1
            self._traces.append((record, t_capture_ns, command))

    def recent_strobes(self) -> list[tuple[int, int]]:
        """The strobe edges kept, (n, device us), oldest first."""
        with self._lock:
            return list(self._strobes)

    def untrace(self, record: ActionRecord) -> None:
        """Forget the last trace of ``record`` (its command was not sent after all)."""
        with self._lock:
            if self._traces and self._traces[-1][0] is record:
                self._traces.pop()

    @property
    def pending(self) -> int:
        """Traced actions still awaiting their reply."""
        return len(self._traces)

    def drain(self) -> Sequence[ActionRecord]:
        """The traced records resolved since the last call, timing fields filled in (NaN
        where unknown); an empty tuple (no allocation) when there are none."""
        done = self._done
        if not done:
            return ()
        out = []
        while done:
            out.append(done.popleft())
        return out

    def flush(self) -> None:
        """Give up on every trace still awaiting its reply (at close)."""
        with self._lock:
            while self._traces:
                self._done.append(self._traces.popleft()[0])

    # -- fed by the device's reader thread -------------------------------------------------
    def on_time(self, t_send_ns: int, t_recv_ns: int, device_us: int) -> None:
        """A TIME round trip."""
        with self._lock:
            self.clock.add(ClockSample(t_send_ns, t_recv_ns, self._unwrap(device_us)))

    def on_strobe(self, n: int, device_us: int) -> None:
        """An ``S n us`` report."""
        with self._lock:
            if self._strobes and n > self._strobes[-1][0] + 1:
                self.strobes_missed += n - self._strobes[-1][0] - 1
            elif self._strobes and n <= self._strobes[-1][0]:
                self._strobes.clear()  # counting restarted (TIMING 1 again, device reset)
            self._strobes.append((n, self._unwrap(device_us)))

    def on_stamp(self, command: str, device_us: int) -> None:
        """An ``OK <command> @us`` reply: resolves the oldest trace of that command; traces
        before it were never answered (lost on the wire) and resolve without timing."""
        with self._lock:
            t_out = self._unwrap(device_us)
            index = next((i for i, (_, _, text) in enumerate(self._traces) if text == command),
                         None)
            if index is None:
                return  # not a traced command (a heartbeat, an OFF from close, ...)
            for _ in range(index):
                self._done.append(self._traces.popleft()[0])
            record, t_capture_ns, _ = self._traces.popleft()
            t_exp = self._exposure_before(t_capture_ns)
            self._done.append(record._replace(t_exposure_us=t_exp, t_output_us=float(t_out),
                                              latency_us=float(t_out) - t_exp))

    def _exposure_before(self, t_capture_ns: int) -> float:
        """Device time of the last strobe edge before the capture (NaN if unknown)."""
        if not self.clock.ready or not self._strobes:
            return math.nan
        capture_us = self.clock.to_device_us(t_capture_ns)
        best = math.nan
        for _, t in reversed(self._strobes):
            if t <= capture_us:
                best = float(t)
                break
        return best
