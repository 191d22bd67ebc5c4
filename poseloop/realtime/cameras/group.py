"""Several cameras as one source of frame sets (one frame per camera of the same moment).

Each camera is read by its own thread into a short queue of recent frames (buffers from a
per-camera pool: nothing is allocated per frame). :meth:`CameraGroup.read` takes the next
frame of the first camera (the reference) and, for every other camera, the frame of the
same moment:

* ``sync: trigger`` — the cameras expose on a shared hardware trigger (Basler / GenICam
  line trigger, see the firmware README's wiring) and number their frames alike: the frame
  with the reference's index;
* ``sync: timestamp`` — free-running cameras: the frame whose capture time is nearest the
  reference's, within ``tolerance_ms``.

A view that has not come ``tolerance_ms`` after the reference frame is missing from the set
(``None``) and counted per camera in ``missing``; the set is never waited on longer.
Frames of a set are valid until the next :meth:`read`.

In an experiment config the section ``group`` (:class:`GroupConfig`) makes one: its
cameras (any kinds), the sync and the ``triangulation`` that turns the views' poses into 3D.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field

from poseloop.config import Strict
from poseloop.errors import CameraError
from poseloop.realtime.cameras import CameraConfig
from poseloop.realtime.types import Camera, CameraInfo, Frame
from poseloop.threed.live import TriangulationConfig

_QUEUE = 4  # recent frames kept per camera
_POOL = _QUEUE + 3  # buffers per camera: the queue, the set handed out, the one being read


class GroupConfig(Strict):
    """Several synchronised, calibrated cameras seen as one 3D source (section ``group``)."""

    cameras: list[CameraConfig] = Field(min_length=2, description="camera sections, in the "
                                        "order of triangulation.cameras")
    sync: Literal["trigger", "timestamp"] = Field(
        default="timestamp", description="trigger: frames numbered alike by a shared "
        "hardware trigger (and video files); timestamp: nearest capture time")
    tolerance_ms: float = Field(default=5.0, gt=0, description="longest wait for a view "
                                "after the first camera's frame; later = missing")
    triangulation: TriangulationConfig


@dataclass
class FrameSet:
    """One moment seen by every camera: ``frames[c]`` is camera c's frame, None if missing."""

    index: int
    frames: list[Frame | None]
    t_capture_ns: int

    @property
    def complete(self) -> bool:
        return all(f is not None for f in self.frames)


@dataclass
class GroupCounters:
    """What the group did: sets made, views missing per camera, frames never used."""

    sets: int = 0
    incomplete: int = 0
    missing: list[int] = field(default_factory=list)
    unused: list[int] = field(default_factory=list)


class _Reader:
    """One camera read in its own thread into a short queue of recent frames."""

    def __init__(self, camera: Camera, index: int, cond: threading.Condition) -> None:
        self.camera, self.index, self.cond = camera, index, cond
        self.queue: deque[Frame] = deque()
        self.free: list[np.ndarray] = []
        self.held: list[Frame] = []  # handed out in the current set
        self.unused = 0
        self.ended = False
        self.error: CameraError | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"camera group {index}",
                                       daemon=True)

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    if self.stopping:
                        return
                    buffer = self.free.pop() if self.free else None
                frame = self.camera.read(buffer)
                with self.cond:
                    if frame is None:
                        self.ended = True
                    else:
                        frame.camera = self.index
                        if len(self.queue) >= _QUEUE:  # the oldest was never used
                            self.free.append(self.queue.popleft().image)
                            self.unused += 1
                        self.queue.append(frame)
                    self.cond.notify_all()
                if frame is None:
                    return
        except Exception as e:  # every failure reaches the consumer
            with self.cond:
                self.error = e if isinstance(e, CameraError) else CameraError(
                    f"camera {self.index} ({self.camera!r}): {type(e).__name__}: {e}")
                self.cond.notify_all()

    def take(self, frame: Frame) -> None:
        """Hand ``frame`` out (with ``cond`` held); older queued frames are dropped."""
        while self.queue:
            f = self.queue.popleft()
            if f is frame:
                break
            self.free.append(f.image)
            self.unused += 1
        self.held.append(frame)

    def release(self) -> None:
        """The set handed out is done with: its buffers go back to the pool."""
        for f in self.held:
            if len(self.free) < _POOL:
                self.free.append(f.image)
        self.held.clear()


