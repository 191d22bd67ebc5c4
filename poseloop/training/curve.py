"""The learning curve: train and test RMSE measured while a run trains, against minutes.

A run measures itself ``curve_points`` times, evenly over its budget (steps or minutes),
on all of its test frames and on up to CURVE_TRAIN_FRAMES of its training frames, and
writes ``curve.csv`` and ``learning_curve.png``. The minutes are training minutes: the time
spent measuring is left out, so a curve reads the same with or without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from poseloop.training.evaluate import SplitErrors, predict
from poseloop.training.model import PoseNet
from poseloop.training.run import RunInfo

CURVE_TRAIN_FRAMES = 20


@dataclass
class Frames:
    """Images held in memory with their labels (frames x K x 2; multi-animal: frames x N x
    K x 2)."""

    images: list[np.ndarray]
    labels: np.ndarray

    def rmse(self, model: PoseNet, info: RunInfo) -> float | None:
        """Mean pixel error of the model over these frames' labeled points (multi-animal:
        over the labeled animals matched to predicted ones, as evaluation does)."""
        if not self.images:
            return None
        if info.multi_animal:
            from poseloop.training.multi_evaluate import matched_rmse

            return matched_rmse(model, info, self.images, self.labels)
        poses = np.stack([predict(model, info.spec, im, info.config.augment.scale)
                          for im in self.images])
        return SplitErrors([], self.labels, poses).rmse()


@dataclass
class LearningCurve:
    """Measures a training run now and then; the rows become curve.csv."""

    info: RunInfo
    train: Frames
    test: Frames
    points: int
    rows: list[dict] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.info.path / "curve.csv"

    def resumed(self) -> LearningCurve:
        """The same curve with the rows an earlier part of the run wrote."""
        if self.path.is_file():
            self.rows = pd.read_csv(self.path).to_dict("records")
        return self

    def due(self, fraction: float) -> bool:
        """Whether the run, ``fraction`` done, has reached its next measuring point."""
        done = math.floor(self.rows[-1]["fraction"] * self.points + 1e-9) if self.rows else 0
        return fraction * self.points >= done + 1 - 1e-9

    def measure(self, model: PoseNet, iteration: int, minutes: float, fraction: float) -> None:
        """Evaluate the model (in eval mode, restored after) and append a row."""
        was_training = model.training
        model.eval()
        try:
            row = {"iteration": iteration, "minutes": round(minutes, 3),
                   "train_rmse": self.train.rmse(model, self.info),
                   "test_rmse": self.test.rmse(model, self.info), "fraction": fraction}
        finally:
            model.train(was_training)
        self.rows.append(row)

    def save(self) -> None:
        """Write curve.csv and learning_curve.png (nothing when never measured)."""
        if not self.rows:
            return
        table = pd.DataFrame(self.rows)
        table.to_csv(self.path, index=False)
        plot_curves({"": table}, self.info.path / "learning_curve.png")


def training_frames(images: list[np.ndarray], labels: np.ndarray) -> Frames:
    """Up to CURVE_TRAIN_FRAMES of the training frames, evenly spread, for the curve."""
    pick = np.unique(np.linspace(0, len(images) - 1, CURVE_TRAIN_FRAMES).round().astype(int))
    pick = pick[pick < len(images)]
    return Frames([images[i] for i in pick], labels[pick])


def plot_curves(curves: dict[str, pd.DataFrame], path: Path) -> None:
    """Test (solid) and train (dashed) RMSE against training minutes, one colour a run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = plt.get_cmap("tab10")
    for i, (name, table) in enumerate(curves.items()):
        c = colours(i % 10)
        label = f"{name} " if name else ""
        if table["test_rmse"].notna().any():
            ax.plot(table["minutes"], table["test_rmse"], "-o", ms=3, color=c,
                    label=f"{label}test")
        ax.plot(table["minutes"], table["train_rmse"], "--", color=c, label=f"{label}train")
    ax.set_yscale("log")
    ax.set_xlabel("training minutes")
    ax.set_ylabel("RMSE (px)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
