"""The recorder sink (section ``record``): poses, per-frame timings and optionally the video.

The loop calls :meth:`Recorder.pose`, which copies the points, track ids, stage stamps and
(with ``record.video``) the image into preallocated buffers and queues a slot number without
waiting: a full queue is counted in ``dropped``, never waited on. The writer thread writes
video frames as they come and, every ``flush_s`` seconds and at :meth:`Recorder.close`,
appends the new rows to the files (all named at :meth:`Recorder.open`, from the Session):

* ``<name><scorer>.h5`` / ``.csv``: poses in DeepLabCut's layout (key ``df_with_missing``,
  table format, index = frame index). A single-animal model gets the columns scorer /
  bodyparts / coords (x, y, likelihood); a multi-animal one (``Session.multi_animal``) gets
  scorer / individuals / bodyparts / coords, its unique bodyparts under the individual
  ``single``, as DeepLabCut's ``analyze_videos`` writes them. A scorer named like
  DeepLabCut's (``DLC_...``) gives the file names its tools look for beside the video
  ``<name>.mkv``. Frames the loop did not process are absent. (No .h5 for a session without
  poses: pandas cannot store an empty table.)
* ``<name><scorer>_timing.csv``: one row per recorded frame: ``frame``, ``t_capture_ns``,
  ``t_device_ns``, each stage's ``perf_counter_ns`` stamp (``STAGES``; other keys are not
  recorded), ``dropped`` (frames before this one the loop never processed), ``lost`` (poses
  before this one the recorder had no room for) and ``video_frame`` (its frame number in
  the video, empty if it has none); a multi-animal session adds one ``id_<individual>``
  column per individual: the track id in that row of ``Pose.ids``, empty while it has none
  (-1). Missing values are empty cells.
* ``<name><scorer>_events.csv``: fired rules' actions (``frame``, ``rule``, ``action``,
  ``t_ns``, ``animals``, ``t_exposure_us``, ``t_output_us``, ``latency_us``), from
  :meth:`Recorder.event`; the last three (exposure strobe and output edge on the device's
  microsecond clock, and the latency between them) come from :meth:`Recorder.timing` for
  devices with trigger timing, ``nan`` elsewhere. An event row is written once its timing
  came or ``EVENT_HOLD_S`` after it fired.

A 3D session (a camera group with a triangulation, ``Session.dims == 3``) records:

* ``<name><scorer>_3d.csv``: the 3D poses in anipose's layout (its ``pose-3d`` tables):
  per bodypart ``<bp>_x, _y, _z, _error`` (mean reprojection error, px), ``_ncams``,
  ``_score`` (likelihood), then ``M_00 .. M_22`` and ``center_0 .. 2`` (identity and zero:
  the calibration's own axes) and ``fnum`` (the frame index); several animals prefix the
  bodypart with the individual (``<individual>_<bp>_x``). Missing values are empty.
* ``<name>_<camera><scorer>.csv`` / ``.h5`` per camera: that view's 2D poses in
  DeepLabCut's layout, as above; ``<name>_<camera>.mkv`` per camera with ``record.video``
  (a view missing from a set is written black, so every video has the same frames).
* the timing and events tables as above; the timing table's last column, ``triangulate``,
  is when the triangulation finished (between ``decode`` and ``process``).

The rows are formatted by this module, not by pandas (byte for byte what pandas'
``to_csv`` wrote before, so DeepLabCut's tools read the same files): the writer thread builds
no per-flush objects that outlive the flush, and the recorder's memory stays constant over a
long run. The video's Matroska index (about 3.5 bytes per frame of ``mp4v``, one entry per
key frame) is the one thing that grows; the muxer needs it to make the file seekable.

Nothing already on disk is put at risk by a later write, so a long run holds only the rows
of one flush in memory and a write error (disk full, unplugged drive, read-only folder)
damages nothing: a .csv append that fails is cut back to its last whole row, and its rows
stay in memory to be retried at the next flush. The .csv files are ``fsync``-ed at every
flush and are the record that survives a crash. The .h5 is written at :meth:`close` from
the poses .csv, through a temporary file that is read back before it takes the final name
(HDF5 does not always report a failed write). Write errors are counted in ``errors`` and
described in ``error``; with ``record.on_error: stop`` the error is also ``fatal``, which
stops the run.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import Field

from poseloop.config import Strict
from poseloop.realtime.sinks import SINKS
from poseloop.realtime.types import (
    COORDS_2D,
    STAGES,
    UNIQUE_INDIVIDUAL,
    ActionRecord,
    Frame,
    Pose,
    Session,
)

log = logging.getLogger(__name__)

MISSING = np.iinfo(np.int64).min
TIMING_COLUMNS = ("t_capture_ns", "t_device_ns", *STAGES, "dropped", "lost", "video_frame")
_STAGE_COLUMN = {stage: 2 + i for i, stage in enumerate(STAGES)}
_DROPPED, _LOST, _VIDEO = (TIMING_COLUMNS.index(c) for c in ("dropped", "lost", "video_frame"))
_STOP = object()
#: How long an event row waits for its trigger timing before it is written without.
EVENT_HOLD_S = 0.3


class _Timed(NamedTuple):
    """A fired action that came back from its device with its latency."""

    record: ActionRecord
_H5_KEY = "df_with_missing"
COORDS = COORDS_2D
#: anipose's per-bodypart columns of a 3D table, in its order.
ANIPOSE_FIELDS = ("x", "y", "z", "error", "ncams", "score")
_ANIPOSE_TAIL = tuple(f"M_{i}{j}" for i in range(3) for j in range(3)) + tuple(
    f"center_{i}" for i in range(3))
#: What anipose writes for M (rotation to aligned axes) and center: the calibration's axes.
_ANIPOSE_TAIL_TEXT = ",".join(["1.0", "0.0", "0.0", "0.0", "1.0", "0.0", "0.0", "0.0", "1.0",
                               "0.0", "0.0", "0.0"])
#: The column levels of the poses table, single- and multi-animal (DeepLabCut's names).
SINGLE_ANIMAL_LEVELS = ("scorer", "bodyparts", "coords")
MULTI_ANIMAL_LEVELS = ("scorer", "individuals", "bodyparts", "coords")
FOURCC = "mp4v"
#: Seconds of frames the video copies cover (at least 32 copies): a writer that lags behind
#: the camera longer than this (a slow disk) skips frames (``video_dropped``).
VIDEO_BUFFER_S = 0.5
#: What to do when a recording of the same name is already in the folder.
IfExists = Literal["number", "overwrite", "error"]


class RecordConfig(Strict):
    """Recording of poses (DeepLabCut layout), per-frame timings and optionally the video."""

    dir: str | None = Field(None, description="output folder; None = do not record")
    name: str = Field("session", min_length=1, description="file stem")
    video: bool = Field(False, description="also record the frames (<name>.mkv, MPEG-4)")
    queue_size: int = Field(4096, ge=1, description="poses in flight before one is dropped")
    flush_s: float = Field(2.0, gt=0, le=3600,
                           description="seconds between appends to the files (crash exposure)")
    if_exists: IfExists = Field(
        "number", description="an earlier recording of this name: keep it and number the new "
        "one (name-2, ...), replace it, or refuse to start"
    )
    on_error: Literal["stop", "continue"] = Field(
        "stop", description="a write error (disk full, ...) stops the run, or is only counted"
    )


def pose_columns(session: Session) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The poses table's column level names and columns for ``session``, in the order of
    ``Pose.points`` (individual, bodypart, coordinate) then ``Pose.unique``.

    Single-animal sessions (``multi_animal`` False) must have one individual and no unique
    bodyparts, as in DeepLabCut's single-animal projects.
    """
    scorer = session.scorer
    if not session.multi_animal:
        if len(session.individuals) != 1 or session.unique_bodyparts:
            raise ValueError(
                f"a single-animal recording has one individual and no unique bodyparts; the "
                f"session has individuals {list(session.individuals)} and unique bodyparts "
                f"{list(session.unique_bodyparts)} (multi_animal: False)")
        return SINGLE_ANIMAL_LEVELS, [(scorer, b, c) for b in session.bodyparts for c in COORDS]
    columns = [(scorer, i, b, c) for i in session.individuals for b in session.bodyparts
               for c in COORDS]
    columns += [(scorer, UNIQUE_INDIVIDUAL, b, c) for b in session.unique_bodyparts
                for c in COORDS]
    return MULTI_ANIMAL_LEVELS, columns


