"""``poseloop benchmark``: per-stage latency and throughput of the live loop.

Frames come from a replay camera (pre-rendered synthetic frames, or frames of a video,
resized to each size), whose grab costs almost nothing. Two runs per size, each timed by
the poses' own ``timings`` stamps:

* latency: the camera runs at 0.5x the loop's rate, so every frame is taken as soon as it
  arrives and each stage's time (hand-off included) is the loop's own, not queueing;
* throughput: the camera runs at 2x the loop's rate, so the loop never waits for a frame;
  its frame rate is compared with 1 / inference time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from poseloop.realtime.builder import build_engine
from poseloop.realtime.cameras import OpenCVCamera, Pacer
from poseloop.realtime.engine import Engine, RunStats
from poseloop.realtime.engine_config import EngineConfig
from poseloop.realtime.runner import RunnerConfig
from poseloop.realtime.types import CameraInfo, Frame, Pose
from poseloop.synthetic import SyntheticScene

#: Reported stages: name -> (start stamp, end stamp); "capture" is Frame.t_capture_ns.
STAGE_SPANS = {
    "handoff": ("capture", "grab"),
    "preprocess": ("grab", "preprocess"),
    "infer": ("preprocess", "infer"),
    "decode": ("infer", "decode"),
    "process": ("decode", "process"),
    "rules": ("process", "rules"),
    "publish": ("rules", "publish"),
    "total": ("capture", "publish"),
}
OVERHEAD = ("handoff", "preprocess", "decode", "process", "rules", "publish")
STAMPS = ("capture", "grab", "preprocess", "infer", "decode", "process", "rules", "publish")


class ReplayCamera:
    """Cycles through pre-loaded frames at ``fps`` (a camera whose grab costs ~nothing)."""

    def __init__(self, images: list[np.ndarray], fps: float, frames: int | None = None):
        self.images, self.fps, self.frames = images, fps, frames
        self.height, self.width = images[0].shape[:2]
        self._pacer: Pacer | None = None
        self._index = 0

    def open(self) -> CameraInfo:
        self._index = 0
        self._pacer = Pacer(self.fps)
        return CameraInfo(self.width, self.height, self.fps)

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        if self.frames is not None and self._index >= self.frames:
            return None
        if self._pacer is not None:
            self._pacer.wait()
        image = self.images[self._index % len(self.images)]
        if out is not None and out.shape == image.shape:
            np.copyto(out, image)
            image = out
        frame = Frame(image, self._index, time.perf_counter_ns())
        self._index += 1
        return frame

    def close(self) -> None:
        self._pacer = None


def source_frames(size: tuple[int, int], video: str | Path | None, n: int = 60) -> list[np.ndarray]:
    """``n`` BGR frames at ``size`` (w, h): from a video (resized), else the synthetic scene."""
    w, h = size
    if video is None:
        scene = SyntheticScene(w, h, seed=0)
        return [scene.render(i / 30.0)[0] for i in range(n)]
    cam = OpenCVCamera(video)
    cam.open()
    frames = []
    try:
        while len(frames) < n:
            frame = cam.read()
            if frame is None:
                break
            frames.append(cv2.resize(frame.image, (w, h), interpolation=cv2.INTER_LINEAR))
    finally:
        cam.close()
    return frames


@dataclass
class SizeResult:
    """One size's figures (milliseconds), as the JSON output carries them."""

    size: str
    stages: dict[str, dict[str, float]]
    inference_p50_ms: float
    overhead_p50_ms: float
    fps: float
    model_fps: float
    dropped: int
    frames: int

    def as_json(self) -> dict:
        return dict(self.__dict__)


def _percentiles(values_ns: np.ndarray) -> dict[str, float]:
    ms = values_ns / 1e6
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
            "max_ms": float(ms.max())}


def bench_size(model: str | Path, size: tuple[int, int], frames: int, video: str | None,
               runner: RunnerConfig) -> SizeResult:
    """Run the loop on ``frames`` frames at ``size`` and summarise the stamps."""
    images = source_frames(size, video)
    probe = _engine(model, runner, ReplayCamera(images, 1000.0))
    probe.open()
    t0 = time.perf_counter()
    for i in range(20):
        probe.step(Frame(images[i % len(images)], i, time.perf_counter_ns()))
    per_frame = (time.perf_counter() - t0) / 20
    probe.close()
    stamps, _ = _timed_run(model, runner, images, size, 0.5 / per_frame, frames)
    _, throughput = _timed_run(model, runner, images, size, 2.0 / per_frame, frames)
    col = {n: i for i, n in enumerate(STAMPS)}
    stages = {name: _percentiles(stamps[:, col[b]] - stamps[:, col[a]])
              for name, (a, b) in STAGE_SPANS.items()}
    overhead = sum(stamps[:, col[STAGE_SPANS[s][1]]] - stamps[:, col[STAGE_SPANS[s][0]]]
                   for s in OVERHEAD)
    infer = stages["infer"]["p50_ms"]
    return SizeResult(
        size=f"{size[0]}x{size[1]}", stages=stages, inference_p50_ms=infer,
        overhead_p50_ms=float(np.median(overhead) / 1e6), fps=throughput.fps,
        model_fps=1000.0 / infer, dropped=throughput.camera_dropped, frames=len(stamps),
    )


def _engine(model: str | Path, runner: RunnerConfig, camera: ReplayCamera) -> Engine:
    return build_engine(EngineConfig(model=str(model), runner=runner), camera)


def _timed_run(model: str | Path, runner: RunnerConfig, images: list[np.ndarray],
               size: tuple[int, int], camera_fps: float, frames: int
               ) -> tuple[np.ndarray, RunStats]:
    """Run ``frames`` frames from a replay camera at ``camera_fps``; stamps per frame."""
    engine = _engine(model, runner, ReplayCamera(images, camera_fps))
    stamps = np.zeros((frames, len(STAMPS)), np.int64)
    count = 0

    def keep(pose: Pose, frame: Frame) -> None:
        nonlocal count
        row = stamps[count]
        row[0] = pose.t_capture_ns
        for j, name in enumerate(STAMPS[1:], start=1):
            row[j] = pose.timings[name]
        count += 1

    with engine:
        stats = engine.run(max_frames=frames, on_pose=keep)
    return stamps[:count], stats


def format_table(results: list[SizeResult]) -> str:
    """The per-stage table of every size (ms), then throughput."""
    lines = []
    for r in results:
        lines.append(f"\n{r.size}: latency over {r.frames} frames (camera slower than the loop)")
        lines.append(f"  {'stage':<11s}{'p50 ms':>9s}{'p95 ms':>9s}{'p99 ms':>9s}{'max ms':>9s}")
        for name, s in r.stages.items():
            lines.append(f"  {name:<11s}{s['p50_ms']:9.3f}{s['p95_ms']:9.3f}"
                         f"{s['p99_ms']:9.3f}{s['max_ms']:9.3f}")
        lines.append(f"  overhead beyond inference (median): {r.overhead_p50_ms:.3f} ms")
        lines.append(f"  throughput (camera faster than the loop): {r.fps:.1f} fps = "
                     f"{r.fps / r.model_fps:.3f} x 1/inference ({r.model_fps:.1f} fps); "
                     f"camera frames dropped {r.dropped}")
    return "\n".join(lines)
