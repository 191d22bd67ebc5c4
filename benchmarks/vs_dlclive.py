"""poseloop against DeepLabCut-Live 1.1 on the same DeepLabCut 3 models, frames and threads.

DeepLabCut-Live runs in its own virtual environment (created here on first use:
``deeplabcut-live[pytorch]==1.1.0`` with this machine's torch), in a worker process fed over
a pipe. For each model, ``--frames`` openfield frames (640 x 480 BGR, as OpenCV decodes
them) go through the contenders **in turns, frame by frame** (DLC-Live, poseloop fp32,
poseloop int8, next frame): machine noise falls on all alike and only one runs at a time,
with ``--gap-ms`` between calls (a camera's frame interval; it also lets torch's OpenMP
threads, which spin for a while after each call, go idle before the next contender).
Each side times its own per-frame call (the pipe is outside the timing):

* DeepLabCut-Live: ``DLCLive.get_pose(frame)`` (BGR -> RGB, normalisation, torch model,
  argmax + locref), ``model_type="pytorch"``, CPU, ``torch.set_num_threads(threads)``;
* poseloop: ``Engine.step(frame)`` (preprocess, ONNX Runtime with ``threads`` intra-op
  threads, numba decode, mapping to full-frame pixels, the pose copy every sink gets); where
  the ``openvino`` package is installed, also with ``runner.backend: openvino`` in bf16 (CPUs
  with AMX / AVX512-BF16) and on the int8 file.

Poses are compared with DeepLabCut-Live's (fp32: the same network, so they should agree to
~1e-4 px; int8 and bf16: the shared DLC3 models have random weights, so their shift says
nothing about accuracy — accuracy on a trained model: ``benchmarks/runtimes.py``). Also
prints fp32 inference as a fraction of this CPU's peak FLOP rate, from the model's
multiply-accumulates.

    python benchmarks/vs_dlclive.py [--frames 40] [--threads 2] [--gap-ms 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VIDEO = SHARED / "datasets" / "openfield-Pranav" / "videos" / "m3v1mp4.mp4"
MODELS = ("resnet50", "cspnext_s")
DLCLIVE = "deeplabcut-live[pytorch]==1.1.0"

# The worker runs in DeepLabCut-Live's venv: it must import nothing of poseloop.
WORKER = r"""
import json, sys, time
import numpy as np, torch
from dlclive import DLCLive
torch.set_num_threads(int(sys.argv[2]))
frames = np.load(sys.argv[1])
live = None
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "load":
        live = DLCLive(arg, model_type="pytorch", device="cpu")
        live.init_inference(frames[0])
        reply = {"ok": True}
    else:
        frame = frames[int(arg)]
        t0 = time.perf_counter_ns()
        pose = live.get_pose(frame)
        reply = {"ns": time.perf_counter_ns() - t0, "pose": np.asarray(pose).tolist()}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
