"""``poseloop demo``: the whole closed loop on an embedded synthetic scene.

Needs no camera and no downloaded data. The first time, it renders a small DeepLabCut
project of a moving animal-like shape with known bodyparts, trains a small network on it
(random init: no pretrained file can be assumed), evaluates and exports it; the model is
cached. Then it runs that model live on the synthetic camera with a posture rule driving an
emulated serial device and every pose streamed over ZeroMQ, and prints the latency table.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from poseloop.config import AugmentConfig, TrainConfig

#: Steps of the demo's training run.
DEMO_STEPS = 600
#: Settings that learn the synthetic scene in a minute or two on two idle CPU cores. A step
#: count, not a time budget, so the model is as good on a busy machine (only slower).
DEMO_TRAIN = TrainConfig(
    backbone="mobilenet_v2_0.35",
    weights="none",
    iterations=DEMO_STEPS,
    batch_size=8,
    lr=2e-3,
    warmup_iterations=30,
    checkpoint_every=1000,
    augment=AugmentConfig(
        crop_size=(160, 160), global_scale=1.0, scale_range=0.15, rotation=30.0,
        hflip=True, noise_std=3.0,
    ),
)


def train_synthetic(out: Path, iterations: int = DEMO_STEPS,
                    frames: int = 150) -> Path:
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
    cfg = DEMO_TRAIN.model_copy(update={"iterations": iterations})
    print(f"training {cfg.backbone} from scratch for {iterations} steps -> {run_dir}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random init is the demo's choice, not a mistake
        train(project, cfg, run_dir)
    result = evaluate(run_dir, plots=10)
    print("evaluation on held-out frames:")
    print(format_summary(result))
    return run_dir


def run_demo(out: Path, seconds: float = 10.0, fps: float = 100.0) -> None:
    """Build (once) the synthetic model, then run the closed loop for ``seconds``."""
    from poseloop.closed_loop import format_report, run_closed_loop
    from poseloop.synthetic_model import synthetic_model

    model = synthetic_model()
    print(f"model: {model}")
    print(f"running the closed loop for {seconds:.0f} s: synthetic camera at {fps:.0f} fps -> "
          "ONNX Runtime -> numba decoder -> rule 'snout in the left third' -> PULSE on an "
          "emulated serial device; every pose -> ZeroMQ subscriber; recording to "
          f"{out / 'session'}")
    report = run_closed_loop(model, frames=int(seconds * fps), fps=fps,
                             record_dir=out / "session")
    print(format_report(report))