def anipose_columns(session: Session) -> list[str]:
    """The 3D table's columns (anipose's layout, see the module docstring), ``fnum`` last."""
    many = len(session.individuals) > 1
    names = [f"{i}_{b}" if many else b for i in session.individuals for b in session.bodyparts]
    return [f"{name}_{f}" for name in names for f in ANIPOSE_FIELDS] + [*_ANIPOSE_TAIL, "fnum"]


def view_session(session: Session, camera: int) -> Session:
    """The 2D session of one camera of a 3D session (its per-view DeepLabCut table)."""
    return replace(session, dims=2, unique_bodyparts=(), cameras=(session.cameras[camera],))


def _dlc_header(session: Session) -> tuple[str, int]:
    """The poses .csv header rows of ``session`` (DeepLabCut's layout) and its value count."""
    levels, columns = pose_columns(session)
    return _csv_text([name, *(column[j] for column in columns)]
                     for j, name in enumerate(levels)), len(columns)


@SINKS.register("record", RecordConfig)
def record_sink(config: RecordConfig) -> Recorder | None:
    """The ``record`` section's sink: a Recorder, or None without ``record.dir``."""
    return Recorder(config) if config.dir else None


class Recorder:
    """Writes poses, timings and (optionally) video in its own thread; never blocks the loop.

    Made from its config section; :meth:`open` names the files (``record.if_exists``: an
    earlier recording with this stem is kept and the new one numbered ``<name>-2``, ``-3``,
    ... ("number"), replaced ("overwrite"), or a FileExistsError ("error")), writes their
    headers and, with ``record.video``, opens the video at the camera's size and frame rate.
    Records the poses of the session's first camera.
    """

    #: The sink's name in the engine's messages and counts ("stopped by recorder error").
    name = "recorder"
    #: The engine hands the recorder each pose after the ``publish`` stamp (it records it).
    after_publish = True

    def __init__(self, config: RecordConfig) -> None:
        if not config.dir:
            raise ValueError("record.dir is not set: nowhere to record")
        self.config = config
        self.out_dir = Path(config.dir)
        #: The files' stem once open (``record.name``, numbered if taken).
        self.stem: str | None = None
        self.paths: dict[str, Path] = {}
        self.dropped = 0
        self.events_dropped = 0
        self.video_dropped = 0
        self.errors = 0
        self.error: str | None = None
        #: Pose rows on disk in the .csv (the count that survives a crash).
        self.rows_written = 0
        self._opened = False
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def fatal(self) -> str | None:
        """The write error, when ``record.on_error`` is "stop" (the engine then stops)."""
        return self.error if self.config.on_error == "stop" else None

    # ------------------------------------------------------------- loop thread
    def open(self, session: Session) -> None:
        """Name and start the files from ``session`` and start the writer thread.

        Raises FileExistsError (``if_exists: error``), OSError naming the file or folder
        that cannot be written, ValueError for a session the layout cannot hold.
        """
        if self._opened:
            raise RuntimeError("recorder is already open")
        cfg = self.config
        if not session.cameras:
            raise ValueError("the session names no camera: open the camera before the recorder")
        self._dims = session.dims
        self._multi = session.multi_animal
        self._shape = session.shape
        self._individuals = session.individuals
        self._unique_shape = (len(session.unique_bodyparts), 3)
        cameras = list(session.cameras if session.dims == 3 else session.cameras[:1])
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"the cameras need distinct names to name their files, got {names}")
        self._frame_shapes = [(c.height, c.width, 3) for c in cameras]
        self._camera_name = cameras[0].name
        ids = [f"id_{name}" for name in session.individuals] if self._multi else []
        if session.dims == 3:  # the triangulation's stamp (perf_counter_ns), last
            ids.append("triangulate")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"{self.out_dir}: cannot create the recording folder ({e})") from e
        views = names if session.dims == 3 else None
        self.stem = stem = _free_name(self.out_dir, cfg.name, session.scorer, cfg.if_exists,
                                      views)
        self.paths = paths = _paths(self.out_dir, stem, session.scorer, views)
        for key, path in paths.items():  # of a recording this one replaces
            if key.endswith("h5") or key.startswith("video"):
                path.unlink(missing_ok=True)
        # The tables of pose rows: (file key, first and last value column of the ring row).
        if session.dims == 3:
            header = anipose_columns(session)
            start = len(header) - len(_ANIPOSE_TAIL) - 1  # anipose's value columns
            self._tables = [("poses_csv", 0, start)]
            headers = [_csv_text([header])]
            for v in range(len(cameras)):
                text, n = _dlc_header(view_session(session, v))
                self._tables.append((f"poses_csv:{v}", start, start + n))
                headers.append(text)
                start += n
        else:
            text, n = _dlc_header(session)
            self._tables = [("poses_csv", 0, n)]
            headers = [text]
        width = self._tables[-1][2]
        self._writers: list[Any] = []
        try:
            if cfg.video:
                for v, camera in enumerate(cameras):
                    self._writers.append(_open_video(
                        paths["video" if v == 0 else f"video:{v}"], camera.width,
                        camera.height, camera.fps, camera.name))
            for (key, _, _), text in zip(self._tables, headers, strict=True):
                _write_new(paths[key], text)
            _write_new(paths["timing_csv"], _csv_text([["frame", *TIMING_COLUMNS, *ids]]))
            _write_new(paths["events_csv"], _csv_text([ActionRecord._fields]))
        except (OSError, ValueError):
            for writer in self._writers:
                writer.release()
            raise

        n_times = len(TIMING_COLUMNS) + len(ids)
        self._n_points = math.prod(self._shape)
        # Producer side (loop thread). The rings have queue_size + 2 slots: queue_size
        # queued, one in the writer's hands, and the one pose() fills, so a slot written by
        # pose() is never one the writer has yet to read.
        slots = cfg.queue_size + 2
        self._queue: queue.Queue[Any] = queue.Queue(cfg.queue_size)
        self._slot_numbers = tuple(range(slots))  # queued as they are: no int per pose
        self._ring = np.empty((slots, width), np.float32)
        self._ring_times = np.empty((slots, n_times), np.int64)
        self._ring_index = np.empty(slots, np.int64)
        self._ring_images: list[list[np.ndarray | None] | None] = [None] * slots
        self._next = 0
        self._lost = 0
        self._pools: list[list[np.ndarray]] = [[] for _ in cameras]
        self._allocated = 0
        self._black = [np.zeros(shape, np.uint8) for shape in self._frame_shapes] \
            if cfg.video and len(cameras) > 1 else []
        self._video_buffers = max(32, math.ceil(cameras[0].fps * VIDEO_BUFFER_S)) \
            if cfg.video else 0
        self._warned_size = False
        # Writer side: rows not yet in every file, from row number self._base on.
        self._n = 0
        self._base = 0
        self._values = np.empty((1024, width), np.float32)
        self._index = np.empty(1024, np.int64)
        self._times = np.empty((1024, n_times), np.int64)
        self._last_index = -1
        self._rows = {key: 0 for key, _, _ in self._tables}
        self._rows["timing_csv"] = 0
        self._events: list[ActionRecord] = []
        #: While True, poses and events are not recorded (the live page's record button).
        self.paused = False
        self._video_count = 0
        self._opened = True
        self._thread = threading.Thread(target=self._run, name=f"recorder {stem}", daemon=True)
        self._thread.start()

    def pose(self, pose: Pose, frame: Frame) -> None:
        """Queue a pose (and, recording video, its frame's image) without waiting.

        Everything is copied, so the loop may reuse its buffers at once. A pose of another
        shape than the session's, or from another camera, is a ValueError.
        """
        if not self._opened or self._closed:
            raise RuntimeError(f"recorder is {'closed' if self._closed else 'not open'}")
        if self.paused:
            return
        if pose.points.shape != self._shape or pose.ids.shape != self._shape[:1]:
            raise ValueError(self._shape_error(pose))
        if pose.camera != 0:
            raise ValueError(f"frame {pose.frame_index}: a pose from camera {pose.camera}; "
                             f"the recorder records camera 0 ({self._camera_name!r})")
        slot = self._next % len(self._ring)
        row = self._ring[slot]
        n = self._n_points
        if self._dims == 3:
            self._fill_3d(pose, row)
        else:
            row[:n] = pose.points.reshape(n)
        if self._dims == 2 and n < len(row):  # the unique bodyparts
            unique = pose.unique
            if unique is None:
                row[n:] = np.nan
            elif unique.shape == self._unique_shape:
                row[n:] = unique.reshape(-1)
            else:
                raise ValueError(f"frame {pose.frame_index}: unique bodyparts of shape "
                                 f"{unique.shape}; the session has {self._unique_shape[0]} x 3")
        times = self._ring_times[slot]
        times[:] = MISSING
        times[0] = pose.t_capture_ns
        if frame.t_device_ns is not None:
            times[1] = frame.t_device_ns
        for key, value in pose.timings.items():
            column = _STAGE_COLUMN.get(key)
            if column is not None:
                times[column] = value
        times[_LOST] = self._lost
        if self._multi:
            times[len(TIMING_COLUMNS):len(TIMING_COLUMNS) + len(pose.ids)] = pose.ids
        if self._dims == 3:
            times[-1] = pose.timings.get("triangulate", MISSING)
        self._ring_index[slot] = pose.frame_index
        images = self._copy_images(frame) if self._writers else None
        self._ring_images[slot] = images
        try:
            self._queue.put_nowait(self._slot_numbers[slot])
        except queue.Full:
            self.dropped += 1
            self._lost += 1
            if images is not None:
                self._recycle(images)
            return
        self._next += 1
        self._lost = 0

    def event(self, action: ActionRecord) -> None:
        """Queue a fired rule's action without waiting (a full queue counts in
        ``events_dropped``)."""
        if not self._opened or self._closed:
            raise RuntimeError(f"recorder is {'closed' if self._closed else 'not open'}")
        if self.paused:
            return
        try:
            self._queue.put_nowait(action)
        except queue.Full:
            self.events_dropped += 1

    def timing(self, action: ActionRecord) -> None:
        """A recorded action's trigger timing (its exposure -> output latency), to fill in
        its row of the events table; never waits (a full queue loses only the timing)."""
        if not self._opened or self._closed or self.paused:
            return
        try:
            self._queue.put_nowait(_Timed(action))
        except queue.Full:
            self.events_dropped += 1

    def _shape_error(self, pose: Pose) -> str:
        n, k, _ = self._shape
        return (f"frame {pose.frame_index}: a pose of shape {pose.points.shape} with ids of "
                f"shape {pose.ids.shape}; the recorder expects N x K x 3 = {n} x {k} x 3 points "
                f"and {n} ids (individuals: {', '.join(self._individuals)})")

    def _fill_3d(self, pose: Pose, row: np.ndarray) -> None:
        """A 3D pose's ring row: anipose's fields per point, then every view's 2D points."""
        n, k, _ = self._shape
        views, quality = pose.views, pose.triangulation
        n_views = len(self._frame_shapes)
        if views is None or views.shape != (n_views, n, k, 3) or quality is None \
                or quality.shape != (n, k, 2):
            raise ValueError(
                f"frame {pose.frame_index}: a 3D pose needs views {n_views} x {n} x {k} x 3 "
                f"and triangulation {n} x {k} x 2; got "
                f"{None if views is None else views.shape} and "
                f"{None if quality is None else quality.shape}")
        n3 = n * k * len(ANIPOSE_FIELDS)
        points = row[:n3].reshape(n, k, len(ANIPOSE_FIELDS))
        points[..., :3] = pose.points[..., :3]
        points[..., 3:5] = quality
        points[..., 5] = pose.points[..., 3]
        row[n3:] = views.reshape(-1)

    def _copy_images(self, frame: Frame) -> list[np.ndarray | None] | None:
        """Copies of the frame's image (every view's, for a frame set) into pooled buffers;
        None, counted in ``video_dropped``, when a copy cannot be made: then no camera's
        video gets this frame, so the videos keep the same frames."""
        sources = frame.views if self._dims == 3 and frame.views is not None else [frame]
        copies: list[np.ndarray | None] = []
        for v, shape in enumerate(self._frame_shapes):
            source = sources[v] if v < len(sources) else None
            if source is None:
                copies.append(None)  # a missing view: written black
                continue
            image = source.image
            if image.shape != shape:
                if not self._warned_size:
                    self._warned_size = True
                    log.warning("recorder: camera %r delivered a %s frame, the video is %s: "
                                "such frames are not recorded", self._camera_name if v == 0
                                else v, image.shape, shape)
                return self._not_recorded(copies)
            pool = self._pools[v]
            if pool:
                buffer = pool.pop()
            elif self._allocated < self._video_buffers * len(self._frame_shapes):
                buffer = np.empty(shape, np.uint8)
                self._allocated += 1
            else:
                return self._not_recorded(copies)
            np.copyto(buffer, image)
            copies.append(buffer)
        return copies

    def _not_recorded(self, copies: list[np.ndarray | None]) -> None:
        self.video_dropped += 1
        self._recycle(copies)

    def _recycle(self, images: list[np.ndarray | None]) -> None:
        """Give a frame's (or set's) copies back to their pools."""
        for pool, image in zip(self._pools, images, strict=False):
            if image is not None:
                pool.append(image)

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, close the files and stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    # ----------------------------------------------------------- writer thread
    def _run(self) -> None:
        flush_s = self.config.flush_s
        due = time.monotonic() + flush_s
        while True:
            try:
                record = self._queue.get(timeout=max(0.0, due - time.monotonic()))
            except queue.Empty:
                record = None
            if record is _STOP:
                break
            try:
                if isinstance(record, _Timed):
                    self._fill_timing(record.record)
                elif isinstance(record, ActionRecord):
                    self._events.append(record)
                elif record is not None:
                    self._store(record)
                if time.monotonic() >= due:
                    due = time.monotonic() + flush_s
                    if self._n or self._events:
                        self._flush()
            except Exception as e:  # a bug must not silently end the recording
                self._fail(self.out_dir, f"writer thread: {e!r}")
        try:
            self._flush(final=True)
            self._write_h5()
        except Exception as e:
            self._fail(self.out_dir, f"writer thread: {e!r}")
        finally:
            for writer in self._writers:
                writer.release()

    def _store(self, slot: int) -> None:
        """Append one pose to the pending rows (and its image to the video)."""
        n = self._n
        if n == len(self._index):
            self._values = _grow(self._values)
            self._index = _grow(self._index)
            self._times = _grow(self._times)
        self._values[n] = self._ring[slot]
        index = int(self._ring_index[slot])
        self._index[n] = index
        row = self._times[n]
        row[:] = self._ring_times[slot]
        row[_DROPPED] = max(0, index - self._last_index - 1 - int(row[_LOST]))
        images = self._ring_images[slot]
        if images is not None:
            self._ring_images[slot] = None
            for v, (writer, image) in enumerate(zip(self._writers, images, strict=True)):
                writer.write(self._black[v] if image is None else image)
            row[_VIDEO] = self._video_count
            self._video_count += 1
            self._recycle(images)
        self._last_index = index
        self._n = n + 1

    def _fill_timing(self, timed: ActionRecord) -> None:
        """Put a timed action in place of its pending event row (gone: written without)."""
        key = timed[:4]  # frame, rule, action, t_ns
        for i, event in enumerate(self._events):
            if event[:4] == key:
                self._events[i] = timed
                return

    def _ready_events(self, final: bool) -> int:
        """How many pending events to write now (in order): those up to the first that is
        neither timed nor older than EVENT_HOLD_S; all of them at the end."""
        if final:
            return len(self._events)
        oldest = time.perf_counter_ns() - int(EVENT_HOLD_S * 1e9)
        for i, e in enumerate(self._events):
            if e.t_ns >= oldest and math.isnan(e.t_output_us):
                return i
        return len(self._events)

    def _flush(self, final: bool = False) -> None:
        """Append the pending rows to each file; forget the rows every file now holds."""
        n, base = self._n, self._base
        done = self._rows
        for key, first, last in self._tables:
            if self._append(key, self._pose_rows(done[key] - base, n, first, last,
                                                 key == "poses_csv" and self._dims == 3)):
                done[key] = base + n
        self.rows_written = done["poses_csv"]
        if self._append("timing_csv", self._timing_rows(done["timing_csv"] - base, n)):
            done["timing_csv"] = base + n
        ready = self._ready_events(final) if self._events else 0
        if ready and self._append("events_csv", _csv_text(map(_event_row, self._events[:ready]))):
            del self._events[:ready]
        # Rows every file holds are forgotten; the rest (after an error) move to the front.
        keep_from = min(done.values()) - base
        if keep_from:
            left = n - keep_from
            for array in (self._values, self._index, self._times):
                array[:left] = array[keep_from:n]
            self._n, self._base = left, base + keep_from

    def _pose_rows(self, start: int, stop: int, first: int, last: int,
                   anipose: bool = False) -> str:
        """Pending pose rows ``start:stop``, value columns ``first:last``, as .csv lines
        (pandas' float64 formatting): DeepLabCut's (index first) or anipose's (camera
        counts as integers, then M, center and fnum)."""
        index = self._index[start:stop].tolist()
        values = self._values[start:stop, first:last].astype(np.float64).tolist()
        if not anipose:
            return "".join([f"{i},{','.join([_float(v) for v in row])}\n"
                            for i, row in zip(index, values, strict=True)])
        ncams = ANIPOSE_FIELDS.index("ncams")
        step = len(ANIPOSE_FIELDS)
        lines = []
        for i, row in zip(index, values, strict=True):
            cells = [str(int(v)) if j % step == ncams and v == v else _float(v)
                     for j, v in enumerate(row)]
            lines.append(f"{','.join(cells)},{_ANIPOSE_TAIL_TEXT},{i}\n")
        return "".join(lines)

    def _timing_rows(self, start: int, stop: int) -> str:
        """Pending timing rows ``start:stop`` as .csv lines (missing values and ids < 0
        empty)."""
        n = len(TIMING_COLUMNS)
        lines = []
        rows = self._times[start:stop].tolist()
        for i, row in zip(self._index[start:stop].tolist(), rows, strict=True):
            cells = ["" if v == MISSING else str(v) for v in row[:n]]
            cells += ["" if v < 0 else str(v) for v in row[n:]]
            lines.append(f"{i},{','.join(cells)}\n")
        return "".join(lines)

    def _append(self, key: str, text: str) -> bool:
        """Append rows and fsync; on failure cut the file back to its last whole row.
        False if nothing was written."""
        if not text:
            return True
        path = self.paths[key]
        size: int | None = None  # where this append started, once the file is open
        try:
            with open(path, "a", newline="") as fh:
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
        return True

    def _write_h5(self) -> None:
        """Write the .h5 of each DeepLabCut .csv (see :func:`csv_to_h5`); 3D: of each view."""
        for key, _, _ in self._tables:
            h5_key = key.replace("csv", "h5")
            rows = self._rows[key]
            if h5_key not in self.paths or not rows:
                continue  # the 3D table has none; pandas cannot store an empty table
            try:
                csv_to_h5(self.paths[key], self.paths[h5_key], rows)
            except OSError as e:
                self._fail(self.paths[h5_key],
                           f"not written ({e}); {self.paths[key].name} holds the poses")

    def _fail(self, path: Path, error: Exception | str) -> None:
        self.errors += 1
        self.error = f"{path}: {error}"
        log.error("recorder: %s", self.error)


