"""``poseloop analyze``: offline videos through the live runner and decoder, every frame.

Unlike the live loop (newest frame wins), analysis reads each video frame in order and
drops none; poses go to DeepLabCut-layout .h5/.csv files (plus the timing table) through
the same recorder sink the live engine uses. A multi-animal model's tracker is timed by the
video's clock (its frame times), not the host's, so identities come out the same however
fast or loaded the machine is: offline results are reproducible frame by frame.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from poseloop.realtime.builder import build_engine
from poseloop.realtime.cameras import OpenCVCamera
from poseloop.realtime.engine import RunStats
from poseloop.realtime.engine_config import EngineConfig
from poseloop.realtime.recorder import Recorder
from poseloop.realtime.runner import ModelRunner, RunnerConfig
from poseloop.realtime.types import Frame, Tracker

#: on_frame(frames done, frames in the video or None where the file does not say).
FrameCallback = Callable[[int, int | None], None]


class VideoClock:
    """A tracker timed by the video's frame times instead of the capture times it is given.

    The tracker's motion model moves each animal by its velocity over the time since the
    last frame; offline, host time between frames is only how long the last frame took.
    """

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        #: The current frame's time in the video (ns), set before each step.
        self.t_ns = 0

    @property
    def counts(self) -> object:
        """The wrapped tracker's counts (the engine reports them at close)."""
        return getattr(self.tracker, "counts", None)

    def update(self, points: np.ndarray, ids: np.ndarray, t_ns: int) -> None:
        """The wrapped tracker's update, at the video's time rather than ``t_ns``."""
        self.tracker.update(points, ids, self.t_ns)


def analyze_video(model: str | Path, video: str | Path, out: str | Path | None = None,
                  max_frames: int | None = None, runner: RunnerConfig | None = None,
                  progress: bool = True, *, model_runner: ModelRunner | None = None,
                  on_frame: FrameCallback | None = None) -> tuple[dict[str, Path], RunStats]:
    """Pose-track every frame of ``video``; return the files written and the run's counts.

    model_runner: a runner already open on ``model`` with ``runner``'s settings (reused
    across videos); on_frame: called after every frame.
    """
    video = Path(video)
    out = Path(out) if out else video.parent
    camera = OpenCVCamera(video)
    cfg = EngineConfig.model_validate({
        "model": str(model), "runner": runner or RunnerConfig(),
        "record": {"dir": str(out), "name": video.stem, "queue_size": 1 << 16,
                   "if_exists": "overwrite"},
    })
    engine = build_engine(cfg, camera=camera, runner=model_runner)
    recorder = engine.sink("recorder")
    assert isinstance(recorder, Recorder)
    clock = VideoClock(engine.tracker) if engine.tracker is not None else None
    if clock is not None:
        engine.tracker = clock
    with engine:  # opens the camera: CameraError for an unreadable file before any work
        total = camera.frame_count or None
        if max_frames is not None:
            total = min(max_frames, total or max_frames)
        period_ns = 1e9 / (engine.session.cameras[0].fps or 30.0)
        with tqdm(total=total, desc=video.name, unit="frame", disable=not progress) as bar:
            while max_frames is None or engine.stats.frames < max_frames:
                frame = camera.read()
                if frame is None:
                    break
                if clock is not None:
                    clock.t_ns = _video_time(frame, period_ns)
                engine.step(frame)
                bar.update(1)
                if on_frame is not None:
                    on_frame(engine.stats.frames, total)
    return dict(recorder.paths), engine.stats


def _video_time(frame: Frame, period_ns: float) -> int:
    """The frame's time in the video: its media time, else its index at the frame rate."""
    if frame.t_device_ns is not None:
        return frame.t_device_ns
    return round(frame.index * period_ns)
