"""One video -> its outputs, whole or not at all: the unit of work a worker runs.

:func:`run_job` analyses the video into a staging folder with a runner this thread keeps
open across videos (:func:`cached_runner`: one ONNX Runtime session per worker thread,
with the job's providers, so GPU workers work the same way), adds the NWB files when
asked, checks that every frame read was recorded, and only then moves the files to their
final names (:mod:`poseloop.analysis.outputs`). A video that cannot be analysed (missing,
unreadable or corrupt, frames the model cannot take, an unwritable folder) comes back as a
failed :class:`VideoResult` naming the reason, never as an exception, so the other videos go
on; anything else is a bug and propagates.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from poseloop.analysis.outputs import VideoOutputs, discard
from poseloop.errors import CameraError, PoseloopError
from poseloop.realtime.analyze import FrameCallback, analyze_video
from poseloop.realtime.runner import ModelRunner, RunnerConfig, make_runner

_LOCAL = threading.local()


@dataclass(frozen=True)
class VideoJob:
    """What to analyse and where: sent to a worker as it is (it pickles)."""

    model: Path
    video: Path
    outputs: VideoOutputs
    runner: RunnerConfig
    nwb: bool = False
    max_frames: int | None = None


@dataclass
class VideoResult:
    """How one video went: ``done`` (outputs written), ``skipped`` (they were already
    complete) or ``failed`` (``error`` says why; ``user_error`` False for a bug or a dead
    worker rather than the input)."""

    video: Path
    status: Literal["done", "skipped", "failed"]
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    user_error: bool = True
    worker: str = ""


def cached_runner(model: Path, config: RunnerConfig) -> ModelRunner:
    """This thread's runner of ``model`` with ``config``, opened on first use and kept for
    the next video (a changed model file, by size or time, is opened anew). Per thread: a
    runner's bound buffers cannot serve two frames at once."""
    stat = model.stat()
    key = (str(model.resolve()), stat.st_mtime_ns, stat.st_size, config.model_dump_json())
    cached: tuple[tuple, ModelRunner] | None = getattr(_LOCAL, "runner", None)
    if cached is None or cached[0] != key:
        _LOCAL.runner = cached = (key, make_runner(model, config))
    return cached[1]


def run_job(job: VideoJob, on_frame: FrameCallback | None = None) -> VideoResult:
    """Analyse ``job.video`` into its outputs (see the module docstring)."""
    start = time.perf_counter()
    staging: Path | None = None
    try:
        staging = job.outputs.staging()
        runner = cached_runner(job.model, job.runner)
        paths, stats = analyze_video(job.model, job.video, staging, job.max_frames, job.runner,
                                     progress=False, model_runner=runner, on_frame=on_frame)
        if not stats.frames:
            raise CameraError(f"{job.video}: no frame could be read")
        lost = stats.sink_dropped.get("recorder", 0)
        if stats.errors or lost:
            raise OSError(f"recording incomplete ({lost} poses lost; "
                          f"{'; '.join(stats.errors) or 'no write error'})")
        if job.nwb:
            _write_nwb(job, paths, runner)
        job.outputs.commit(staging)
    except (PoseloopError, OSError) as e:
        return VideoResult(job.video, "failed", seconds=time.perf_counter() - start,
                           error=str(e))
    finally:
        if staging is not None and staging.exists():
            discard(staging)
    return VideoResult(job.video, "done", stats.frames, time.perf_counter() - start)


def _write_nwb(job: VideoJob, paths: dict[str, Path], runner: ModelRunner) -> None:
    """The job's NWB files beside its staged tables, timed by the frames' times in the
    video (the timing table's ``t_device_ns``; by index and frame rate where missing)."""
    import cv2
    import pandas as pd

    from poseloop.analysis.nwb import VideoFormat, write_nwb
    from poseloop.visualize.pose_table import read_pose_table

    table = read_pose_table(paths["poses_h5"])
    capture = cv2.VideoCapture(str(job.video))
    fps = float(capture.get(cv2.CAP_PROP_FPS)) or 30.0
    video = VideoFormat(int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                        int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), fps,
                        int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    capture.release()
    timing = pd.read_csv(paths["timing_csv"], index_col="frame")
    media = timing["t_device_ns"].reindex(table.frames).to_numpy(np.float64) / 1e9
    times = np.where(np.isfinite(media), media, table.frames / fps)
    staged = {kind.partition(":")[2]: paths["poses_h5"].parent / path.name
              for kind, path in job.outputs.files.items() if kind.startswith("nwb:")}
    link = os.path.relpath(job.video.resolve(), job.outputs.out_dir.resolve())
    write_nwb(table, times, staged, job.video, link, video, runner.spec, job.model)
