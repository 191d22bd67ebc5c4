"""Records poses, per-frame timings and optionally the video, in a writer thread.

The loop calls :meth:`Recorder.submit`, which copies the pose into a preallocated ring and
puts a small record on a bounded queue without waiting: a full queue is counted in
``dropped``, never waited on. The writer thread appends records to growing arrays, writes
video frames as they come, and every ``flush_s`` seconds and at :meth:`Recorder.close`
writes the tables:

* ``<name><scorer>.h5`` / ``.csv``: poses in DeepLabCut's layout (key ``df_with_missing``,
  columns scorer / bodyparts / coords x, y, likelihood, index = frame index), so a scorer
  named like DeepLabCut's (``DLC_...``) gives the file names its tools look for beside
  ``<name>.mp4``. Frames the loop did not process are absent. (No .h5 for a session
  without poses: pandas cannot store an empty table.)
* ``<name><scorer>_timing.csv``: one row per recorded frame: ``frame``, ``t_capture_ns``,
  ``t_device_ns``, each stage's ``perf_counter_ns`` stamp (``STAGES``; other keys are not
  recorded), ``dropped`` (frames before this one the loop never processed), ``lost`` (poses
  before this one the recorder had no room for) and ``video_frame`` (its frame number in
  the video, empty if it has none). Missing values are empty cells.
* ``<name><scorer>_events.csv``: fired rules (``frame``, ``rule``, ``action``, ``t_ns``),
  from :meth:`Recorder.submit_event`.

The .h5 is rewritten to a temporary file and renamed; the .csv files grow by copy, append
and rename, so a flush formats only new rows and a failed write never damages what is
already on disk. Write errors are counted in ``errors`` and described in ``error``; the loop
decides whether to stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pandas as pd

from poseloop.realtime.types import STAGES, Frame, Pose

log = logging.getLogger(__name__)

MISSING = np.iinfo(np.int64).min
TIMING_COLUMNS = ("t_capture_ns", "t_device_ns", *STAGES, "dropped", "lost", "video_frame")
_STAGE_COLUMN = {stage: 2 + i for i, stage in enumerate(STAGES)}
_DROPPED, _LOST, _VIDEO = (TIMING_COLUMNS.index(c) for c in ("dropped", "lost", "video_frame"))
_STOP = object()


class _Event(NamedTuple):
    frame: int
    rule: str
    action: str
    t_ns: int


class Recorder:
    """Writes poses, timings and (optionally) video in its own thread; never blocks the loop.

    out_dir: created if needed. bodyparts, scorer: the DeepLabCut column levels.
    name: file stem (see the module docstring). video, video_fps, fourcc: record the frames.
    queue_size: records in flight before ``submit`` drops. flush_s: seconds between writes.
    video_buffers: frame copies in flight before a video frame is skipped (``video_dropped``);
    they must cover a table flush (a few hundred ms) at the camera's frame rate.
    """

    def __init__(
        self,
        out_dir: str | Path,
        bodyparts: Sequence[str],
        scorer: str,
        name: str = "session",
        video: bool = False,
        video_fps: float = 30.0,
        fourcc: str = "mp4v",
        queue_size: int = 1024,
        flush_s: float = 10.0,
        video_buffers: int = 32,
    ) -> None:
        if queue_size < 1 or flush_s <= 0 or video_buffers < 1 or len(fourcc) != 4:
            raise ValueError("need queue_size >= 1, flush_s > 0, video_buffers >= 1, 4-char fourcc")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.bodyparts = list(bodyparts)
        self.scorer = scorer
        stem = f"{name}{scorer}"
        self.paths = {
            "poses_h5": self.out_dir / f"{stem}.h5",
            "poses_csv": self.out_dir / f"{stem}.csv",
            "timing_csv": self.out_dir / f"{stem}_timing.csv",
            "events_csv": self.out_dir / f"{stem}_events.csv",
            "video": self.out_dir / f"{name}.mp4",
        }
        self.video, self.video_fps, self.fourcc = video, video_fps, fourcc
        self.flush_s = flush_s
        self.video_buffers = video_buffers
        self.dropped = 0
        self.events_dropped = 0
        self.video_dropped = 0
        self.errors = 0
        self.error: str | None = None
        k = len(self.bodyparts)
        # Producer side (loop thread).
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._ring = np.empty((queue_size + 2, k, 3), np.float32)  # +2: see submit()
        self._next = 0
        self._lost = 0
        self._pool: list[np.ndarray] = []
        self._allocated = 0
        self._video_shape: tuple[int, ...] | None = None
        self._closed = False
        # Writer side.
        self._n = 0
        self._poses = np.empty((4096, k, 3), np.float32)
        self._index = np.empty(4096, np.int64)
        self._times = np.empty((4096, len(TIMING_COLUMNS)), np.int64)
        self._last_index = -1
        self._csv_rows = {"poses_csv": 0, "timing_csv": 0, "events_csv": 0}
        self._events: list[_Event] = []
        self._writer: cv2.VideoWriter | None = None
        self._video_failed = False
        self._video_count = 0
        self._columns = pd.MultiIndex.from_product(
            [[scorer], self.bodyparts, ["x", "y", "likelihood"]],
            names=["scorer", "bodyparts", "coords"],
        )
        self._thread = threading.Thread(target=self._run, name=f"recorder {stem}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- loop thread
    def submit(self, pose: Pose, frame: Frame | None = None) -> None:
        """Queue a pose (and its frame, if recording video) without waiting.

        The pose data and image are copied, so the loop may reuse its buffers at once.
        """
        if self._closed:
            raise RuntimeError("recorder is closed")
        if pose.data.shape != self._ring.shape[1:]:
            raise ValueError(
                f"pose of shape {pose.data.shape}; the recorder expects "
                f"{self._ring.shape[1:]} (one row per bodypart)"
            )
        # The ring has queue_size + 2 slots: queue_size queued, one in the writer's hands, and
        # this one, so the slot written here is never one the writer has yet to read.
        slot = self._next % len(self._ring)
        np.copyto(self._ring[slot], pose.data)
        image = self._copy_image(frame.image) if self.video and frame is not None else None
        t_device = frame.t_device_ns if frame is not None else None
        record = (slot, pose.frame_index, pose.t_capture_ns, t_device, dict(pose.timings),
                  image, self._lost)
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            self._lost += 1
            if image is not None:
                self._pool.append(image)
            return
        self._next += 1
        self._lost = 0

    def submit_event(self, frame_index: int, rule: str, action: str, t_ns: int) -> None:
        """Queue a fired rule's action without waiting (a full queue counts in events_dropped)."""
        if self._closed:
            raise RuntimeError("recorder is closed")
        try:
            self._queue.put_nowait(_Event(frame_index, rule, action, t_ns))
        except queue.Full:
            self.events_dropped += 1

    def send(self, pose: Pose) -> None:
        """``Sink`` protocol: record a pose without its frame."""
        self.submit(pose)

    def _copy_image(self, image: np.ndarray) -> np.ndarray | None:
        if self._video_shape is None:
            self._video_shape = image.shape
        if image.shape != self._video_shape:
            self.video_dropped += 1
            return None
        if self._pool:
            buffer = self._pool.pop()
        elif self._allocated < self.video_buffers:
            buffer = np.empty(image.shape, np.uint8)
            self._allocated += 1
        else:
            self.video_dropped += 1
            return None
        np.copyto(buffer, image)
        return buffer

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, close the files and stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------- writer thread
    def _run(self) -> None:
        due = time.monotonic() + self.flush_s
        while True:
            try:
                record = self._queue.get(timeout=max(0.0, due - time.monotonic()))
            except queue.Empty:
                record = None
            if record is _STOP:
                break
            if isinstance(record, _Event):
                self._events.append(record)
            elif record is not None:
                self._store(record)
            if time.monotonic() >= due:
                if self._n > self._csv_rows["timing_csv"] \
                        or len(self._events) > self._csv_rows["events_csv"]:
                    self._flush()
                due = time.monotonic() + self.flush_s
        self._flush()
        if self._writer is not None:
            self._writer.release()

    def _store(self, record: tuple) -> None:
        """Append one pose record to the growing arrays (and its image to the video)."""
        slot, index, t_capture, t_device, timings, image, lost = record
        n = self._n
        if n == len(self._index):
            self._poses = _grow(self._poses)
            self._index = _grow(self._index)
            self._times = _grow(self._times)
        self._poses[n] = self._ring[slot]
        self._index[n] = index
        row = self._times[n]
        row[:] = MISSING
        row[0] = t_capture
        if t_device is not None:
            row[1] = t_device
        for key, value in timings.items():
            column = _STAGE_COLUMN.get(key)
            if column is not None:
                row[column] = value
        row[_DROPPED] = max(0, index - self._last_index - 1 - lost)
        row[_LOST] = lost
        if image is not None:
            if self._write_video(image):
                row[_VIDEO] = self._video_count
                self._video_count += 1
            self._pool.append(image)
        self._last_index = index
        self._n = n + 1

    def _write_video(self, image: np.ndarray) -> bool:
        if self._writer is None and not self._video_failed:
            path = self.paths["video"]
            size = (image.shape[1], image.shape[0])
            writer = cv2.VideoWriter(
                str(path), cv2.VideoWriter_fourcc(*self.fourcc), self.video_fps, size
            )
            if not writer.isOpened():
                self._video_failed = True
                self._fail(path, f"cannot open for writing ({self.fourcc}, {size[0]}x{size[1]})")
                return False
            self._writer = writer
        if self._writer is None:
            return False
        self._writer.write(image)
        return True

    def _flush(self) -> None:
        """Write the pose .h5 whole and append new rows to the .csv files."""
        n = self._n
        poses = pd.DataFrame(
            self._poses[:n].reshape(n, len(self._columns)).astype(np.float64),
            index=self._index[:n].copy(),
            columns=self._columns,
        )
        self._write_h5(poses)
        self._append_csv("poses_csv", poses.iloc[self._csv_rows["poses_csv"]:], index=True)
        self._append_csv("timing_csv", self._timing(), index=False)
        events = pd.DataFrame(self._events[self._csv_rows["events_csv"]:], columns=_Event._fields)
        self._append_csv("events_csv", events, index=False)

    def _write_h5(self, poses: pd.DataFrame) -> None:
        """Rewrite the .h5 via a temporary file (pandas cannot store an empty table: skipped)."""
        if poses.empty:
            return
        path = self.paths["poses_h5"]
        tmp = path.with_name(path.name + ".tmp")
        try:
            poses.to_hdf(tmp, key="df_with_missing", format="table", mode="w")
            os.replace(tmp, path)
        except Exception as e:  # OSError, HDF5ExtError, ...: report, keep the last good file
            self._fail(path, e)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _timing(self) -> pd.DataFrame:
        """The timing rows not yet in the .csv."""
        start, n = self._csv_rows["timing_csv"], self._n
        columns: dict[str, Any] = {"frame": self._index[start:n]}
        for j, name in enumerate(TIMING_COLUMNS):
            values = self._times[start:n, j].copy()
            columns[name] = pd.arrays.IntegerArray(values, values == MISSING)
        return pd.DataFrame(columns)

    def _append_csv(self, key: str, rows: pd.DataFrame, index: bool) -> None:
        """Append rows not yet on disk (copy, append, rename); the header on first write."""
        path, done = self.paths[key], self._csv_rows[key]
        tmp = path.with_name(path.name + ".tmp")
        try:
            if done:
                shutil.copyfile(path, tmp)
            with open(tmp, "a" if done else "w", newline="") as fh:
                fh.write(rows.to_csv(index=index, header=not done, lineterminator="\n"))
            os.replace(tmp, path)
        except OSError as e:
            self._fail(path, e)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return
        self._csv_rows[key] = done + len(rows)

    def _fail(self, path: Path, error: Exception | str) -> None:
        self.errors += 1
        self.error = f"{path}: {error}"
        log.error("recorder: %s", self.error)


def _grow(array: np.ndarray) -> np.ndarray:
    bigger = np.empty((2 * len(array), *array.shape[1:]), array.dtype)
    bigger[: len(array)] = array
    return bigger
