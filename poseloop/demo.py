"""``poseloop demo``: the whole training path on an embedded synthetic project.

Needs no camera and no downloaded data: it renders a small DeepLabCut project of a moving
animal-like shape with known bodyparts, trains a small network on it within a time budget
(random init, since no pretrained file can be assumed), evaluates it and prints the errors.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from poseloop.config import AugmentConfig, TrainConfig

#: Settings that learn the synthetic scene in about a minute on two CPU cores.
DEMO_TRAIN = TrainConfig(
    backbone="mobilenet_v2_0.35",
    weights="none",
    iterations=100_000,
    batch_size=8,
    lr=2e-3,
    warmup_iterations=30,
    checkpoint_every=1000,
    augment=AugmentConfig(
        crop_size=(160, 160), global_scale=1.0, scale_range=0.15, rotation=30.0,
        hflip=True, noise_std=3.0,
    ),
)


def train_synthetic(out: Path, seconds: float, frames: int = 150) -> Path:
    """Render the synthetic project into ``out/project``, train ``out/run``, evaluate it.

    Returns the run folder; prints the evaluation table.
    """
    from poseloop.project import read_project
    from poseloop.synthetic import write_project
    from poseloop.training.evaluate import evaluate, format_summary
    from poseloop.training.train import train

    project_dir, run_dir = out / "project", out / "run"
    for d in (project_dir, run_dir):
        if d.exists():
            shutil.rmtree(d)
    print(f"rendering a synthetic DeepLabCut project ({frames} frames) in {project_dir}")
    write_project(project_dir, n_frames=frames)
    project = read_project(project_dir)
    cfg = DEMO_TRAIN.model_copy(update={"max_minutes": seconds / 60.0})
    print(f"training {cfg.backbone} from scratch for {seconds:.0f} s -> {run_dir}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random init is the demo's choice, not a mistake
        train(project, cfg, run_dir)
    result = evaluate(run_dir, plots=10)
    print("evaluation on held-out frames:")
    print(format_summary(result))
    return run_dir
