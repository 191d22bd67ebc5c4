"""Exported ONNX models in ONNX Runtime vs the same networks in PyTorch eager, per frame.

For each model (a poseloop training run and/or DeepLabCut 3 ``.pt`` files) it exports
fp32 and static-int8 ONNX files into a temporary folder, then times, on the same real
frames at 640x480, 320x240 and 160x120:

* ``torch``: PyTorch eager, BGR frame -> float tensor -> network (threads = cores);
* ``ort``: ONNX Runtime CPU, the uint8 BGR frame straight into the graph (threads = cores);
* ``ort-int8``: the same for the int8 model.

For DLC3 files it also times the whole per-frame path on the openfield video: poseloop's
(frame into the graph through IO binding with preallocated outputs, then decode) against a
PyTorch loop that mimics DeepLabCut-Live's ``get_pose`` (cvtColor, ToDtype /255, Normalize,
model, decode), and, with ``--dlclive-python``, DeepLabCut-Live itself run in that Python.
Runtimes compared in one table take turns frame by frame, so load from other processes
falls on all of them alike (DeepLabCut-Live runs separately, in its own process).

    python benchmarks/export_speed.py --run runs/bench-openfield/imagenet \
        --dlc3 ../shared/models/dlc3_resnet50_openfield_random.pt [--frames 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from poseloop.export.dlc3 import load_dlc3
from poseloop.export.frames import load_bgr, video_frames
from poseloop.export.onnx_export import IMAGENET_MEAN, IMAGENET_STD
from poseloop.export.pipeline import ExportOptions, export_run, import_dlc
from poseloop.modelspec import INPUT_NAME, OUTPUT_NAMES, ModelSpec, open_session
from poseloop.project import read_project
from poseloop.training.run import load_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VIDEO = SHARED / "datasets" / "openfield-Pranav" / "videos" / "m3v1mp4.mp4"
SIZES = [(640, 480), (320, 240), (160, 120)]
CORES = os.cpu_count() or 1


def stats(times_s: list[float]) -> tuple[float, float, float]:
    """Median, p95 and p99 in milliseconds."""
    ms = 1e3 * np.asarray(times_s)
    return float(np.median(ms)), float(np.percentile(ms, 95)), float(np.percentile(ms, 99))


def time_interleaved(fns: dict[str, Callable[[np.ndarray], object]], frames: list[np.ndarray],
                     warmup: int = 3) -> dict[str, list[float]]:
    """Per-call wall times of each function, taking turns frame by frame.

    Taking turns spreads any load from other processes evenly over the runtimes compared.
    """
    for fn in fns.values():
        for frame in frames[:warmup]:
            fn(frame)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for frame in frames:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(frame)
            times[name].append(time.perf_counter() - t0)
    return times


def torch_fn(net: torch.nn.Module, normalise: bool) -> Callable[[np.ndarray], object]:
    """BGR frame -> RGB float tensor (-> /255 + ImageNet normalisation) -> network."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def run(frame: np.ndarray) -> object:
        x = torch.from_numpy(frame[..., ::-1].copy()).permute(2, 0, 1)[None].to(torch.float32)
        if normalise:
            x = (x / 255.0 - mean) / std
        with torch.inference_mode():
            return net(x)

    return run


def ort_fn(session) -> Callable[[np.ndarray], object]:
    """The uint8 frame straight into the graph."""
    return lambda frame: session.run(list(OUTPUT_NAMES), {INPUT_NAME: frame[None]})


def network_table(name: str, net: torch.nn.Module, normalise: bool, paths: dict[str, Path],
                  frames: list[np.ndarray]) -> list[tuple]:
    """Rows (model, size, runtime, median, p95, p99, speed-up vs torch) for every size."""
    sessions = {kind: open_session(path, threads=CORES) for kind, path in paths.items()}
    rows = []
    for w, h in SIZES:
        sized = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
        fns = {"torch": torch_fn(net, normalise)}
        fns.update({kind: ort_fn(session) for kind, session in sessions.items()})
        results = {kind: stats(t) for kind, t in time_interleaved(fns, sized).items()}
        base = results["torch"][0]
        rows += [(name, f"{w}x{h}", kind, *s, base / s[0]) for kind, s in results.items()]
    return rows


def iobinding_step(session, spec: ModelSpec, frame0: np.ndarray) -> Callable[[np.ndarray], object]:
    """poseloop's per-frame path: bind the frame, run into preallocated outputs, decode."""
    first = session.run(list(OUTPUT_NAMES), {INPUT_NAME: frame0[None]})
    outputs = [np.empty_like(o) for o in first]
    binding = session.io_binding()
    for name, out in zip(OUTPUT_NAMES, outputs, strict=True):
        binding.bind_output(name, "cpu", 0, out.dtype, out.shape, out.ctypes.data)

    def step(frame: np.ndarray) -> np.ndarray:
        frame = np.ascontiguousarray(frame[None])
        binding.bind_input(INPUT_NAME, "cpu", 0, np.uint8, frame.shape, frame.ctypes.data)
        session.run_with_iobinding(binding)
        return spec.decode(outputs[0][0], outputs[1][0])

    return step


