"""The training run folder: what a run saves and how a trained model is loaded back.

Layout::

    RUN/train_config.yaml   the TrainConfig used, the recipe's scale and crop filled in
    RUN/recipe.txt          what the recipe chose and from what
    RUN/project.json        project root, bodyparts, skeleton, pcutoff, task, scorer; for a
                            multi-animal project its individuals, unique bodyparts, identity
                            and the part affinity field edges
    RUN/split.json          the train/test split
    RUN/checkpoints/        ckpt-NNNNNN.pt (model + optimizer + progress), newest kept
    RUN/loss.csv, loss.png  the loss curve
    RUN/curve.csv, learning_curve.png   train/test RMSE against training minutes
    RUN/model.pt            the final weights

Checkpoints are plain dicts of tensors and numbers, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from poseloop.config import TrainConfig, load_yaml
from poseloop.errors import ModelError
from poseloop.heatmap import HeatmapSpec
from poseloop.project import Split
from poseloop.training.model import PoseNet, heatmap_spec


@dataclass
class RunInfo:
    """What a run folder says about its model and data."""

    path: Path
    config: TrainConfig
    project_root: Path
    task: str
    scorer: str
    bodyparts: list[str]
    skeleton: list[tuple[str, str]]
    pcutoff: float
    split: Split
    individuals: list[str] = field(default_factory=list)
    unique_bodyparts: list[str] = field(default_factory=list)
    paf_edges: list[tuple[str, str]] = field(default_factory=list)
    identity: bool = False

    @property
    def multi_animal(self) -> bool:
        """Whether the run trains a multi-animal network (PAFs, unique parts, identity)."""
        return bool(self.individuals)

    @property
    def channels(self) -> int:
        """Scoremap channels: the animals' bodyparts, then the unique bodyparts."""
        return len(self.bodyparts) + len(self.unique_bodyparts)

    @property
    def spec(self) -> HeatmapSpec:
        """Output geometry of the run's network."""
        return heatmap_spec(self.config.locref_stdev, self.config.pos_dist_thresh)

    def project_json(self) -> dict:
        """The project facts saved beside the model."""
        return {
            "root": str(self.project_root),
            "task": self.task,
            "scorer": self.scorer,
            "bodyparts": self.bodyparts,
            "skeleton": [list(e) for e in self.skeleton],
            "pcutoff": self.pcutoff,
            "individuals": self.individuals,
            "unique_bodyparts": self.unique_bodyparts,
            "paf_edges": [list(e) for e in self.paf_edges],
            "identity": self.identity,
        }


def checkpoints(run: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    return sorted((Path(run) / "checkpoints").glob("ckpt-*.pt"))


def read_run(run: str | Path) -> RunInfo:
    """Read a run folder's config, project facts and split."""
    run = Path(run)
    for name in ("train_config.yaml", "project.json", "split.json"):
        if not (run / name).is_file():
            raise ModelError(f"{run}: not a poseloop training run (no {name})")
    try:
        proj = json.loads((run / "project.json").read_text())
        return RunInfo(
            path=run,
            config=load_yaml(TrainConfig, run / "train_config.yaml"),
            project_root=Path(proj["root"]),
            task=str(proj["task"]),
            scorer=str(proj["scorer"]),
            bodyparts=list(proj["bodyparts"]),
            skeleton=[(a, b) for a, b in proj["skeleton"]],
            pcutoff=float(proj["pcutoff"]),
            split=Split.load(run / "split.json"),
            individuals=list(proj.get("individuals", [])),
            unique_bodyparts=list(proj.get("unique_bodyparts", [])),
            paf_edges=[(a, b) for a, b in proj.get("paf_edges", [])],
            identity=bool(proj.get("identity", False)),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{run}/project.json: unreadable ({e})") from e


def load_state(path: Path) -> dict:
    """A checkpoint or model file as a dict, loaded safely (weights_only=True)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated or foreign files raise many types
        raise ModelError(f"{path}: cannot load model weights ({e})") from e
    if not isinstance(state, dict) or "model" not in state:
        raise ModelError(f"{path}: not a poseloop checkpoint (no 'model' entry)")
    return state


def build_model(info: RunInfo, weights: str = "none") -> PoseNet:
    """A network of the run's architecture, its backbone from ``weights`` (``none``: random,
    no download; ``imagenet`` or a file: pretrained, to start training)."""
    cfg = info.config
    return PoseNet(
        cfg.backbone, info.channels, weights=weights, output_stride=cfg.output_stride,
        paf_edges=len(info.paf_edges),
        identities=len(info.individuals) if info.identity else 0,
    )


def load_model(run: str | Path) -> tuple[PoseNet, RunInfo]:
    """The run's trained network in eval mode: model.pt, else the newest checkpoint."""
    info = read_run(run)
    path = info.path / "model.pt"
    if not path.is_file():
        found = checkpoints(info.path)
        if not found:
            raise ModelError(f"{info.path}: no model.pt and no checkpoints; train first")
        path = found[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-init warning does not apply here
        model = build_model(info)
    try:
        model.load_state_dict(load_state(path)["model"])
    except RuntimeError as e:
        raise ModelError(f"{path}: weights do not fit {info.config.backbone}: {e}") from e
    return model.eval(), info
