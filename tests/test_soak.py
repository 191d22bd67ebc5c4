"""The 60-second soak of issue 6: full loop at 200 FPS, recording checked frame by frame."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from poseloop.realtime.engine import RunStats
from poseloop.realtime.recorder import RecordConfig, Recorder
from poseloop.realtime.types import STAGES, CameraInfo, Frame, Pose, Session
from poseloop.soak import _check, format_report, run_soak

SECONDS = float(os.environ.get("POSELOOP_SOAK_SECONDS", "60"))


def test_soak_loses_nothing(synthetic_onnx: Path, tmp_path: Path) -> None:
    report = run_soak(synthetic_onnx, tmp_path / "soak", SECONDS, fps=200.0, size=(160, 120),
                      warmup_s=SECONDS / 4, rss_every_s=1.0, video=True, log=lambda _m: None)
    text = format_report(report)
    print(text)
    assert report.ok, text
    s = report.stats
    assert s.frames > 0.5 * 200 * SECONDS  # the loop kept up with most of the camera
    assert report.recorded == s.frames and report.poses_received == s.frames
    timing = pd.read_csv(next((tmp_path / "soak").glob("*_timing.csv")))
    assert timing["frame"].is_unique and timing["frame"].is_monotonic_increasing
    assert s.frames + s.camera_dropped in (s.captured, s.captured - 1)
    assert len(report.rss_mb) >= SECONDS / 2


def _recorder(out: Path, video: bool = False, size: tuple[int, int] = (96, 64)) -> Recorder:
    recorder = Recorder(RecordConfig(dir=str(out), flush_s=60, video=video))
    recorder.open(Session(bodyparts=("snout",), scorer="DLC_test",
                          cameras=(CameraInfo(size[0], size[1], 200.0),)))
    return recorder


def _recording(out: Path, frames: list[int]) -> dict[str, Path]:
    recorder = _recorder(out)
    blank = np.zeros((64, 96, 3), np.uint8)
    for i in frames:
        t = 1_000_000 * i
        recorder.pose(Pose(np.full((1, 1, 3), i, np.float32), i, t,
                           {stage: t + j + 1 for j, stage in enumerate(STAGES)}),
                      Frame(blank, i, t))
    recorder.close()
    return recorder.paths


def test_the_checks_pass_a_clean_run_and_name_each_fault(tmp_path: Path) -> None:
    frames = [0, 1, 2, 4, 5, 6, 7, 9]  # 3 and 8 dropped by the camera
    stats = RunStats(frames=8, captured=10, camera_dropped=2, stopped_by="duration")
    processed = np.zeros(100, np.uint8)
    processed[frames] = 1
    flat = [(float(t), 100.0) for t in range(10)]

    def problems(paths, stats=stats, processed=processed, samples=flat) -> list[str]:
        return _check(stats, paths, processed, samples, 2.0, 10.0, 200.0).problems

    paths = _recording(tmp_path / "ok", frames)
    assert problems(paths) == []
    assert any("resident memory grew 10.0 %" in p
               for p in problems(paths, samples=[*flat, (11.0, 110.0)]))
    extra = processed.copy()
    extra[3] = 1  # processed but absent from the recording
    assert any("differ between the loop and the recording" in p
               for p in problems(paths, processed=extra))
    assert any("camera drops" in p for p in problems(paths, stats=replace(stats, camera_dropped=5)))
    assert any("stopped by camera error" in p
               for p in problems(paths, stats=replace(stats, stopped_by="camera error")))

    gap = _recording(tmp_path / "gap", frames)
    timing = pd.read_csv(gap["timing_csv"])
    timing.loc[4, "infer"] = None
    timing.to_csv(gap["timing_csv"], index=False)
    assert any("1 rows with empty cells, e.g. frame 5" in p for p in problems(gap))

    twice = _recording(tmp_path / "twice", [0, 1, 2, 2, 4, 5, 6, 7, 9])
    found = problems(twice)
    assert any("not strictly increasing" in p for p in found)
    assert any("poses recorded for 8 frames" in p for p in found)


def test_the_video_check_names_a_missing_frame(tmp_path: Path) -> None:
    from poseloop.realtime.cameras import SyntheticCamera
    from poseloop.soak import _check_video

    camera = SyntheticCamera(96, 64, paced=False, frames=12)
    camera.open()
    recorder = _recorder(tmp_path, video=True)
    while (frame := camera.read()) is not None:
        recorder.pose(Pose(np.zeros((1, 1, 3), np.float32), frame.index, 0), frame)
    recorder.close()
    assert _check_video(recorder.paths, recorder.video_dropped) == []
    timing = pd.read_csv(recorder.paths["timing_csv"])
    timing.loc[5, "video_frame"] = None  # a frame that never reached the video, uncounted
    timing.to_csv(recorder.paths["timing_csv"], index=False)
    found = _check_video(recorder.paths, recorder.video_dropped)
    assert any("not 0, 1, 2, ... in order" in p for p in found)
    assert any("11 with a video frame, 0 counted" in p for p in found)
