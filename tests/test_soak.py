"""The 60-second soak of issue 6: full loop at 200 FPS, recording checked frame by frame."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from poseloop.soak import format_report, run_soak

SECONDS = float(os.environ.get("POSELOOP_SOAK_SECONDS", "60"))


def test_soak_loses_nothing(synthetic_onnx: Path, tmp_path: Path) -> None:
    report = run_soak(synthetic_onnx, tmp_path / "soak", SECONDS, fps=200.0, size=(160, 120),
                      warmup_s=SECONDS / 4, rss_every_s=1.0, log=lambda _m: None)
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