class CameraGroup:
    """N cameras as one source of :class:`FrameSet` (see the module docstring)."""

    def __init__(self, cameras: Sequence[Camera], sync: Literal["trigger", "timestamp"] =
                 "timestamp", tolerance_ms: float = 5.0, timeout_s: float = 2.0) -> None:
        if len(cameras) < 2:
            raise ValueError("a camera group needs at least two cameras")
        if sync not in ("trigger", "timestamp"):
            raise ValueError(f"sync must be 'trigger' or 'timestamp', got {sync!r}")
        self.cameras = list(cameras)
        self.sync = sync
        self.tolerance_ns = int(tolerance_ms * 1e6)
        self.timeout_s = timeout_s
        self.counters = GroupCounters(missing=[0] * len(cameras), unused=[0] * len(cameras))
        self._cond = threading.Condition()
        self._readers: list[_Reader] = []
        self._started = False
        self._sets = 0

    def __repr__(self) -> str:
        return f"CameraGroup({', '.join(map(repr, self.cameras))}; sync {self.sync})"

    def open(self) -> list[CameraInfo]:
        """Open every camera (closing those opened if one fails); reading starts at the first
        :meth:`read` (a run's warm-up does not use up a file's frames)."""
        infos: list[CameraInfo] = []
        try:
            for c in self.cameras:
                infos.append(c.open())
        except BaseException:
            for c in self.cameras[:len(infos)]:
                c.close()
            raise
        self._readers = [_Reader(c, i, self._cond) for i, c in enumerate(self.cameras)]
        self._started = False
        return infos

    def read(self) -> FrameSet | None:
        """The set of the reference camera's newest frame; None once it has ended. CameraError if a
        camera failed or the reference delivered nothing for ``timeout_s``."""
        readers = self._readers
        if not self._started:
            self._started = True
            for r in readers:
                r.thread.start()
        ref = readers[0]
        with self._cond:
            for r in readers:
                r.release()
            deadline = time.monotonic() + self.timeout_s
            while not ref.queue:
                self._raise_errors()
                if ref.ended:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraError(f"camera 0 ({ref.camera!r}): no frame for "
                                      f"{self.timeout_s:g} s")
                self._cond.wait(remaining)
            anchor = ref.queue[-1]  # the newest: older reference frames are dropped (unused)
            ref.take(anchor)
            frames: list[Frame | None] = [anchor]
            # wait for the other views until tolerance after the reference's capture
            until_ns = anchor.t_capture_ns + self.tolerance_ns
            for r in readers[1:]:
                match = self._match(r, anchor)
                while match is None and not r.ended and r.error is None:
                    wait_ns = until_ns - time.perf_counter_ns()
                    if wait_ns <= 0:
                        break
                    self._cond.wait(wait_ns / 1e9)
                    match = self._match(r, anchor)
                if match is None:
                    self.counters.missing[r.index] += 1
                else:
                    r.take(match)
                frames.append(match)
            for r in readers:
                self.counters.unused[r.index] = r.unused
        fs = FrameSet(self._sets, frames, anchor.t_capture_ns)
        self._sets += 1
        self.counters.sets += 1
        self.counters.incomplete += not fs.complete
        return fs

    def _match(self, reader: _Reader, anchor: Frame) -> Frame | None:
        """The queued frame of ``reader`` from the anchor's moment, if there is one."""
        if self.sync == "trigger":
            return next((f for f in reader.queue if f.index == anchor.index), None)
        best, best_dt = None, self.tolerance_ns + 1
        for f in reader.queue:
            dt = abs(f.t_capture_ns - anchor.t_capture_ns)
            if dt < best_dt:
                best, best_dt = f, dt
        return best

    def _raise_errors(self) -> None:
        for r in self._readers:
            if r.error is not None:
                raise r.error

    def close(self) -> None:
        """Stop the readers and close every camera (a reader stuck in read() is left)."""
        with self._cond:
            for r in self._readers:
                r.stopping = True
            self._cond.notify_all()
        for r, camera in zip(self._readers, self.cameras, strict=True):
            if r.thread.is_alive():
                r.thread.join(self.timeout_s)
            if not r.thread.is_alive():
                camera.close()
        self._readers = []
