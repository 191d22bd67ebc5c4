"""The training loop: fine-tune a PoseNet on a DeepLabCut project into a run folder.

The recipe (poseloop.training.recipe) fixes scale and crop from the project first. AdamW
with a linear warm-up and a cosine decay whose progress is the larger of iterations done
and training time used, so a time budget alone ends at a low learning rate whatever the
step rate. The learning curve (poseloop.training.curve) is measured along the way.
Checkpoints are written periodically and on exit (also on Ctrl-C), and a run resumes
from its newest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from poseloop.config import TrainConfig, dump_yaml
from poseloop.errors import ConfigError
from poseloop.project import Project, Split
from poseloop.training import recipe
from poseloop.training.augment import Augmenter
from poseloop.training.curve import Frames, LearningCurve, training_frames
from poseloop.training.loss import identity_loss, paf_loss, pose_loss
from poseloop.training.model import HEAD_STRIDE, PoseNet
from poseloop.training.multi_targets import MultiTargets, paf_graph
from poseloop.training.recipe import LabelGeometry
from poseloop.training.run import RunInfo, build_model, checkpoints, load_state, read_run

KEEP_CHECKPOINTS = 3
#: The most of a time budget that warm-up may take.
WARMUP_SHARE = 0.05


class BatchMaker:
    """Augmented batches with their DeepLabCut targets, from images held in memory.

    keypoints: per image its joints (K x 2; multi-animal: every animal's bodyparts, then
    the unique ones). targets: joints, map size -> the target arrays of one image
    (``HeatmapSpec.targets``, or :class:`MultiTargets` for multi-animal networks).
    """

    def __init__(
        self, images: list[np.ndarray], keypoints: np.ndarray, augmenter: Augmenter,
        targets: Callable[[np.ndarray, tuple[int, int]], tuple[np.ndarray, ...]],
        batch_size: int, seed: int,
    ):
        self.images, self.keypoints = images, keypoints
        self.augmenter, self.targets, self.batch_size = augmenter, targets, batch_size
        self.rng = np.random.default_rng(seed + 1)
        cw, ch = augmenter.cfg.crop
        self.map_hw = (ch // HEAD_STRIDE, cw // HEAD_STRIDE)

    def __call__(self) -> tuple[torch.Tensor, ...]:
        """One batch: images B x 3 x H x W, then each target stacked (scoremap, locref,
        label weights[, PAFs, PAF weights[, identity]])."""
        columns: list[list[np.ndarray]] = []
        for i in self.rng.integers(0, len(self.images), self.batch_size):
            image, kp = self.augmenter(self.images[i], self.keypoints[i])
            row = (image.transpose(2, 0, 1), *self.targets(kp, self.map_hw))
            columns = columns or [[] for _ in row]
            for column, a in zip(columns, row, strict=True):
                column.append(a)
        return tuple(torch.from_numpy(np.stack(a)) for a in columns)


def learning_rate(cfg: TrainConfig, iteration: int, elapsed_s: float) -> float:
    """Warm-up then cosine decay to 1% of the peak; progress counts time as well as steps.

    Warm-up ends after ``warmup_iterations`` or WARMUP_SHARE of the time budget, whichever
    comes first, so a slow step rate cannot spend the budget warming up.
    """
    if cfg.warmup_iterations:
        warm = max((iteration + 1) / cfg.warmup_iterations,
                   elapsed_s / (WARMUP_SHARE * cfg.budget_s))
        if warm < 1:
            return cfg.lr * warm
    done = fraction_done(cfg, iteration, elapsed_s)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * done)))


def fraction_done(cfg: TrainConfig, iteration: int, elapsed_s: float) -> float:
    """How far a run is, 0..1: the larger of steps done and training time used."""
    return min(max(iteration / cfg.step_limit, elapsed_s / cfg.budget_s), 1.0)


#: Backbones whose training step bf16 autocast speeds up on a CPU with bf16 units, measured
#: on a 2-core AVX-512/AMX CPU (benchmarks/train_speed.py): ResNet-50 2.5x; MobileNetV2
#: 1.02x, EfficientNet-B0 0.84x. Channels-last layout gained nothing (0.96-1.01x).
BF16 = frozenset({"resnet50"})


def use_bf16(cfg: TrainConfig) -> bool:
    """Whether to train under bf16 autocast: asked for, or 'auto' where it is measured to
    help (BF16) on a CPU with bf16 units."""
    if cfg.precision == "auto":
        return cfg.backbone in BF16 and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return cfg.precision == "bf16"


def train_step(model: PoseNet, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...],
               cfg: TrainConfig, bf16: bool) -> tuple[torch.Tensor, ...]:
    """One optimizer step on a batch, under bf16 autocast if asked; returns the losses
    (total, scoremap, locref; the total includes the PAF and identity terms)."""
    image, score, locref, weights = batch[:4]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        outputs = model(image)
    loss, score_loss, locref_loss = pose_loss(
        outputs[0].float(), outputs[1].float(), score, locref, weights, cfg.locref_weight
    )
    if len(batch) > 4:  # multi-animal: part affinity fields, then identity
        loss = loss + cfg.paf_weight * paf_loss(outputs[2].float(), batch[4], batch[5])
    if len(batch) > 6:
        loss = loss + cfg.identity_weight * identity_loss(outputs[3].float(), batch[6])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, score_loss, locref_loss


def threads(cfg: TrainConfig) -> int:
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


def prepare_run(project: Project, cfg: TrainConfig, out: Path,
                data: tuple[list[np.ndarray], np.ndarray] | None = None) -> RunInfo:
    """Create a run folder: the config with its recipe resolved, project facts, the split.

    ``data`` is the split's training images and labels, if already loaded (the recipe
    reads them); they are loaded otherwise.
    """
    if checkpoints(out) or (out / "model.pt").exists():
        raise ConfigError(f"{out}: already holds a training run; use --resume or another --out")
    split = project.split(cfg.seed, cfg.training_fraction)
    images, joints = data or _training_data(project, split)
    sizes = [im.shape[1::-1] for im in images]
    animals = _animals(project, joints)  # one row per labeled animal: the recipe's unit
    per_animal = len(animals) // max(len(images), 1)
    chosen = recipe.choose(
        cfg, LabelGeometry.measure(animals, [s for s in sizes for _ in range(per_animal)])
    )
    cfg = recipe.resolve(cfg, chosen)
    out.mkdir(parents=True, exist_ok=True)
    info = RunInfo(
        path=out, config=cfg, project_root=project.root, task=project.task,
        scorer=project.scorer, bodyparts=project.bodyparts, skeleton=project.skeleton,
        pcutoff=project.pcutoff, split=split,
        individuals=list(project.individuals), unique_bodyparts=list(project.unique_bodyparts),
        paf_edges=paf_graph(project.bodyparts, project.skeleton, animals)
        if project.multi_animal else [],
        identity=project.identity,
    )
    dump_yaml(cfg, out / "train_config.yaml")
    (out / "project.json").write_text(json.dumps(info.project_json(), indent=1))
    (out / "recipe.txt").write_text(chosen.describe() + "\n")
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


def _training_data(project: Project, split: Split) -> tuple[list[np.ndarray], np.ndarray]:
    """The split's training images (RGB) and their labels, frames x J x 2 joints (J = K, or
    every animal's K bodyparts then the unique ones)."""
    frames = project.subset(split.train)
    return [project.load_image(f) for f in frames], np.stack([f.joints for f in frames])


