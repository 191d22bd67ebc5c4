"""Live 3D with three cameras: frame sets per second, per-stage latency, drops per camera,
triangulation cost per set, and the 3D error against ground truth.

The demo's synthetic model runs on the synthetic 3D rig (:mod:`poseloop.threed.synthetic_views`:
three virtual cameras of known calibration around the open field, the animal's bodyparts
20 mm above the floor), as a camera group from an experiment config, in two runs:

1. ``synthetic``: three ``synthetic_view`` cameras rendering live, paced at ``--fps``;
2. ``video``: the same views rendered to three video files first, read back as ``opencv``
   cameras paced at the files' rate (``sync: trigger``: frames matched by number).

Then, on their own: one runner call on the batch of three views against one call per view
(alternating, same frames), and the triangulation kernel alone. Run it alone on the
machine (2 cores: anything else running skews the figures)::

    .venv/bin/python benchmarks/threed_live.py --sets 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from poseloop.realtime.cameras.synthetic_view import write_view_calibration
from poseloop.realtime.engine import Engine
from poseloop.realtime.runner import OrtRunner
from poseloop.synthetic_model import synthetic_model
from poseloop.threed.calibration import read_calibration
from poseloop.threed.live import LiveTriangulation
from poseloop.threed.synthetic_views import RigScene, view_rig

VIEWS = 3
#: (label, later stamp, earlier stamp) of each reported stage.
STAGES = [
    ("wait (capture -> grab)", "grab", None),
    ("preprocess x3", "preprocess", "grab"),
    ("infer (batch of 3)", "infer", "preprocess"),
    ("decode x3", "decode", "infer"),
    ("triangulate", "triangulate", "decode"),
    ("process", "process", "triangulate"),
    ("rules", "rules", "process"),
    ("publish", "publish", "rules"),
    ("capture -> publish", "publish", None),
]


def stats_row(label: str, values: list[float] | np.ndarray, unit: str = "ms") -> str:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return f"| {label} | - | - | - | {unit} |"
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return f"| {label} | {p50:.3f} | {p95:.3f} | {p99:.3f} | {unit} |"


def render_videos(folder: Path, frames: int, fps: float) -> list[Path]:
    """The rig's three views as MJPG .avi files (frame i at i / fps seconds)."""
    scene = RigScene(view_rig(VIEWS))
    paths = []
    for v, cam in enumerate(scene.rig.cameras):
        path = folder / f"{cam.name}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, cam.size)
        image = np.empty((cam.size[1], cam.size[0], 3), np.uint8)
        for i in range(frames):
            scene.render_into(v, i / fps, image)
            writer.write(image)
        writer.release()
        paths.append(path)
    return paths


def run(name: str, cameras: list[dict], calibration: Path, sets: int, fps: float) -> None:
    """One live run of the group; prints its table."""
    config = {"group": {"sync": "trigger", "tolerance_ms": 0.5e3 / fps, "cameras": cameras,
                        "triangulation": {"calibration": str(calibration)}},
              "max_frames": sets}
    scene = RigScene(view_rig(VIEWS))
    timings: list[dict[str, int]] = []
    errors: list[np.ndarray] = []

    def on_pose(pose, frame) -> None:  # type: ignore[no-untyped-def]
        stamps = dict(pose.timings)
        stamps["capture"] = pose.t_capture_ns
        timings.append(stamps)
        truth = scene.keypoints_3d(pose.frame_index / fps)
        errors.append(np.linalg.norm(pose.points[0, :, :3] - truth, axis=1))

    with Engine.from_config(config) as engine:
        stats = engine.run(on_pose=on_pose)
    timings = timings[5:]  # the first sets wait for the cameras to start
    print(f"\n### {name}: {stats.frames} frame sets in {stats.seconds:.1f} s = "
          f"{stats.fps:.1f} sets/s (cameras at {fps:g} fps; stopped by {stats.stopped_by})\n")
    print("| stage | median | p95 | p99 | unit |\n|---|---|---|---|---|")
    for label, later, earlier in STAGES:
        values = [(t[later] - t[earlier or "capture"]) / 1e6 for t in timings
                  if later in t and (earlier or "capture") in t]
        print(stats_row(label, values))
    err = np.array(errors)
    print(stats_row("3D error, all bodyparts", err.ravel(), "mm"))
    missing = ", ".join(f"{n}" for n in stats.views_missing)
    unused = ", ".join(f"{n}" for n in stats.views_unused)
    print(f"\nviews missing from a set per camera: {missing}; frames no set used: {unused}; "
          f"errors: {stats.errors or 'none'}")


