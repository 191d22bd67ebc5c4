"""The training loop: fine-tune a PoseNet on a DeepLabCut project into a run folder.

AdamW with a linear warm-up and a cosine decay whose progress is the larger of
iterations done and time used, so a time budget still ends at a low learning rate.
Checkpoints are written periodically and on exit (also on Ctrl-C), and a run resumes
from its newest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from poseloop.config import TrainConfig, dump_yaml
from poseloop.errors import ConfigError
from poseloop.heatmap import HeatmapSpec
from poseloop.project import Project
from poseloop.training.augment import Augmenter
from poseloop.training.loss import pose_loss
from poseloop.training.model import HEAD_STRIDE, PoseNet
from poseloop.training.run import RunInfo, checkpoints, load_state, read_run

KEEP_CHECKPOINTS = 3


class BatchMaker:
    """Augmented batches with their DeepLabCut targets, from images held in memory."""

    def __init__(
        self, images: list[np.ndarray], keypoints: np.ndarray, augmenter: Augmenter,
        spec: HeatmapSpec, batch_size: int, seed: int,
    ):
        self.images, self.keypoints = images, keypoints
        self.augmenter, self.spec, self.batch_size = augmenter, spec, batch_size
        self.rng = np.random.default_rng(seed + 1)
        cw, ch = augmenter.cfg.crop_size
        self.map_hw = (ch // HEAD_STRIDE, cw // HEAD_STRIDE)

    def __call__(self) -> tuple[torch.Tensor, ...]:
        """One batch: images N x 3 x H x W, scoremap, locref targets and label weights."""
        imgs, scores, locrefs, weights = [], [], [], []
        for i in self.rng.integers(0, len(self.images), self.batch_size):
            image, kp = self.augmenter(self.images[i], self.keypoints[i])
            s, lr, w = self.spec.targets(kp, self.map_hw)
            imgs.append(image.transpose(2, 0, 1))
            scores.append(s)
            locrefs.append(lr)
            weights.append(w)
        return tuple(torch.from_numpy(np.stack(a)) for a in (imgs, scores, locrefs, weights))


def learning_rate(cfg: TrainConfig, iteration: int, elapsed_s: float) -> float:
    """Warm-up then cosine decay to 1% of the peak; progress counts time as well as steps."""
    if iteration < cfg.warmup_iterations:
        return cfg.lr * (iteration + 1) / cfg.warmup_iterations
    progress = iteration / cfg.iterations
    if cfg.max_minutes:
        progress = max(progress, elapsed_s / (cfg.max_minutes * 60))
    progress = min(progress, 1.0)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def _threads(cfg: TrainConfig) -> int:
    if cfg.threads:
        return cfg.threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plot_loss(history: pd.DataFrame, path: Path) -> None:
    """Save the loss curve (total, scoremap and locref terms) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for col in ("loss", "score_loss", "locref_loss"):
        smooth = history[col].rolling(max(1, len(history) // 50), min_periods=1).mean()
        ax.plot(history["iteration"], smooth, label=col)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prepare_run(project: Project, cfg: TrainConfig, out: Path) -> RunInfo:
    """Create a run folder with the config, project facts and a reproducible split."""
    out.mkdir(parents=True, exist_ok=True)
    if checkpoints(out) or (out / "model.pt").exists():
        raise ConfigError(f"{out}: already holds a training run; use --resume or another --out")
    split = project.split(cfg.seed, cfg.training_fraction)
    info = RunInfo(
        path=out, config=cfg, project_root=project.root, task=project.task,
        scorer=project.scorer, bodyparts=project.bodyparts, skeleton=project.skeleton,
        pcutoff=project.pcutoff, split=split,
    )
    dump_yaml(cfg, out / "train_config.yaml")
    (out / "project.json").write_text(json.dumps(info.project_json(), indent=1))
    split.save(out / "split.json")
    return info


def _save_checkpoint(info: RunInfo, model: PoseNet, opt: torch.optim.Optimizer,
                     iteration: int, elapsed_s: float) -> Path:
    folder = info.path / "checkpoints"
    folder.mkdir(exist_ok=True)
    path = folder / f"ckpt-{iteration:07d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"model": model.state_dict(), "optimizer": opt.state_dict(),
         "iteration": iteration, "elapsed_s": elapsed_s},
        tmp,
    )
    tmp.replace(path)  # never leave a half-written checkpoint behind
    for old in checkpoints(info.path)[:-KEEP_CHECKPOINTS]:
        old.unlink()
    return path


def train(project: Project, cfg: TrainConfig, out: Path, resume: bool = False,
          progress: bool = True) -> RunInfo:
    """Train (or resume) a run in ``out``; return its RunInfo when done."""
    if resume:
        info = read_run(out)
        cfg = info.config
    else:
        info = prepare_run(project, cfg, out)
    torch.set_num_threads(_threads(cfg))
    torch.manual_seed(cfg.seed)
    frames = project.subset(info.split.train)
    images = [project.load_image(f) for f in frames]
    keypoints = np.stack([f.keypoints for f in frames])
    augmenter = Augmenter(cfg.augment, info.bodyparts, seed=cfg.seed)
    batches = BatchMaker(images, keypoints, augmenter, info.spec, cfg.batch_size, cfg.seed)

    model = PoseNet(cfg.backbone, len(info.bodyparts), cfg.weights, cfg.output_stride)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, spent = 0, 0.0
    history_path = out / "loss.csv"
    if resume:
        found = checkpoints(out)
        if found:
            state = load_state(found[-1])
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start, spent = int(state["iteration"]), float(state["elapsed_s"])
    rows = pd.read_csv(history_path).to_dict("records") if resume and history_path.exists() else []
    rows = [r for r in rows if r["iteration"] <= start]

    model.train()
    t0 = time.monotonic() - spent
    budget = cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    it = start
    bar = tqdm(total=cfg.iterations, initial=start, disable=not progress, desc="train",
               unit="it", dynamic_ncols=True)
    try:
        while it < cfg.iterations and time.monotonic() - t0 < budget:
            lr = learning_rate(cfg, it, time.monotonic() - t0)
            for group in opt.param_groups:
                group["lr"] = lr
            image, score, locref, weights = batches()
            logits, pred_locref = model(image)
            loss, score_loss, locref_loss = pose_loss(
                logits, pred_locref, score, locref, weights, cfg.locref_weight
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            rows.append({"iteration": it, "loss": loss.item(), "score_loss": score_loss.item(),
                         "locref_loss": locref_loss.item(), "lr": lr,
                         "elapsed_s": round(time.monotonic() - t0, 3)})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.1e}")
            if it % cfg.checkpoint_every == 0:
                _save_checkpoint(info, model, opt, it, time.monotonic() - t0)
                pd.DataFrame(rows).to_csv(history_path, index=False)
    finally:
        bar.close()
        if it > start or not (out / "model.pt").exists():
            _save_checkpoint(info, model, opt, it, time.monotonic() - t0)
            torch.save({"model": model.state_dict(), "iteration": it}, out / "model.pt")
        if rows:
            history = pd.DataFrame(rows)
            history.to_csv(history_path, index=False)
            plot_loss(history, out / "loss.png")
    return info