def _animals(project: Project, joints: np.ndarray) -> np.ndarray:
    """The labels as one K x 2 row per animal (frames x N, each frame's animals in turn)."""
    n, k = max(len(project.individuals), 1), len(project.bodyparts)
    return joints[:, : n * k].reshape(-1, k, 2)


def target_maker(info: RunInfo) -> Callable[[np.ndarray, tuple[int, int]], tuple]:
    """The targets of the run's network for one image's joints."""
    if not info.multi_animal:
        return info.spec.targets
    index = {p: i for i, p in enumerate(info.bodyparts)}
    return MultiTargets(
        info.spec, len(info.individuals), len(info.bodyparts), len(info.unique_bodyparts),
        tuple((index[a], index[b]) for a, b in info.paf_edges), info.config.paf_width,
        info.identity,
    )


def _test_frames(project: Project, info: RunInfo) -> Frames:
    frames = project.subset(info.split.test)
    k = len(info.bodyparts)
    return Frames([project.load_image(f) for f in frames],
                  np.stack([f.keypoints for f in frames]) if frames else np.zeros((0, k, 2)))


def train(project: Project, cfg: TrainConfig, out: Path, resume: bool = False,
          progress: bool = True, log: Callable[[str], None] | None = None) -> RunInfo:
    """Train (or resume) a run in ``out``; return its RunInfo when done.

    ``log`` receives the recipe line (scale and crop, and what they were chosen from).
    """
    resumed = read_run(out) if resume else None
    split = resumed.split if resumed else project.split(cfg.seed, cfg.training_fraction)
    images, keypoints = _training_data(project, split)
    info = resumed or prepare_run(project, cfg, out, (images, keypoints))
    cfg = info.config
    if log and (out / "recipe.txt").is_file():
        log((out / "recipe.txt").read_text().strip())
    torch.set_num_threads(threads(cfg))
    torch.manual_seed(cfg.seed)
    augmenter = Augmenter(cfg.augment, info.bodyparts, seed=cfg.seed,
                          individuals=len(info.individuals), unique=info.unique_bodyparts)
    maker = BatchMaker(images, keypoints, augmenter, target_maker(info), cfg.batch_size,
                       cfg.seed)
    labels = _animals(project, keypoints).reshape(len(images), -1, len(info.bodyparts), 2) \
        if info.multi_animal else keypoints
    curve = LearningCurve(info, training_frames(images, labels), _test_frames(project, info),
                          cfg.curve_points) if cfg.curve_points else None

    model = build_model(info, cfg.weights)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    bf16 = use_bf16(cfg)
    start, spent = 0, 0.0
    history_path = out / "loss.csv"
    if resume:
        found = checkpoints(out)
        if found:
            state = load_state(found[-1])
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start, spent = int(state["iteration"]), float(state["elapsed_s"])
        if curve:
            curve.resumed()
    rows = pd.read_csv(history_path).to_dict("records") if resume and history_path.exists() else []
    rows = [r for r in rows if r["iteration"] <= start]

    model.train()
    t0 = time.monotonic() - spent  # training time: measuring the curve is left out
    budget = cfg.budget_s
    it = start
    limit = cfg.step_limit
    bar = tqdm(total=None if math.isinf(limit) else int(limit), initial=start,
               disable=not progress, desc="train", unit="it", dynamic_ncols=True)
    try:
        while it < limit and time.monotonic() - t0 < budget:
            lr = learning_rate(cfg, it, time.monotonic() - t0)
            for group in opt.param_groups:
                group["lr"] = lr
            loss, score_loss, locref_loss = train_step(model, opt, maker(), cfg, bf16)
            it += 1
            elapsed = time.monotonic() - t0
            rows.append({"iteration": it, "loss": loss.item(), "score_loss": score_loss.item(),
                         "locref_loss": locref_loss.item(), "lr": lr,
                         "elapsed_s": round(elapsed, 3)})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.1e}")
            done = fraction_done(cfg, it, elapsed)
            if curve and curve.due(done) and done < 1:
                measured = time.monotonic()
                curve.measure(model, it, elapsed / 60, done)
                curve.save()  # a run stopped early keeps its curve so far
                t0 += time.monotonic() - measured
            if it % cfg.checkpoint_every == 0:
                _save_checkpoint(info, model, opt, it, time.monotonic() - t0)
                pd.DataFrame(rows).to_csv(history_path, index=False)
    finally:
        bar.close()
        elapsed = time.monotonic() - t0
        if it > start or not (out / "model.pt").exists():
            _save_checkpoint(info, model, opt, it, elapsed)
            torch.save({"model": model.state_dict(), "iteration": it}, out / "model.pt")
        if rows:
            history = pd.DataFrame(rows)
            history.to_csv(history_path, index=False)
            plot_loss(history, out / "loss.png")
        if curve and it > start:
            curve.measure(model, it, elapsed / 60, fraction_done(cfg, it, elapsed))
            curve.save()
    return info


def train_shuffles(project: Project, cfg: TrainConfig, out: Path, shuffles: int,
                   resume: bool = False, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> list[RunInfo]:
    """DeepLabCut's shuffles: K runs on K splits, ``out/shuffleK`` with seed ``seed + K - 1``.

    Each shuffle is a whole run (split, recipe, training, curve); with ``resume`` the
    existing ones continue and missing ones start.
    """
    if shuffles < 1:
        raise ConfigError(f"--shuffles must be 1 or more, got {shuffles}")
    infos = []
    for k in range(1, shuffles + 1):
        folder = out / f"shuffle{k}"
        again = resume and (folder / "train_config.yaml").is_file()
        if log:
            log(f"shuffle {k}/{shuffles} -> {folder}")
        infos.append(train(project, cfg.model_copy(update={"seed": cfg.seed + k - 1}), folder,
                           resume=again, progress=progress, log=log))
    return infos
