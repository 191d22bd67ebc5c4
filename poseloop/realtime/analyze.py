"""``poseloop analyze``: offline videos through the live runner and decoder, every frame.

Unlike the live loop (newest frame wins), analysis reads each video frame in order and
drops none; poses go to DeepLabCut-layout .h5/.csv files (plus the timing table) through
the same recorder sink the live engine uses.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from poseloop.realtime.builder import build_engine
from poseloop.realtime.cameras import OpenCVCamera
from poseloop.realtime.engine import RunStats
from poseloop.realtime.engine_config import EngineConfig
from poseloop.realtime.recorder import Recorder
from poseloop.realtime.runner import RunnerConfig


def analyze_video(model: str | Path, video: str | Path, out: str | Path | None = None,
                  max_frames: int | None = None, runner: RunnerConfig | None = None,
                  progress: bool = True) -> tuple[dict[str, Path], RunStats]:
    """Pose-track every frame of ``video``; return the files written and the run's counts."""
    video = Path(video)
    out = Path(out) if out else video.parent
    camera = OpenCVCamera(video)
    cfg = EngineConfig.model_validate({
        "model": str(model), "runner": runner or RunnerConfig(),
        "record": {"dir": str(out), "name": video.stem, "queue_size": 1 << 16,
                   "if_exists": "overwrite"},
    })
    engine = build_engine(cfg, camera=camera)
    recorder = engine.sink("recorder")
    assert isinstance(recorder, Recorder)
    with engine:  # opens the camera: CameraError for an unreadable file before any work
        total = camera.frame_count
        if max_frames is not None:
            total = min(max_frames, total or max_frames)
        with tqdm(total=total, desc=video.name, unit="frame", disable=not progress) as bar:
            while max_frames is None or engine.stats.frames < max_frames:
                frame = camera.read()
                if frame is None:
                    break
                engine.step(frame)
                bar.update(1)
    return dict(recorder.paths), engine.stats