def csv_to_h5(csv_path: str | Path, h5: str | Path | None = None,
              expected_rows: int | None = None) -> Path:
    """Write a recorded poses .csv as DeepLabCut's .h5 (beside it unless ``h5`` is given),
    single- or multi-animal (the layout is read from the .csv's header).

    Goes through a temporary file that is read back whole and compared (a digest of every
    index value and coordinate) before it takes the final name: on a full disk HDF5 has been
    seen to report success and store zeros. Also what ``poseloop recover`` runs after a
    crash, when only the .csv files were written. Raises OSError naming the file.
    """
    import pandas as pd  # here: the config imports every sink module, this is for close

    csv_path = Path(csv_path)
    path = Path(h5) if h5 is not None else csv_path.with_suffix(".h5")
    tmp = path.with_name(path.name + ".tmp")
    chunk_rows = 100_000
    try:
        levels = _levels_of(csv_path)
        columns = None
        written, rows = hashlib.sha256(), 0
        with pd.HDFStore(tmp, mode="w") as store:
            for chunk in pd.read_csv(csv_path, header=list(range(len(levels))), index_col=0,
                                     chunksize=chunk_rows):
                columns = columns if columns is not None else pd.MultiIndex.from_tuples(
                    list(chunk.columns), names=list(levels))
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