def batch_vs_views(model: Path, reps: int) -> None:
    """One runner call on the batch of three views vs three calls, alternating."""
    runner = OrtRunner(model)
    scene = RigScene(view_rig(VIEWS))
    w, h = scene.rig.cameras[0].size
    batch = np.empty((VIEWS, h, w, 3), np.uint8)
    for v in range(VIEWS):
        scene.render_into(v, 1.0, batch[v])
    singles = [np.ascontiguousarray(batch[v:v + 1]) for v in range(VIEWS)]
    batched, separate = [], []
    for _ in range(5):
        runner.run(batch)
        for s in singles:
            runner.run(s)
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        runner.run(batch)
        t1 = time.perf_counter_ns()
        for s in singles:
            runner.run(s)
        t2 = time.perf_counter_ns()
        batched.append((t1 - t0) / 1e6)
        separate.append((t2 - t1) / 1e6)
    print(f"\n### inference of a frame set ({VIEWS} views of {w}x{h}), {reps} alternating "
          f"repeats\n")
    print("| how | median | p95 | p99 | unit |\n|---|---|---|---|---|")
    print(stats_row("one call on the batch of 3", batched))
    print(stats_row("3 calls, one per view", separate))
    print(f"\nbatched / per view (median): {np.median(batched) / np.median(separate):.2f}")


def triangulation_cost(calibration: Path, reps: int) -> None:
    """The triangulation of one set (1 animal x 4 bodyparts from 3 views) alone."""
    rig = read_calibration(calibration)
    tri = LiveTriangulation(rig, (1, 4), 0.6)
    tri.warmup()
    scene = RigScene(rig)
    views = np.empty((VIEWS, 1, 4, 3), np.float32)
    image = np.empty((rig.cameras[0].size[1], rig.cameras[0].size[0], 3), np.uint8)
    for v in range(VIEWS):
        pixels, _ = scene.render_into(v, 1.0, image)
        views[v, 0, :, :2] = pixels
        views[v, 0, :, 2] = 0.9
    out, quality = np.empty((1, 4, 4), np.float32), np.empty((1, 4, 2), np.float32)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        tri.triangulate(views, out, quality)
        times.append((time.perf_counter_ns() - t0) / 1e3)
    print(f"\n### triangulation alone ({VIEWS} views, 4 bodyparts), {reps} repeats\n")
    print("| what | median | p95 | p99 | unit |\n|---|---|---|---|---|")
    print(stats_row("LiveTriangulation.triangulate", times, "µs"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", type=int, default=300, help="frame sets per live run")
    parser.add_argument("--fps", type=float, default=30.0, help="camera frame rate")
    parser.add_argument("--reps", type=int, default=200, help="repeats of the timings alone")
    args = parser.parse_args()
    model = synthetic_model()
    with tempfile.TemporaryDirectory(prefix="poseloop-3d-") as tmp:
        folder = Path(tmp)
        calibration = write_view_calibration(folder / "calibration.toml", VIEWS)
        run("synthetic cameras", [{"kind": "synthetic_view", "view": v, "fps": args.fps,
                                   "frames": args.sets + 20} for v in range(VIEWS)],
            calibration, args.sets, args.fps)
        videos = render_videos(folder, args.sets + 20, args.fps)
        run("video files as cameras", [{"kind": "opencv", "source": str(p), "paced": True}
                                       for p in videos], calibration, args.sets, args.fps)
        batch_vs_views(model, args.reps)
        triangulation_cost(calibration, args.reps * 10)


if __name__ == "__main__":
    main()
