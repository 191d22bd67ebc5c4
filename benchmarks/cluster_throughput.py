"""Offline analysis throughput on a Dask LocalCluster: 1 vs 2 worker processes, one run.

Renders ``--videos`` synthetic videos (the synthetic scene, ``--frames`` frames at
``--size``) once, then for each worker count starts a LocalCluster (as ``poseloop analyze
--cluster local:N``: one thread per worker, the cores shared among the workers' ONNX
Runtime sessions), warms the workers up on two short videos each (sessions opened, numba
loaded: a long run pays this once per worker), and analyses all the videos into a fresh
folder. Prints videos per minute, frames per second, per-video seconds (median, p95, p99,
as the workers measured them) and each count's speed-up over the first.

    python benchmarks/cluster_throughput.py [--videos 24] [--frames 600] [--size 320x240]
        [--workers 1 2] [--model M.onnx] [--nwb]

The model defaults to the demo's synthetic model (built once, cached).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from poseloop.analysis.batch import plan, run
from poseloop.analysis.cluster import ClusterSpec, connect, inference_threads
from poseloop.realtime.runner import RunnerConfig
from poseloop.synthetic import SyntheticScene


def write_videos(folder: Path, count: int, frames: int, size: tuple[int, int]) -> list[Path]:
    """``count`` synthetic videos (mp4v, 30 fps), each its own animal path."""
    videos = []
    for i in range(count):
        scene = SyntheticScene(*size, seed=100 + i)
        path = folder / f"session{i:03d}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, size)
        for t in range(frames):
            writer.write(scene.render(t / 30)[0])
        writer.release()
        videos.append(path)
    return videos


def measure(model: Path, videos: list[Path], warmup: list[Path], workers: int, out: Path,
            nwb: bool) -> dict[str, float]:
    """One worker count: wall time of the whole batch and the per-video seconds."""
    spec = ClusterSpec("local", workers)
    runner = RunnerConfig(intra_threads=inference_threads(spec))
    with connect(spec) as client:
        jobs, _ = plan(model, warmup, out / "warmup", runner)
        run(jobs, client)
        jobs, _ = plan(model, videos, out / "run", runner, nwb=nwb)
        start = time.perf_counter()
        results = run(jobs, client)
        wall = time.perf_counter() - start
    failed = [r for r in results if r.status != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} videos failed, e.g. {failed[0].video}: "
                         f"{failed[0].error}")
    seconds = np.array([r.seconds for r in results])
    frames = sum(r.frames for r in results)
    return {"workers": workers, "wall": wall, "videos_per_min": 60 * len(results) / wall,
            "fps": frames / wall, "p50": float(np.median(seconds)),
            "p95": float(np.percentile(seconds, 95)), "p99": float(np.percentile(seconds, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", help="ONNX model (default: the demo's synthetic model)")
    parser.add_argument("--nwb", action="store_true", help="also write the NWB files")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if args.model:
        model = Path(args.model)
    else:
        from poseloop.synthetic_model import synthetic_model

        model = synthetic_model()
    with tempfile.TemporaryDirectory(prefix="poseloop-cluster-bench-") as tmp:
        root = Path(tmp)
        (root / "videos").mkdir()
        (root / "warmup").mkdir()
        videos = write_videos(root / "videos", args.videos, args.frames, (width, height))
        warmup = write_videos(root / "warmup", 2 * max(args.workers), 10, (width, height))
        rows = [measure(model, videos, warmup, n, root / f"out{n}", args.nwb)
                for n in args.workers]
    print(f"{args.videos} videos x {args.frames} frames at {width}x{height}, model "
          f"{model.name}{', with NWB' if args.nwb else ''}")
    header = (f"{'workers':>7} | {'wall s':>7} | {'videos/min':>10} | {'frames/s':>8} | "
              f"{'per-video s: p50':>16} {'p95':>6} {'p99':>6} | {'speed-up':>8}")
    print(header)
    print("-" * len(header))
    base = rows[0]["videos_per_min"]
    for r in rows:
        print(f"{r['workers']:>7} | {r['wall']:>7.2f} | {r['videos_per_min']:>10.1f} | "
              f"{r['fps']:>8.1f} | {r['p50']:>16.2f} {r['p95']:>6.2f} {r['p99']:>6.2f} | "
              f"{r['videos_per_min'] / base:>7.2f}x")


if __name__ == "__main__":
    main()
