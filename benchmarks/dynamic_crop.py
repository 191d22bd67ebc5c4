"""Dynamic cropping (DeepLabCut-Live's ``dynamic``): speed and pose change, measured.

A trained model runs over the same video frames twice, in turns (frame i full, frame i
cropped, next frame): the whole frame every time, and with ``preprocess.dynamic`` (the
network sees only the box around the last confident pose plus a margin, rounded up to a
multiple of 32 px; the whole frame while nothing is confident). Prints ms per
``Engine.step`` (median / p95 / p99), the network input sizes, and how far the cropped
poses are from the full-frame ones (confident bodyparts).

    python benchmarks/dynamic_crop.py [--model runs/openfield-mnv2/model.onnx] [--frames 300]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from poseloop.export.frames import video_frames
from poseloop.realtime.benchmark import ReplayCamera
from poseloop.realtime.builder import build_engine
from poseloop.realtime.engine import Engine
from poseloop.realtime.engine_config import EngineConfig
from poseloop.realtime.types import Frame

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "datasets" / "openfield-Pranav" / "videos" / "m3v1mp4.mp4"


def engine_for(model: str, preprocess: dict, threads: int, size: tuple[int, int]) -> Engine:
    cfg = EngineConfig.model_validate({"model": model, "preprocess": preprocess,
                                       "runner": {"intra_threads": threads}})
    blank = [np.zeros((size[1], size[0], 3), np.uint8)]
    return build_engine(cfg, ReplayCamera(blank, 30.0)).open()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "runs" / "openfield-mnv2" / "model.onnx"),
                    help="a trained model (poseloop train + export)")
    ap.add_argument("--video", default=str(VIDEO))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gap-ms", type=float, default=100.0,
                    help="pause before each call (a camera's frame interval; lets the other "
                    "runtimes' worker threads stop spinning)")
    ap.add_argument("--margins", type=float, nargs="+", default=[20.0, 60.0])
    args = ap.parse_args()
    if not Path(args.model).is_file():
        raise SystemExit(f"{args.model}: no model; train one (poseloop train "
                         f"../shared/datasets/openfield-Pranav --out runs/openfield-mnv2) and "
                         f"export it (poseloop export runs/openfield-mnv2)")
    frames = video_frames(args.video, args.frames)
    h, w = frames[0].shape[:2]
    variants = {"full frame": {}}
    for margin in args.margins:
        variants[f"dynamic, margin {margin:g} px"] = {"dynamic": True, "dynamic_margin": margin}
    engines = {k: engine_for(args.model, v, args.threads, (w, h)) for k, v in variants.items()}
    pcutoff = next(iter(engines.values())).runner.spec.pcutoff
    sizes: dict[str, list[tuple[int, ...]]] = {k: [] for k in engines}
    for name, engine in engines.items():
        run = engine.runner.run

        def recording(image: np.ndarray, run=run, log=sizes[name]) -> tuple[np.ndarray, ...]:
            log.append(image.shape[-3:-1])
            return run(image)

        engine.runner.run = recording  # type: ignore[method-assign]
    times: dict[str, list[int]] = {k: [] for k in engines}
    poses: dict[str, list[np.ndarray]] = {k: [] for k in engines}
    for i, image in enumerate(frames):
        for name, engine in engines.items():
            time.sleep(args.gap_ms / 1e3)
            t0 = time.perf_counter_ns()
            pose = engine.step(Frame(image, i, t0))
            times[name].append(time.perf_counter_ns() - t0)
            poses[name].append(pose.points[0])
    for engine in engines.values():
        engine.close()
    full = np.stack(poses["full frame"])
    seen = full[..., 2] >= pcutoff
    print(f"\n{len(frames)} frames of {Path(args.video).name} ({w}x{h}), {args.threads} threads, "
          f"in turns; ms per Engine.step")
    print(f"{'variant':<26s}{'median':>8s}{'p95':>8s}{'p99':>8s}{'speed-up':>10s}"
          f"{'median input':>15s}{'cropped':>9s}{'|dxy| px: median':>18s}{'p99':>7s}"
          f"{'> 10 px':>9s}")
    base = float(np.median(times["full frame"]))
    for name in engines:
        ms = np.array(times[name]) / 1e6
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        shapes = np.array(sizes[name][-len(frames):])
        cropped = float(np.mean(shapes[:, 0] * shapes[:, 1] < h * w))
        area = np.median(shapes[:, 0] * shapes[:, 1])
        side = np.sqrt(area)
        d = np.linalg.norm(np.stack(poses[name])[..., :2] - full[..., :2], axis=-1)[seen]
        print(f"{name:<26s}{p50:8.2f}{p95:8.2f}{p99:8.2f}{base / 1e6 / p50:9.2f}x"
              f"{f'~{side:.0f}x{side:.0f}':>15s}{cropped:9.0%}{np.median(d):18.2f}"
              f"{np.percentile(d, 99):7.2f}{np.mean(d > 10):9.1%}")


if __name__ == "__main__":
    main()
