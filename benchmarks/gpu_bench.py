"""GPU table: MobileNetV2, ResNet-50 and CSPNeXt-s at 640x480 and 320x240 on every runtime
this machine has (CPU, CUDA, CUDA + CUDA graph, CUDA fp16, TensorRT fp32 / fp16).

The models are built here with random weights (speed does not depend on them, and nothing
needs to be downloaded): MobileNetV2 trained for two steps on the synthetic project, then
exported; ResNet-50 and CSPNeXt-s as DeepLabCut 3 model files (the architectures of
``../shared/models``) imported with ``poseloop import-dlc --fp16``. Each row is
``poseloop benchmark``'s measurement: inference and capture -> pose (p50 / p95 / p99, the
camera slower than the loop) and throughput (the camera faster). Run by benchmarks/gpu.sh.

    python benchmarks/gpu_bench.py [--out runs/gpu] [--frames 300] [--providers cpu cuda ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import onnxruntime as ort
import torch

from poseloop.config import TrainConfig
from poseloop.export.dlc3 import build_dlc3
from poseloop.export.pipeline import ExportOptions, export_run, import_dlc
from poseloop.project import read_project
from poseloop.realtime.benchmark import bench_size
from poseloop.realtime.runner import RunnerConfig
from poseloop.synthetic import write_project
from poseloop.training.train import train

SIZES = ((640, 480), (320, 240))
BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]


def dlc3_config(backbone: dict, channels: int) -> dict:
    """A DeepLabCut 3 single-animal bottom-up config (backbone + one deconvolution head)."""
    head = {"channels": [channels, len(BODYPARTS)], "kernel_size": [3], "strides": [2]}
    locref = {"channels": [channels, 2 * len(BODYPARTS)], "kernel_size": [3], "strides": [2]}
    return {
        "method": "bu",
        "metadata": {"bodyparts": BODYPARTS, "individuals": ["animal"], "unique_bodyparts": []},
        "data": {"colormode": "RGB", "inference": {"normalize_images": True}},
        "model": {
            "backbone": backbone,
            "backbone_output_channels": channels,
            "heads": {"bodypart": {
                "type": "HeatmapHead",
                "heatmap_config": head,
                "locref_config": locref,
                "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": False,
                              "clip_scores": True, "location_refinement": True,
                              "locref_std": 7.2801},
            }},
        },
    }


DLC3 = {
    "resnet50": dlc3_config({"type": "ResNet", "model_name": "resnet50", "output_stride": 16,
                             "pretrained": False}, 2048),
    "cspnext_s": dlc3_config({"type": "CSPNeXt", "model_name": "cspnext_s",
                              "deepen_factor": 0.33, "widen_factor": 0.5,
                              "pretrained": False}, 512),
}


def make_models(out: Path) -> dict[str, dict[str, Path]]:
    """{model: {"fp32": path, "fp16": path}} of the three networks, built in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    models: dict[str, dict[str, Path]] = {}
    quiet = ExportOptions(fp16=True)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_project(Path(tmp) / "project", n_frames=8)
        cfg = TrainConfig(backbone="mobilenet_v2", weights="none", iterations=2,
                          curve_points=0, training_fraction=0.75)
        info = train(read_project(Path(tmp) / "project"), cfg, Path(tmp) / "run", progress=False,
                     log=lambda _: None)
        result = export_run(info.path, out / "mobilenet_v2.onnx", quiet, log=lambda _: None)
        models["mobilenet_v2"] = {"fp32": result.path, "fp16": result.fp16_path or result.path}
        for name, config in DLC3.items():
            torch.manual_seed(0)
            net, _ = build_dlc3(config, name)
            pt = Path(tmp) / f"{name}.pt"
            torch.save({"config": config, "pose": net.state_dict()}, pt)
            result = import_dlc(pt, out / f"{name}.onnx", opts=quiet, log=lambda _: None)
            models[name] = {"fp32": result.path, "fp16": result.fp16_path or result.path}
    return models


def variants(providers: list[str], cache: Path) -> dict[str, tuple[str, RunnerConfig]]:
    """label -> (model precision, runner config) for the providers asked for and present."""
    have = ort.get_available_providers()
    out: dict[str, tuple[str, RunnerConfig]] = {}
    if "cpu" in providers:
        out["CPU fp32"] = ("fp32", RunnerConfig())
    if "cuda" in providers and "CUDAExecutionProvider" in have:
        out["CUDA fp32"] = ("fp32", RunnerConfig(providers=["cuda"]))
        out["CUDA fp32 + graph"] = ("fp32", RunnerConfig(providers=["cuda"], cuda_graph=True))
        out["CUDA fp16 + graph"] = ("fp16", RunnerConfig(providers=["cuda"], cuda_graph=True))
    if "tensorrt" in providers and "TensorrtExecutionProvider" in have:
        for fp16 in (False, True):
            label = f"TensorRT {'fp16' if fp16 else 'fp32'} + graph"
            out[label] = ("fp32", RunnerConfig(providers=["tensorrt", "cuda"], cuda_graph=True,
                                               trt_fp16=fp16, trt_cache_dir=str(cache)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/gpu")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--providers", nargs="+", default=["cpu", "cuda", "tensorrt"])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet50", "cspnext_s"])
    args = ap.parse_args()
    out = Path(args.out)
    if "CUDAExecutionProvider" in ort.get_available_providers() and hasattr(ort, "preload_dlls"):
        try:  # CUDA / cuDNN from the pip packages torch brought (onnxruntime >= 1.21)
            ort.preload_dlls()
        except Exception as e:
            print(f"onnxruntime.preload_dlls: {e}", flush=True)
    models = make_models(out / "models")
    rows = []
    print(f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}",
          flush=True)
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}", flush=True)
    for name in args.models:
        for label, (precision, runner) in variants(args.providers, out / "trt-cache").items():
            for size in SIZES:
                try:
                    r = bench_size(models[name][precision], size, args.frames, None, runner)
                except Exception as e:  # one failing runtime must not hide the others
                    print(f"{name} {label} {size}: {type(e).__name__}: {e}", flush=True)
                    continue
                s = r.stages
                rows.append({"model": name, "runtime": label, **r.as_json()})
                print(f"{name:<13s}{label:<22s}{r.size:>8s}  infer "
                      f"{s['infer']['p50_ms']:7.2f} {s['infer']['p95_ms']:7.2f} "
                      f"{s['infer']['p99_ms']:7.2f}   capture->pose {s['total']['p50_ms']:7.2f} "
                      f"{s['total']['p99_ms']:7.2f}   {r.fps:7.1f} fps", flush=True)
    (out / "gpu.json").write_text(json.dumps(rows, indent=1))
    print("\n| model | runtime | size | inference p50 / p99 ms | capture→pose p50 / p99 ms "
          "| fps |\n|---|---|---|---|---|---|")
    for row in rows:
        s = row["stages"]
        print(f"| {row['model']} | {row['runtime']} | {row['size']} | "
              f"{s['infer']['p50_ms']:.2f} / {s['infer']['p99_ms']:.2f} | "
              f"{s['total']['p50_ms']:.2f} / {s['total']['p99_ms']:.2f} | {row['fps']:.0f} |")


if __name__ == "__main__":
    main()