def dlclive_mimic_step(net: torch.nn.Module, spec: ModelSpec) -> Callable[[np.ndarray], object]:
    """DeepLabCut-Live's PyTorch get_pose, step by step (v2 transforms as it uses them)."""
    from torchvision.transforms import v2

    transform = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])

    def step(frame: np.ndarray) -> np.ndarray:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        x = transform(torch.from_numpy(rgb).permute(2, 0, 1)).unsqueeze(0)
        with torch.inference_mode():
            heatmaps, locref = net(x)
        return spec.decode(heatmaps[0].numpy(), locref[0].numpy())

    return step


DLCLIVE_SCRIPT = """
import json, sys, time
import cv2, numpy as np, torch
from dlclive import DLCLive
torch.set_num_threads(int(sys.argv[3]))
cap = cv2.VideoCapture(sys.argv[2]); frames = []
while len(frames) < int(sys.argv[4]):
    ok, f = cap.read()
    if not ok: break
    frames.append(f)
d = DLCLive(sys.argv[1], model_type="pytorch", device="cpu")
d.init_inference(frames[0])
for f in frames[:3]: d.get_pose(f)
times, poses = [], []
for f in frames:
    t0 = time.perf_counter(); poses.append(np.asarray(d.get_pose(f)).tolist())
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "poses": poses}))
"""


def dlclive_loop(python: str, model: Path, n: int) -> tuple[list[float], np.ndarray]:
    """DeepLabCut-Live's own get_pose timed in another Python (its own venv)."""
    out = subprocess.run([python, "-c", DLCLIVE_SCRIPT, str(model), str(VIDEO), str(CORES),
                          str(n)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["times"], np.asarray(result["poses"], np.float32)


def print_table(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}")
    print(f"{'model':28s} {'size':8s} {'runtime':18s} {'median':>8s} {'p95':>8s} {'p99':>8s} "
          f"{'speed-up':>8s}")
    for name, size, kind, med, p95, p99, up in rows:
        print(f"{name:28s} {size:8s} {kind:18s} {med:8.2f} {p95:8.2f} {p99:8.2f} {up:7.2f}x")


def bench_run(run: str, n: int, tmp: Path, exporter: str) -> list[tuple]:
    net, info = load_model(run)
    result = export_run(run, tmp / "run.onnx", ExportOptions(int8=True, force=True,
                                                            exporter=exporter))
    project = read_project(info.project_root)
    frames = [load_bgr(project, f) for f in project.frames[:n]]
    paths = {"ort": result.path, "ort-int8": result.int8_path}
    return network_table(f"run {info.config.backbone}", net, False, paths, frames)


def bench_dlc3(model: Path, n: int, tmp: Path, exporter: str,
               dlclive_python: str | None) -> tuple[list[tuple], list[tuple]]:
    net, info = load_dlc3(model)
    result = import_dlc(model, tmp / f"{model.stem}.onnx", VIDEO,
                        opts=ExportOptions(int8=True, force=True, exporter=exporter))
    frames = video_frames(VIDEO, n)
    name = f"dlc3 {info.backbone}"
    paths = {"ort": result.path, "ort-int8": result.int8_path}
    rows = network_table(name, net, info.normalize_images, paths, frames)

    spec = ModelSpec.read(result.path)
    sessions = {kind: open_session(path, threads=CORES) for kind, path in paths.items()}
    fns = {"dlclive-mimic": dlclive_mimic_step(net, spec)}
    fns.update({f"poseloop {kind}": iobinding_step(session, spec, frames[0])
                for kind, session in sessions.items()})
    results = {kind: stats(t) for kind, t in time_interleaved(fns, frames).items()}
    mimic = results["dlclive-mimic"][0]
    loop_rows = [(name, "640x480", kind, *s, mimic / s[0]) for kind, s in results.items()]
    if dlclive_python:
        times, live_poses = dlclive_loop(dlclive_python, model, n)
        live = stats(times)
        loop_rows.append((name, "640x480", "dlclive (own run)", *live, mimic / live[0]))
        poses = np.stack([spec.decode(*(o[0] for o in ort_fn(sessions["ort"])(f)))
                          for f in frames])
        print(f"{name}: DeepLabCut-Live / poseloop ORT median time "
              f"{live[0] / results['poseloop ort'][0]:.2f}x (separate runs); poses differ by "
              f"at most {np.abs(poses[..., :2] - live_poses[..., :2]).max():.2e} px")
    return rows, loop_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a poseloop training run folder")
    ap.add_argument("--dlc3", action="append", default=[], help="a DLC3 .pt file (repeatable)")
    ap.add_argument("--frames", type=int, default=30, help="timed frames per configuration")
    ap.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript")
    ap.add_argument("--dlclive-python", help="a Python with deeplabcut-live installed")
    args = ap.parse_args()
    if not args.run and not args.dlc3:
        ap.error("give --run and/or --dlc3")
    torch.set_num_threads(CORES)
    warnings.simplefilter("ignore")
    rows, loop_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            rows += bench_run(args.run, args.frames, Path(tmp), args.exporter)
        for model in args.dlc3:
            net_rows, per_frame = bench_dlc3(Path(model), args.frames, Path(tmp),
                                             args.exporter, args.dlclive_python)
            rows += net_rows
            loop_rows += per_frame
    print_table(f"network only, ms per frame ({CORES} threads; speed-up vs torch eager)", rows)
    if loop_rows:
        print_table("whole per-frame path on the openfield video, ms (speed-up vs the "
                    "DLC-Live-style eager loop)", loop_rows)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