"""


def ensure_venv(venv: Path) -> Path:
    """DeepLabCut-Live's own venv (made on first use); its python."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import dlclive, torch"]
    if python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing {DLCLIVE} into {venv} (once; a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    import torch  # the same torch build as poseloop's (on this machine: from local disk)

    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    subprocess.run([str(python), "-m", "pip", "install", "-q", torch_pin, DLCLIVE,
                    "opencv-python-headless"], check=True)
    subprocess.run(probe, check=True)
    return python


class DlcLiveWorker:
    """DeepLabCut-Live in its own interpreter, one JSON line per request."""

    def __init__(self, python: Path, frames_npy: Path, threads: int) -> None:
        self.proc = subprocess.Popen([str(python), "-c", WORKER, str(frames_npy), str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, line: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"DeepLabCut-Live worker ended (asked {line!r})")
        return json.loads(reply)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


def peak_gflops() -> tuple[float, str]:
    """Two-FMA-unit peak of this CPU's cores (fp32), from /proc/cpuinfo: (GFLOP/s, how)."""
    import os

    text = Path("/proc/cpuinfo").read_text()
    flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
    mhz = max(float(line.split(":")[1]) for line in text.splitlines()
              if line.startswith("cpu MHz"))
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    cores = len(os.sched_getaffinity(0))
    gflops = cores * 2 * lanes * 2 * mhz / 1e3  # cores x 2 FMA units x lanes x 2 flops x GHz
    simd = "AVX-512" if lanes == 16 else "AVX2" if lanes == 8 else "SSE"
    return gflops, f"{cores} cores x 2 FMA x {lanes} fp32 ({simd}) x 2 x {mhz / 1e3:.2f} GHz"


def conv_macs(path: Path, height: int, width: int) -> float:
    """Multiply-accumulates of the convolutions of an ONNX model for one H x W frame."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.ClearField("dim")
    for d in (1, height, width, 3):
        model.graph.input[0].type.tensor_type.shape.dim.add().dim_value = d
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.output)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    macs = 0.0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or node.input[1] not in weights:
            continue
        w = weights[node.input[1]]
        if node.op_type == "Conv":
            out = shapes.get(node.output[0])
            if out:  # out: N x Cout x h x w; weight Cout x Cin/g x kh x kw
                macs += float(np.prod(out)) * float(np.prod(w[1:]))
        else:
            inp = shapes.get(node.input[0])
            if inp:  # ConvTranspose: each input pixel x Cin x Cout/g x kh x kw
                macs += float(np.prod(inp)) * float(np.prod(w[1:]))
    return macs


def make_models(name: str, out: Path, frames_path: Path) -> tuple[Path, Path]:
    """fp32 and int8 (calibrated on openfield frames) ONNX files of one shared DLC3 model."""
    from poseloop.export.pipeline import ExportOptions, import_dlc

    fp32 = out / f"{name}.onnx"
    int8 = out / f"{name}.int8.onnx"
    if not (fp32.is_file() and int8.is_file()):
        opts = ExportOptions(int8=True, force=True)
        import_dlc(SHARED / "models" / f"dlc3_{name}_openfield_random.pt", fp32, frames_path,
                   opts=opts, log=lambda _: None)
    return fp32, int8


def engine_for(model: Path, threads: int, size: tuple[int, int], runner: dict | None = None):
    """An opened poseloop engine on ``model`` (warmed up for 640 x 480), no sinks."""
    from poseloop.realtime.benchmark import ReplayCamera
    from poseloop.realtime.builder import build_engine
    from poseloop.realtime.engine_config import EngineConfig

    blank = [np.zeros((size[1], size[0], 3), np.uint8)]
    cfg = EngineConfig.model_validate({"model": str(model),
                                       "runner": {"intra_threads": threads, **(runner or {})}})
    return build_engine(cfg, ReplayCamera(blank, 30.0)).open()


def openvino_variants() -> dict[str, dict]:
    """OpenVINO contenders where the package is installed (bf16 where the CPU has it)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return {}
    from poseloop.realtime.openvino_runner import import_openvino

    ov = import_openvino()

    out = {}
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        out["poseloop OV bf16"] = {"backend": "openvino", "precision": "bf16"}
    out["poseloop OV int8"] = {"backend": "openvino"}
    return out


def stats(ns: list[int]) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(np.array(ns) / 1e6, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40, help="frames per model (after warm-up)")
    ap.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads")
    ap.add_argument("--gap-ms", type=float, default=200.0, help="pause between calls")
    ap.add_argument("--venv", default=str(ROOT / ".venv-dlclive"))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--out", default=str(ROOT / "runs" / "vs-dlclive"))
    args = ap.parse_args()

    from poseloop.export.frames import video_frames
    from poseloop.realtime.types import Frame

    python = ensure_venv(Path(args.venv))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = video_frames(VIDEO, args.frames + 1)
    h, w = frames[0].shape[:2]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "frames.npy"
        np.save(npy, np.stack(frames))
        worker = DlcLiveWorker(python, npy, args.threads)
        try:
            for name in args.models:
                fp32, int8 = make_models(name, out, VIDEO)
                worker.ask(f"load {SHARED / 'models' / f'dlc3_{name}_openfield_random.pt'}")
                engines = {"poseloop fp32": engine_for(fp32, args.threads, (w, h)),
                           "poseloop int8": engine_for(int8, args.threads, (w, h))}
                for label, runner in openvino_variants().items():
                    model = int8 if "int8" in label else fp32
                    engines[label] = engine_for(model, args.threads, (w, h), runner)
                times: dict[str, list[int]] = {"DeepLabCut-Live": [], **{k: [] for k in engines}}
                poses: dict[str, list[np.ndarray]] = {k: [] for k in times}
                gap = args.gap_ms / 1e3
                for i in range(1, len(frames)):
                    time.sleep(gap)
                    reply = worker.ask(f"pose {i}")
                    times["DeepLabCut-Live"].append(reply["ns"])
                    poses["DeepLabCut-Live"].append(np.array(reply["pose"], np.float32))
                    for label, engine in engines.items():
                        time.sleep(gap)
                        t0 = time.perf_counter_ns()
                        pose = engine.step(Frame(frames[i], i, t0))
                        times[label].append(time.perf_counter_ns() - t0)
                        poses[label].append(pose.points[0])
                for engine in engines.values():
                    engine.close()
                ref = np.stack(poses["DeepLabCut-Live"])
                base = stats(times["DeepLabCut-Live"])[0]
                for label in times:
                    got = np.stack(poses[label])
                    dxy = float(np.abs(got[..., :2] - ref[..., :2]).max())
                    rows.append((name, label, *stats(times[label]),
                                 base / stats(times[label])[0], dxy))
                macs = conv_macs(fp32, h, w)
                rows.append((name, "macs", macs, 0, 0, 0, 0))
        finally:
            worker.close()
    peak, how = peak_gflops()
    print(f"\n{len(frames) - 1} frames of {VIDEO.name} ({w}x{h}), in turns; {args.threads} "
          f"threads each; ms per frame")
    print(f"{'model':<11s}{'contender':<17s}{'median':>9s}{'p95':>9s}{'p99':>9s}"
          f"{'speed-up':>10s}{'max |dxy| vs DLC-Live px':>27s}")
    for name, label, p50, p95, p99, ratio, dxy in rows:
        if label == "macs":
            continue
        # int8/bf16 of random weights: the shift says nothing (see the module docstring)
        shown = "(random weights)" if "int8" in label or "bf16" in label else f"{dxy:.2e}"
        print(f"{name:<11s}{label:<17s}{p50:9.1f}{p95:9.1f}{p99:9.1f}{ratio:9.2f}x{shown:>27s}")
    print(f"\nfp32 inference vs this CPU's peak ({how} = {peak:.0f} GFLOP/s):")
    for name, label, p50, *_ in rows:
        if label == "poseloop fp32":
            macs = next(r[2] for r in rows if r[0] == name and r[1] == "macs")
            gflops = 2 * macs / (p50 / 1e3) / 1e9
            print(f"  {name:<11s}{macs / 1e9:6.1f} GMAC/frame, {gflops:6.1f} GFLOP/s = "
                  f"{gflops / peak:.0%} of peak (whole step, {p50:.1f} ms)")


if __name__ == "__main__":
    main()
