"""Camera groups: frame sets from several cameras, by hardware trigger or by timestamps; a
late or missing view is counted, never waited on past the tolerance."""

from __future__ import annotations

import time

import numpy as np
import pytest

from poseloop.errors import CameraError
from poseloop.realtime.cameras.group import CameraGroup
from poseloop.realtime.types import CameraInfo, Frame


class TimedCamera:
    """Frames at t0 + i * period (+ per-frame delay), some of them never delivered."""

    def __init__(self, period_ms: float, frames: int, delay_ms: dict[int, float] | None = None,
                 drop: set[int] | None = None, offset_ms: float = 0.0,
                 fail_at: int | None = None) -> None:
        self.period_ns = int(period_ms * 1e6)
        self.frames, self.delay, self.drop = frames, delay_ms or {}, drop or set()
        self.offset_ns, self.fail_at = int(offset_ms * 1e6), fail_at
        self.t0 = 0
        self.i = 0
        self.opened = self.closed = False

    def open(self) -> CameraInfo:
        self.opened = True
        return CameraInfo(8, 6, 1e9 / self.period_ns)

    def start(self, t0: int) -> None:
        self.t0 = t0

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        while True:
            if self.i >= self.frames:
                return None
            i = self.i
            self.i += 1
            if i == self.fail_at:
                raise OSError("cable pulled")
            if i not in self.drop:
                break
        due = self.t0 + i * self.period_ns + self.offset_ns + int(self.delay.get(i, 0) * 1e6)
        while time.perf_counter_ns() < due:
            time.sleep(max(0.0, (due - time.perf_counter_ns()) / 1e9))
        image = out if out is not None else np.zeros((6, 8, 3), np.uint8)
        image[...] = i % 256
        return Frame(image, i, time.perf_counter_ns())

    def close(self) -> None:
        self.closed = True


def start(group: CameraGroup, cams: list[TimedCamera]) -> None:
    t0 = time.perf_counter_ns() + 50_000_000
    for c in cams:
        c.start(t0)
    group.open()


def run(group: CameraGroup, cams: list[TimedCamera], n: int) -> list:
    start(group, cams)
    sets = []
    try:
        for _ in range(n):
            fs = group.read()
            if fs is None:
                break
            sets.append((fs.index, [None if f is None else (f.index, int(f.image[0, 0, 0]))
                                    for f in fs.frames], fs.t_capture_ns))
    finally:
        group.close()
    return sets


@pytest.mark.parametrize("sync", ["timestamp", "trigger"])
def test_sets_match_views_of_the_same_moment(sync: str) -> None:
    cams = [TimedCamera(20, 30, offset_ms=o) for o in (0.0, 1.0, -1.0)]
    group = CameraGroup(cams, sync=sync, tolerance_ms=5)
    sets = run(group, cams, 30)
    assert len(sets) >= 25
    for _, frames, _ in sets:
        assert all(f is not None for f in frames)
        assert len({f[0] for f in frames}) == 1  # the same frame number in every view
        assert all(f[1] == f[0] % 256 for f in frames)  # and each its own image
    assert group.counters.missing == [0, 0, 0] and all(c.closed for c in cams)


def test_a_late_view_is_counted_missing_and_not_waited_for() -> None:
    """Camera 1's frame 10 comes 30 ms late (after the next set), camera 2 never delivers
    frame 15: those sets lack that view; no set waited longer than the tolerance."""
    cams = [TimedCamera(40, 25), TimedCamera(40, 25, delay_ms={10: 30.0}),
            TimedCamera(40, 25, drop={15})]
    group = CameraGroup(cams, sync="timestamp", tolerance_ms=5)
    made = []
    start(group, cams)
    try:
        while (fs := group.read()) is not None:
            made.append((fs.frames[0].index, [f is not None for f in fs.frames],
                         time.perf_counter_ns() - fs.t_capture_ns))
    finally:
        group.close()
    by_index = {i: (views, waited) for i, views, waited in made}
    assert by_index[10][0] == [True, False, True]
    assert by_index[15][0] == [True, True, False]
    assert all(v == [True, True, True] for i, (v, _) in by_index.items() if i not in (10, 15))
    assert group.counters.missing == [0, 1, 1] and group.counters.incomplete == 2
    # waiting for the late view ended at the tolerance (5 ms), not at its arrival (30 ms)
    assert by_index[10][1] < 25e6


def test_trigger_sync_matches_frame_numbers_across_a_drop() -> None:
    cams = [TimedCamera(20, 20), TimedCamera(20, 20, drop={7})]
    group = CameraGroup(cams, sync="trigger", tolerance_ms=5)
    sets = run(group, cams, 20)
    for _, frames, _ in sets:
        ref, other = frames
        assert other is None or other[0] == ref[0]
    assert [s for s in sets if s[1][1] is None] == [s for s in sets if s[1][0][0] == 7]


def test_a_failing_camera_is_reported_with_its_index() -> None:
    cams = [TimedCamera(10, 50), TimedCamera(10, 50, fail_at=5)]
    group = CameraGroup(cams, tolerance_ms=3)
    with pytest.raises(CameraError, match="camera 1 .*cable pulled"):
        run(group, cams, 50)
    with pytest.raises(ValueError, match="at least two cameras"):
        CameraGroup(cams[:1])
