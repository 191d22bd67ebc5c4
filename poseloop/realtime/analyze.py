"""``poseloop analyze``: offline videos through the live runner and decoder, every frame.

Unlike the live loop (newest frame wins), analysis reads each video frame in order and
drops none; poses go to DeepLabCut-layout .h5/.csv files (plus the timing table) through
the same Recorder the live engine uses.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from poseloop.realtime.cameras import OpenCVCamera
from poseloop.realtime.engine import Engine, RunStats
from poseloop.realtime.engine_config import EngineConfig, RecordConfig, RunnerConfig


def analyze_video(model: str | Path, video: str | Path, out: str | Path | None = None,
                  max_frames: int | None = None, runner: RunnerConfig | None = None,
                  progress: bool = True) -> tuple[dict[str, Path], RunStats]:
    """Pose-track every frame of ``video``; return the files written and the run's counts."""
    video = Path(video)
    out = Path(out) if out else video.parent
    camera = OpenCVCamera(video)
    camera.open()  # opened here: CameraError for an unreadable file before any work
    cfg = EngineConfig(
        model=str(model), runner=runner or RunnerConfig(),
        record=RecordConfig(dir=str(out), name=video.stem, queue_size=1 << 16,
                            if_exists="overwrite"),
    )
    engine = Engine(cfg, model, camera=camera)
    total = camera.frame_count
    if max_frames is not None:
        total = min(max_frames, total or max_frames)
    try:
        engine.open(frame_size=(camera.width, camera.height))
        with tqdm(total=total, desc=video.name, unit="frame", disable=not progress) as bar:
            while max_frames is None or engine.stats.frames < max_frames:
                frame = camera.read()
                if frame is None:
                    break
                engine.step(frame)
                bar.update(1)
    finally:
        camera.close()
        engine.close()
    recorder = engine.recorder
    engine.stats.recorder_dropped = recorder.dropped if recorder is not None else 0
    return (dict(recorder.paths) if recorder is not None else {}), engine.stats
