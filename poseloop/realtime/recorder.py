"""Records poses, per-frame timings and optionally the video, in a writer thread.

The loop calls :meth:`Recorder.submit`, which copies the pose and its stage stamps into a
preallocated ring and puts a small record on a bounded queue without waiting: a full queue
is counted in ``dropped``, never waited on. The writer thread collects records, writes video
frames as they come, and every ``flush_s`` seconds and at :meth:`Recorder.close` appends the
new rows to the files:

* ``<name><scorer>.h5`` / ``.csv``: poses in DeepLabCut's layout (key ``df_with_missing``,
  table format, columns scorer / bodyparts / coords x, y, likelihood, index = frame index),
  so a scorer named like DeepLabCut's (``DLC_...``) gives the file names its tools look for
  beside the video ``<name>.mkv``. Frames the loop did not process are absent. (No .h5 for
  a session without poses: pandas cannot store an empty table.)
* ``<name><scorer>_timing.csv``: one row per recorded frame: ``frame``, ``t_capture_ns``,
  ``t_device_ns``, each stage's ``perf_counter_ns`` stamp (``STAGES``; other keys are not
  recorded), ``dropped`` (frames before this one the loop never processed), ``lost`` (poses
  before this one the recorder had no room for) and ``video_frame`` (its frame number in
  the video, empty if it has none). Missing values are empty cells.
* ``<name><scorer>_events.csv``: fired rules (``frame``, ``rule``, ``action``, ``t_ns``),
  from :meth:`Recorder.submit_event`.

Nothing already on disk is put at risk by a later write, so a long run holds only the rows
of one flush in memory and a write error (disk full, unplugged drive, read-only folder)
damages nothing: a .csv append that fails is cut back to its last whole row, and its rows
stay in memory to be retried at the next flush. The .csv files are ``fsync``-ed at every
flush and are the record that survives a crash. The .h5 is written at :meth:`close` from
the poses .csv, through a temporary file that is read back before it takes the final name
(HDF5 does not always report a failed write). Write errors are counted in ``errors`` and
described in ``error``; the loop decides whether to stop (``record.on_error``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

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
_H5_KEY = "df_with_missing"
#: What to do when a recording of the same name is already in the folder.
IfExists = Literal["number", "overwrite", "error"]


class _Event(NamedTuple):
    frame: int
    rule: str
    action: str
    t_ns: int


class Recorder:
    """Writes poses, timings and (optionally) video in its own thread; never blocks the loop.

    out_dir: created if needed. bodyparts, scorer: the DeepLabCut column levels.
    name: file stem (see the module docstring). if_exists: an earlier recording with this
    stem is kept and the new one numbered ``<name>-2``, ``-3``, ... ("number"), replaced
    ("overwrite"), or a FileExistsError ("error").
    video, video_fps, fourcc: record the frames.
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
        if_exists: IfExists = "number",
    ) -> None:
        if queue_size < 1 or flush_s <= 0 or video_buffers < 1 or len(fourcc) != 4:
            raise ValueError("need queue_size >= 1, flush_s > 0, video_buffers >= 1, 4-char fourcc")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.bodyparts = list(bodyparts)
        self.scorer = scorer
        self.name = name = _free_name(self.out_dir, name, scorer, if_exists)
        self.paths = _paths(self.out_dir, name, scorer)
        self.video, self.video_fps, self.fourcc = video, video_fps, fourcc
        self.flush_s = flush_s
        self.video_buffers = video_buffers
        self.dropped = 0
        self.events_dropped = 0
        self.video_dropped = 0
        self.errors = 0
        self.error: str | None = None
        #: Pose rows on disk in the .csv (the count that survives a crash).
        self.rows_written = 0
        k = len(self.bodyparts)
        # Producer side (loop thread). The rings have queue_size + 2 slots: queue_size
        # queued, one in the writer's hands, and the one submit() fills, so a slot written by
        # submit() is never one the writer has yet to read.
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._ring = np.empty((queue_size + 2, k, 3), np.float32)
        self._ring_times = np.empty((queue_size + 2, len(TIMING_COLUMNS)), np.int64)
        self._next = 0
        self._lost = 0
        self._pool: list[np.ndarray] = []
        self._allocated = 0
        self._video_shape: tuple[int, ...] | None = None
        self._closed = False
        # Writer side: rows not yet in every file, from row number self._base on.
        self._n = 0
        self._base = 0
        self._poses = np.empty((1024, k, 3), np.float32)
        self._index = np.empty(1024, np.int64)
        self._times = np.empty((1024, len(TIMING_COLUMNS)), np.int64)
        self._last_index = -1
        self._rows = {"poses_csv": 0, "timing_csv": 0}
        self._events: list[_Event] = []
        self._events_written = 0
        self._started: set[str] = set()
        self._writer: cv2.VideoWriter | None = None
        self._video_failed = False
        self._video_count = 0
        self._column_levels = [[scorer], self.bodyparts, ["x", "y", "likelihood"]]
        self._thread = threading.Thread(target=self._run, name=f"recorder {name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- loop thread
    def submit(self, pose: Pose, frame: Frame | None = None) -> None:
        """Queue a pose (and its frame, if recording video) without waiting.

        The pose data, stamps and image are copied, so the loop may reuse its buffers at once.
        """
        if self._closed:
            raise RuntimeError("recorder is closed")
        if pose.data.shape != self._ring.shape[1:]:
            raise ValueError(
                f"pose of shape {pose.data.shape}; the recorder expects "
                f"{self._ring.shape[1:]} (one row per bodypart)"
            )
        slot = self._next % len(self._ring)
        np.copyto(self._ring[slot], pose.data)
        times = self._ring_times[slot]
        times[:] = MISSING
        times[0] = pose.t_capture_ns
        if frame is not None and frame.t_device_ns is not None:
            times[1] = frame.t_device_ns
        for key, value in pose.timings.items():
            column = _STAGE_COLUMN.get(key)
            if column is not None:
                times[column] = value
        times[_LOST] = self._lost
        image = self._copy_image(frame.image) if self.video and frame is not None else None
        try:
            self._queue.put_nowait((slot, pose.frame_index, image))
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
                if self._n or len(self._events) or not self._started:
                    self._flush()
                due = time.monotonic() + self.flush_s
        self._flush()
        self._write_h5()
        if self._writer is not None:
            self._writer.release()

    def _store(self, record: tuple) -> None:
        """Append one pose record to the pending rows (and its image to the video)."""
        slot, index, image = record
        n = self._n
        if n == len(self._index):
            self._poses = _grow(self._poses)
            self._index = _grow(self._index)
            self._times = _grow(self._times)
        self._poses[n] = self._ring[slot]
        self._index[n] = index
        row = self._times[n]
        row[:] = self._ring_times[slot]
        row[_DROPPED] = max(0, index - self._last_index - 1 - row[_LOST])
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
        """Append the pending rows to each file; forget the rows every file now holds."""
        n, base = self._n, self._base
        # A fresh column index each flush: pandas keeps a reference from a shared index to
        # every frame built on it, so reusing one grew the memory ~50 bytes a pose.
        columns = pd.MultiIndex.from_product(self._column_levels,
                                             names=["scorer", "bodyparts", "coords"])
        poses = pd.DataFrame(
            self._poses[:n].reshape(n, len(columns)).astype(np.float64),
            index=self._index[:n].copy(), columns=columns,
        )
        done = self._rows
        if self._append_csv("poses_csv", poses.iloc[done["poses_csv"] - base:], index=True):
            done["poses_csv"] = base + n
            self.rows_written = base + n
        if self._append_csv("timing_csv", self._timing(done["timing_csv"] - base), index=False):
            done["timing_csv"] = base + n
        events = pd.DataFrame(self._events, columns=_Event._fields)
        if self._append_csv("events_csv", events, index=False):
            self._events_written += len(self._events)
            self._events.clear()
        # Rows every file holds are forgotten; the rest (after an error) move to the front.
        keep_from = min(done.values()) - base
        if keep_from:
            left = n - keep_from
            for array in (self._poses, self._index, self._times):
                array[:left] = array[keep_from:n]
            self._n, self._base = left, base + keep_from

    def _timing(self, start: int) -> pd.DataFrame:
        """The pending timing rows from ``start``."""
        n = self._n
        columns: dict[str, Any] = {"frame": self._index[start:n]}
        for j, name in enumerate(TIMING_COLUMNS):
            values = self._times[start:n, j].copy()
            columns[name] = pd.arrays.IntegerArray(values, values == MISSING)
        return pd.DataFrame(columns)

    def _append_csv(self, key: str, rows: pd.DataFrame, index: bool) -> bool:
        """Append rows (with the header on the first write) and fsync; on failure cut the
        file back to its last whole row. False if nothing was written."""
        path, first = self.paths[key], key not in self._started
        if rows.empty and not first:
            return True
        text = rows.to_csv(index=index, header=first, lineterminator="\n")
        size: int | None = None  # where this append started, once the file is open
        try:
            with open(path, "w" if first else "a", newline="") as fh:
                size = fh.tell()
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as e:
            self._fail(path, e)
            if size is not None:  # never cut a file this append did not open
                with contextlib.suppress(OSError):
                    os.truncate(path, size)
            return False
        self._started.add(key)
        return True

    def _write_h5(self) -> None:
        """Write the .h5 from the poses .csv (see :func:`csv_to_h5`)."""
        if not self.rows_written:
            return  # pandas cannot store an empty table
        try:
            csv_to_h5(self.paths["poses_csv"], self.paths["poses_h5"], self.rows_written)
        except OSError as e:
            self._fail(self.paths["poses_h5"],
                       f"not written ({e}); {self.paths['poses_csv'].name} holds the poses")

    def _fail(self, path: Path, error: Exception | str) -> None:
        self.errors += 1
        self.error = f"{path}: {error}"
        log.error("recorder: %s", self.error)


def csv_to_h5(csv: str | Path, h5: str | Path | None = None,
              expected_rows: int | None = None) -> Path:
    """Write a recorded poses .csv as DeepLabCut's .h5 (beside it unless ``h5`` is given).

    Goes through a temporary file that is read back whole and compared (a digest of every
    index value and coordinate) before it takes the final name: on a full disk HDF5 has been
    seen to report success and store zeros. Also what ``poseloop recover`` runs after a
    crash, when only the .csv files were written. Raises OSError naming the file.
    """
    csv = Path(csv)
    path = Path(h5) if h5 is not None else csv.with_suffix(".h5")
    tmp = path.with_name(path.name + ".tmp")
    chunk_rows = 100_000
    try:
        columns = None
        written, rows = hashlib.sha256(), 0
        with pd.HDFStore(tmp, mode="w") as store:
            for chunk in pd.read_csv(csv, header=[0, 1, 2], index_col=0, chunksize=chunk_rows):
                columns = columns if columns is not None else pd.MultiIndex.from_tuples(
                    list(chunk.columns), names=["scorer", "bodyparts", "coords"])
                chunk.columns = columns
                chunk.index = chunk.index.astype(np.int64)
                chunk = chunk.astype(np.float64)
                store.append(_H5_KEY, chunk, format="table")
                _digest(written, chunk)
                rows += len(chunk)
        if not rows or (expected_rows is not None and rows != expected_rows):
            raise OSError(f"the .csv holds {rows} rows, expected {expected_rows or 'some'}")
        read = hashlib.sha256()
        with pd.HDFStore(tmp, mode="r") as store:
            for start in range(0, rows, chunk_rows):
                _digest(read, store.select(_H5_KEY, start=start, stop=start + chunk_rows))
        if read.digest() != written.digest():
            raise OSError("the file read back differs from what was written (disk full?)")
        os.replace(tmp, path)
    except Exception as e:  # OSError, HDF5ExtError, pandas parser errors, ...
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: {e}") from e
    return path


def _digest(hasher: Any, table: pd.DataFrame) -> None:
    hasher.update(np.ascontiguousarray(table.index.to_numpy(np.int64)).tobytes())
    hasher.update(np.ascontiguousarray(table.to_numpy(np.float64)).tobytes())


def _paths(out_dir: Path, name: str, scorer: str) -> dict[str, Path]:
    stem = f"{name}{scorer}"
    return {
        "poses_h5": out_dir / f"{stem}.h5",
        "poses_csv": out_dir / f"{stem}.csv",
        "timing_csv": out_dir / f"{stem}_timing.csv",
        "events_csv": out_dir / f"{stem}_events.csv",
        # Matroska, not MP4: an MP4 muxer holds ~70 bytes per frame in memory until it writes
        # its index at the end (100+ MB an hour at 200 FPS), and a killed run's .mp4 does
        # not play at all; a .mkv grows ~3 bytes a frame and plays up to its last cluster.
        "video": out_dir / f"{name}.mkv",
    }


def _free_name(out_dir: Path, name: str, scorer: str, if_exists: IfExists) -> str:
    """``name``, or the first ``name-N`` whose files are all absent (see Recorder)."""
    taken = [p for p in _paths(out_dir, name, scorer).values() if p.exists()]
    if not taken or if_exists == "overwrite":
        return name
    if if_exists == "error":
        raise FileExistsError(f"{taken[0]} exists (record.if_exists: error)")
    for number in range(2, 100_000):
        candidate = f"{name}-{number}"
        if not any(p.exists() for p in _paths(out_dir, candidate, scorer).values()):
            return candidate
    raise FileExistsError(f"no free recording name like {name}-N in {out_dir}")


def _grow(array: np.ndarray) -> np.ndarray:
    bigger = np.empty((2 * len(array), *array.shape[1:]), array.dtype)
    bigger[: len(array)] = array
    return bigger
