"""Many videos through one model: plan the work, run it here or on a Dask cluster, follow
its progress over videos and frames, and collect every video's result.

:func:`plan` reads the model once, names every video's outputs and sets aside the videos
whose outputs are already complete (a rerun resumes where the last one stopped). :func:`run`
runs the rest one after another in this process, or as one Dask task per video on a
client's workers: workers report their frame counts as Dask events, a task whose worker
died is rerun by the scheduler on another worker (its staged files are thrown away, see
:mod:`poseloop.analysis.outputs`), and a task that raised is a failed result like any
other, so one video never stops the others.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from poseloop.analysis.outputs import VideoOutputs, tidy
from poseloop.analysis.video_task import VideoJob, VideoResult, run_job
from poseloop.errors import ConfigError
from poseloop.modelspec import ModelSpec
from poseloop.realtime.runner import RunnerConfig

#: Seconds between a worker's progress reports for one video.
REPORT_S = 0.5


class Progress(Protocol):
    """Follows a run: frame counts while a video is analysed, then its result."""

    def frames(self, video: Path, done: int, total: int | None, worker: str) -> None: ...

    def finished(self, result: VideoResult) -> None: ...


def plan(model: str | Path, videos: Sequence[str | Path], out: str | Path | None,
         runner: RunnerConfig, nwb: bool = False, max_frames: int | None = None,
         overwrite: bool = False) -> tuple[list[VideoJob], list[VideoResult]]:
    """The jobs to run and the videos skipped because their outputs are complete.

    Paths are made absolute (workers elsewhere see the same paths). ModelError for a bad
    model, ConfigError for two videos that would write the same files or for ``nwb``
    without pynwb and ndx-pose, before any work starts.
    """
    model = Path(model).absolute()
    spec = ModelSpec.read(model)
    if nwb:
        try:
            import ndx_pose  # noqa: F401
            import pynwb  # noqa: F401
        except ImportError as e:
            raise ConfigError("--nwb needs pynwb and ndx-pose: pip install 'poseloop[nwb]'"
                              ) from e
    jobs: list[VideoJob] = []
    skipped: list[VideoResult] = []
    writers: dict[Path, Path] = {}
    for video in dict.fromkeys(Path(v).absolute() for v in videos):
        folder = Path(out).absolute() if out else video.parent
        outputs = VideoOutputs.of(video, folder, spec, nwb)
        h5 = outputs.files["poses_h5"]
        if h5 in writers:
            raise ConfigError(f"{writers[h5]} and {video} would both write {h5}: analyse them "
                              f"into different folders (--out)")
        writers[h5] = video
        if outputs.complete() and not overwrite:
            skipped.append(VideoResult(video, "skipped"))
        else:
            jobs.append(VideoJob(model, video, outputs, runner, nwb, max_frames))
    return jobs, skipped


def run(jobs: Sequence[VideoJob], client: Any = None,
        progress: Progress | None = None) -> list[VideoResult]:
    """Every job's result, in the order of ``jobs``: here, one after another, without a
    Dask ``client``; else one task per video on its workers."""
    try:
        if client is None:
            return [_run_here(job, progress) for job in jobs]
        return _run_on(client, jobs, progress)
    finally:
        for folder in {job.outputs.out_dir for job in jobs}:
            tidy(folder)


def _run_here(job: VideoJob, progress: Progress | None) -> VideoResult:
    def on_frame(done: int, total: int | None) -> None:
        if progress is not None:
            progress.frames(job.video, done, total, "local")

    try:
        result = run_job(job, on_frame)
    except Exception as e:  # a bug: reported with this video, the others go on
        result = _crashed(job, e)
    if progress is not None:
        progress.finished(result)
    return result


def _run_on(client: Any, jobs: Sequence[VideoJob], progress: Progress | None
            ) -> list[VideoResult]:
    from distributed import as_completed

    topic = f"poseloop-analyze-{uuid.uuid4().hex}"
    if progress is not None:
        def on_event(event: tuple[float, dict]) -> None:
            msg = event[1]
            progress.frames(Path(msg["video"]), msg["done"], msg["total"], msg["worker"])

        client.subscribe_topic(topic, on_event)
    futures = {client.submit(work, job, topic, pure=False,
                             key=f"analyze-{job.video.name}-{uuid.uuid4().hex[:8]}"): i
               for i, job in enumerate(jobs)}
    results: dict[int, VideoResult] = {}
    try:
        for future in as_completed(futures):
            i = futures[future]
            try:
                result = future.result()
            except Exception as e:  # a bug in the task, or its workers kept dying
                result = _crashed(jobs[i], e)
            results[i] = result
            if progress is not None:
                progress.finished(result)
    finally:
        client.cancel([f for f, i in futures.items() if i not in results])
        if progress is not None:
            client.unsubscribe_topic(topic)
    return [results[i] for i in range(len(jobs))]


def work(job: VideoJob, topic: str) -> VideoResult:
    """The Dask task of one video: :func:`run_job` on this worker, its frame counts sent
    as events on ``topic`` every ``REPORT_S``."""
    from distributed import get_worker

    worker = get_worker()
    last = 0.0

    def report(done: int, total: int | None) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= REPORT_S or done == total:
            last = now
            worker.log_event(topic, {"video": str(job.video), "done": done, "total": total,
                                     "worker": worker.address})

    result = run_job(job, report)
    result.worker = worker.address
    return result


def _crashed(job: VideoJob, error: BaseException) -> VideoResult:
    return VideoResult(job.video, "failed", error=f"{type(error).__name__}: {error}",
                       user_error=False)


class BarProgress:
    """Two progress bars (videos, frames) and a line per finished video (through tqdm, so
    the bars stay whole); safe to call from Dask's event thread."""

    def __init__(self, videos: int, enabled: bool | None = None) -> None:
        disable = None if enabled is None else not enabled  # None: only on a terminal
        self._videos = tqdm(total=videos, desc="videos", unit="video", position=0,
                            disable=disable)
        self._frames = tqdm(total=0, desc="frames", unit="frame", position=1,
                            disable=disable)
        self._done: dict[Path, int] = {}
        self._total: dict[Path, int] = {}
        self._finished: set[Path] = set()
        self._lock = threading.Lock()

    def frames(self, video: Path, done: int, total: int | None, worker: str) -> None:
        with self._lock:
            if video not in self._finished:  # else a report that came after the result
                self._count(video, done, total)

    def finished(self, result: VideoResult) -> None:
        with self._lock:
            self._finished.add(result.video)
            self._count(result.video, result.frames, result.frames)
            self._videos.update(1)
            if result.status == "done":
                where = f" on {result.worker}" if result.worker else ""
                self._videos.write(f"{result.video}: {result.frames} frames in "
                                   f"{result.seconds:.1f} s{where}")

    def close(self) -> None:
        self._frames.close()
        self._videos.close()

    def _count(self, video: Path, done: int, total: int | None) -> None:
        """Move the frames bar by this video's change (a rerun video starts again)."""
        if total is not None:
            grown = total - self._total.get(video, 0)
            self._total[video] = total
            if grown:
                self._frames.total = (self._frames.total or 0) + grown
        self._frames.update(done - self._done.get(video, 0))
        self._done[video] = done
