"""DeepLabCut's shuffles: one figure with error bars from K runs on K train/test splits.

A test set of a handful of frames says little on its own; K shuffles (``poseloop train
--shuffles K`` writes ``RUN/shuffle1`` … ``RUN/shuffleK``, each a whole run on its own
split) give the mean ± sd of every figure. ``evaluate`` of such a folder evaluates each
shuffle into its own ``evaluation/`` and writes ``RUN/evaluation/summary.json`` with the
shuffles' figures, their mean and sd (sample sd, n-1), and ``RUN/learning_curve.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from poseloop.errors import ModelError
from poseloop.training.diagnose import diagnosis_lines

FIGURES = ("train_rmse", "test_rmse", "train_rmse_pcutoff", "test_rmse_pcutoff")
PART_FIGURES = ("train_rmse", "test_rmse", "test_rmse_pcutoff")


def shuffle_folders(run: str | Path) -> list[Path]:
    """The shuffle runs of a multi-shuffle folder (shuffle1, shuffle2, ...), in order."""
    found = [p for p in Path(run).glob("shuffle*") if p.is_dir() and p.name[7:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[7:]))


def is_shuffles(run: str | Path) -> bool:
    """Whether ``run`` holds shuffles rather than being one run itself."""
    run = Path(run)
    return not (run / "train_config.yaml").is_file() and bool(shuffle_folders(run))


def mean_sd(values: list[float | None]) -> dict:
    """Mean, sample sd (None for fewer than two values) and n of the values given."""
    v = np.array([x for x in values if x is not None], float)
    if not v.size:
        return {"mean": None, "sd": None, "n": 0}
    sd = float(v.std(ddof=1)) if v.size > 1 else None
    return {"mean": float(v.mean()), "sd": sd, "n": int(v.size)}


def aggregate(results: list[dict]) -> dict:
    """Mean ± sd over shuffles of each overall and per-bodypart figure."""
    parts = results[0]["per_bodypart"].keys()
    return {
        **{k: mean_sd([r[k] for r in results]) for k in FIGURES},
        "per_bodypart": {
            p: {k: mean_sd([r["per_bodypart"][p][k] for r in results]) for k in PART_FIGURES}
            for p in parts
        },
    }


def evaluate_shuffles(run: str | Path, project_path: str | Path | None = None,
                      out: str | Path | None = None, plots: int = 50) -> dict:
    """Evaluate every shuffle of ``run``; return and save their figures with mean ± sd."""
    from poseloop.training.curve import plot_curves
    from poseloop.training.evaluate import evaluate

    run = Path(run)
    folders = shuffle_folders(run)
    if not folders:
        raise ModelError(f"{run}: no shuffle1, shuffle2, ... folders to evaluate")
    results = []
    for folder in folders:
        sub = Path(out) / folder.name if out else None
        results.append({"shuffle": folder.name, **evaluate(folder, project_path, sub, plots)})
    summary = {"run": str(run), "shuffles": results, **aggregate(results)}
    target = Path(out) if out else run / "evaluation"
    target.mkdir(parents=True, exist_ok=True)
    (target / "summary.json").write_text(json.dumps(summary, indent=1))
    curves = {f.name: pd.read_csv(f / "curve.csv") for f in folders
              if (f / "curve.csv").is_file()}
    if curves:
        plot_curves(curves, run / "learning_curve.png")
    return summary


def _pm(stat: dict) -> str:
    if stat["mean"] is None:
        return f"{'n/a':>13s}"
    sd = "" if stat["sd"] is None else f" ± {stat['sd']:.2f}"
    return f"{stat['mean']:6.2f}{sd:>7s}"


def format_shuffles(summary: dict) -> str:
    """Mean ± sd over shuffles, overall and per bodypart, then each shuffle's line."""
    n = len(summary["shuffles"])
    lines = [f"{n} shuffles: mean ± sd of the mean pixel error",
             f"{'':12s} {'train':>13s} {'test':>13s} {'test>=p':>13s}",
             f"{'all':12s} {_pm(summary['train_rmse'])} {_pm(summary['test_rmse'])} "
             f"{_pm(summary['test_rmse_pcutoff'])}"]
    for part, r in summary["per_bodypart"].items():
        lines.append(f"{part:12s} {_pm(r['train_rmse'])} {_pm(r['test_rmse'])} "
                     f"{_pm(r['test_rmse_pcutoff'])}")
    for r in summary["shuffles"]:
        test = "n/a" if r["test_rmse"] is None else f"{r['test_rmse']:.2f}"
        lines.append(f"{r['shuffle']}: train {r['train_rmse']:.2f}, test {test} "
                     f"({r['n_train']} train, {r['n_test']} test frames)")
        lines += [f"  {line}" for line in diagnosis_lines(r)]
    return "\n".join(lines)
