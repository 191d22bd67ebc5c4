"""Runtimes and precisions on a trained model: speed and accuracy, in one run.

For a poseloop training run exported with ``--int8``: ONNX Runtime fp32 and int8, and,
where the ``openvino`` package is installed, OpenVINO fp32, bf16 (CPUs with AMX or
AVX512-BF16) and int8 (the same QDQ file). Every contender runs ``Engine.step`` on the same
labeled frames in turns (one frame each, then the next frame), with a pause before each
call. Prints ms per frame (median,
p95, p99), the test-set RMSE against the labels and how far each moves the poses from ONNX
Runtime fp32 over all frames (mean and max, confident bodyparts).

    python benchmarks/runtimes.py [--run runs/openfield-mnv2] [--frames 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

from poseloop.export.compare import rmse
from poseloop.export.frames import load_bgr
from poseloop.project import read_project
from poseloop.realtime.benchmark import ReplayCamera
from poseloop.realtime.builder import build_engine
from poseloop.realtime.engine import Engine
from poseloop.realtime.engine_config import EngineConfig
from poseloop.realtime.types import Frame
from poseloop.training.run import load_model

ROOT = Path(__file__).resolve().parents[1]


def contenders(run: Path) -> dict[str, tuple[Path, dict]]:
    """label -> (model file, runner config) of every runtime/precision available here."""
    fp32, int8 = run / "model.onnx", run / "model.int8.onnx"
    out = {"ONNX Runtime fp32": (fp32, {}), "ONNX Runtime int8": (int8, {})}
    if importlib.util.find_spec("openvino") is not None:
        from poseloop.realtime.openvino_runner import import_openvino

        ov = import_openvino()

        out["OpenVINO fp32"] = (fp32, {"backend": "openvino"})
        if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            out["OpenVINO bf16"] = (fp32, {"backend": "openvino", "precision": "bf16"})
        out["OpenVINO int8"] = (int8, {"backend": "openvino"})
    return {k: v for k, v in out.items() if v[0].is_file()}


def engine_for(model: Path, runner: dict, threads: int, size: tuple[int, int]) -> Engine:
    cfg = EngineConfig.model_validate({"model": str(model),
                                       "runner": {"intra_threads": threads, **runner}})
    blank = [np.zeros((size[1], size[0], 3), np.uint8)]
    return build_engine(cfg, ReplayCamera(blank, 30.0)).open()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "openfield-mnv2"),
                    help="a training run exported with poseloop export RUN --int8")
    ap.add_argument("--frames", type=int, default=100, help="labeled frames timed (at most)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gap-ms", type=float, default=100.0,
                    help="pause before each call (a camera's frame interval; lets the other "
                    "runtimes' worker threads stop spinning)")
    args = ap.parse_args()
    run = Path(args.run)
    if not (run / "model.onnx").is_file():
        raise SystemExit(f"{run}: no model.onnx; train and export it first (poseloop train "
                         f"../shared/datasets/openfield-Pranav --out {run}; poseloop export "
                         f"{run} --int8)")
    _, info = load_model(run)
    project = read_project(info.project_root)
    test = set(info.split.test)
    chosen = [f for f in project.frames if f.image in test]
    chosen += [f for f in project.frames if f.image not in test][:max(0, args.frames - len(chosen))]
    images = [load_bgr(project, f) for f in chosen]
    labels = np.stack([f.keypoints for f in chosen])
    is_test = np.array([f.image in test for f in chosen])
    h, w = images[0].shape[:2]
    engines = {k: engine_for(m, r, args.threads, (w, h)) for k, (m, r) in
               contenders(run).items()}
    multi = info.multi_animal
    times: dict[str, list[int]] = {k: [] for k in engines}
    poses: dict[str, list[np.ndarray]] = {k: [] for k in engines}
    for i, image in enumerate(images):
        for name, engine in engines.items():
            time.sleep(args.gap_ms / 1e3)
            if image.shape[:2] != (h, w):
                engine.warmup((image.shape[1], image.shape[0]))
            t0 = time.perf_counter_ns()
            pose = engine.step(Frame(image, i, t0))
            times[name].append(time.perf_counter_ns() - t0)
            poses[name].append(pose.points if multi else pose.points[0])
    for engine in engines.values():
        engine.close()
    base = np.stack(poses["ONNX Runtime fp32"])
    pcutoff = engines["ONNX Runtime fp32"].runner.spec.pcutoff  # type: ignore[attr-defined]
    seen = base[..., 2] >= pcutoff
    base_ms = float(np.median(times["ONNX Runtime fp32"])) / 1e6
    print(f"\n{run.name}: {len(images)} labeled frames ({int(is_test.sum())} test), "
          f"{w}x{h}, {args.threads} threads, in turns; ms per Engine.step")
    print(f"{'runtime':<20s}{'median':>8s}{'p95':>8s}{'p99':>8s}{'speed-up':>10s}"
          f"{'test RMSE px':>14s}{'shift vs fp32 px: mean':>24s}{'max':>7s}")
    for name in engines:
        ms = np.array(times[name]) / 1e6
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        got = np.stack(poses[name])
        test_rmse = rmse(got[is_test], labels[is_test]) if is_test.any() else float("nan")
        shift = np.linalg.norm(got[..., :2] - base[..., :2], axis=-1)[seen]
        print(f"{name:<20s}{p50:8.2f}{p95:8.2f}{p99:8.2f}{base_ms / p50:9.2f}x"
              f"{test_rmse:14.2f}{shift.mean():24.3f}{shift.max():7.2f}")


if __name__ == "__main__":
    main()