def _levels_of(csv_path: Path) -> tuple[str, ...]:
    """The column levels a poses .csv's header names (its rows' first cells)."""
    with open(csv_path, newline="") as fh:
        first = [row[0] if row else "" for row in itertools.islice(csv.reader(fh), 4)]
    for levels in (MULTI_ANIMAL_LEVELS, SINGLE_ANIMAL_LEVELS):
        if tuple(first[:len(levels)]) == levels:
            return levels
    raise ValueError(f"not a DeepLabCut poses table: its header rows start {first}")


def _float(value: float) -> str:
    """A float64 as pandas' ``to_csv`` writes it: the shortest repr, empty for NaN."""
    return repr(value) if value == value else ""


def _event_row(event: ActionRecord) -> tuple[object, ...]:
    """An events-table row, unmeasured times as empty cells (as pandas writes NaN)."""
    return tuple("" if isinstance(v, float) and math.isnan(v) else v for v in event)


def _csv_text(rows: Iterable[Sequence[object]]) -> str:
    """Rows as .csv text, quoted as pandas' ``to_csv`` quotes them (QUOTE_MINIMAL)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` with ``text`` (a header), fsync-ed; OSError naming the file."""
    try:
        with open(path, "w", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        raise OSError(f"{path}: cannot write ({e})") from e


def _open_video(path: Path, width: int, height: int, fps: float, camera: str) -> Any:
    """An OpenCV VideoWriter for the camera's frames; OSError naming the file if not."""
    import cv2  # here: only a recording with video needs it

    if not fps > 0:
        raise ValueError(f"record.video: camera {camera!r} reports {fps} fps; the video needs "
                         f"its frame rate")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: cannot open for writing ({FOURCC}, {width}x{height} at "
                      f"{fps:g} fps)")
    return writer


def _digest(hasher: Any, table: Any) -> None:
    hasher.update(np.ascontiguousarray(table.index.to_numpy(np.int64)).tobytes())
    hasher.update(np.ascontiguousarray(table.to_numpy(np.float64)).tobytes())


def _paths(out_dir: Path, name: str, scorer: str, views: Sequence[str] | None = None
           ) -> dict[str, Path]:
    """The files of a recording; ``views``: a 3D session's camera names (see the module
    docstring)."""
    stem = f"{name}{scorer}"
    if views is not None:
        paths = {"poses_csv": out_dir / f"{stem}_3d.csv",
                 "timing_csv": out_dir / f"{stem}_timing.csv",
                 "events_csv": out_dir / f"{stem}_events.csv"}
        for v, camera in enumerate(views):
            paths[f"poses_csv:{v}"] = out_dir / f"{name}_{camera}{scorer}.csv"
            paths[f"poses_h5:{v}"] = out_dir / f"{name}_{camera}{scorer}.h5"
            paths["video" if v == 0 else f"video:{v}"] = out_dir / f"{name}_{camera}.mkv"
        return paths
    return {
        "poses_h5": out_dir / f"{stem}.h5",
        "poses_csv": out_dir / f"{stem}.csv",
        "timing_csv": out_dir / f"{stem}_timing.csv",
        "events_csv": out_dir / f"{stem}_events.csv",
        # Matroska, not MP4: an MP4 muxer holds ~85 bytes per frame in memory until it writes
        # its index at the end (100+ MB an hour at 200 FPS), and a killed run's .mp4 does
        # not play at all; a .mkv holds ~3.5 bytes a frame (its index of key frames) and
        # plays up to its last cluster.
        "video": out_dir / f"{name}.mkv",
    }


def _free_name(out_dir: Path, name: str, scorer: str, if_exists: IfExists,
               views: Sequence[str] | None = None) -> str:
    """``name``, or the first ``name-N`` whose files are all absent (see Recorder)."""
    taken = [p for p in _paths(out_dir, name, scorer, views).values() if p.exists()]
    if not taken or if_exists == "overwrite":
        return name
    if if_exists == "error":
        raise FileExistsError(f"{taken[0]} exists (record.if_exists: error)")
    for number in range(2, 100_000):
        candidate = f"{name}-{number}"
        if not any(p.exists() for p in _paths(out_dir, candidate, scorer, views).values()):
            return candidate
    raise FileExistsError(f"no free recording name like {name}-N in {out_dir}")


def _grow(array: np.ndarray) -> np.ndarray:
    bigger = np.empty((2 * len(array), *array.shape[1:]), array.dtype)
    bigger[: len(array)] = array
    return bigger
