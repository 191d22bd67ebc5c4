"""Evaluation: pixel errors of a trained run on its train and test frames, with plots.

"RMSE" follows DeepLabCut's evaluation: for each labeled point, the Euclidean distance in
pixels between prediction and label, averaged over points; the ``pcutoff`` variant keeps
only points predicted with likelihood >= pcutoff.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from poseloop.errors import ProjectError
from poseloop.heatmap import HeatmapSpec
from poseloop.project import LabeledFrame, Project, read_project
from poseloop.realtime.types import FrameTransform
from poseloop.training.augment import resize_for_inference
from poseloop.training.diagnose import advice, diagnosis_lines, swapped_labels, weak_bodyparts
from poseloop.training.model import PoseNet
from poseloop.training.run import RunInfo, load_model


def predict(model: PoseNet, spec: HeatmapSpec, image: np.ndarray, scale: float) -> np.ndarray:
    """Pose (K x 3: x, y, likelihood) of one RGB uint8 image in its own pixel coordinates."""
    resized, sx, sy = resize_for_inference(image, scale)
    x = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1), np.float32))[None]
    with torch.inference_mode():
        logits, locref = model(x)
    pose = spec.decode_pose(logits[0].numpy(), locref[0].numpy())
    return FrameTransform(sx=sx, sy=sy).to_full(pose)


def point_errors(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Euclidean distance per frame and bodypart (N x K); NaN where unlabeled."""
    return np.sqrt(((pred[..., :2] - labels) ** 2).sum(axis=-1))


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


@dataclass
class SplitErrors:
    """Per-point errors and likelihoods of one split."""

    images: list[str]
    labels: np.ndarray  # N x K x 2
    poses: np.ndarray  # N x K x 3

    @property
    def errors(self) -> np.ndarray:
        return point_errors(self.poses, self.labels)

    def pick(self, images: list[str]) -> SplitErrors:
        """The rows of these images, in this order."""
        rows = [self.images.index(i) for i in images]
        return SplitErrors(list(images), self.labels[rows], self.poses[rows])

    def rmse(self, pcutoff: float | None = None, part: int | None = None) -> float | None:
        """Mean pixel error over labeled points (optionally confident ones / one bodypart)."""
        err = self.errors
        if pcutoff is not None:
            err = np.where(self.poses[..., 2] >= pcutoff, err, np.nan)
        if part is not None:
            err = err[:, part]
        return _mean(err)


def summarize(
    train: SplitErrors, test: SplitErrors, bodyparts: list[str], pcutoff: float
) -> dict:
    """The evaluation figures: overall and per-bodypart RMSE, all points and >= pcutoff."""
    per_part = {
        name: {
            "train_rmse": train.rmse(part=j),
            "test_rmse": test.rmse(part=j),
            "test_rmse_pcutoff": test.rmse(pcutoff, part=j),
        }
        for j, name in enumerate(bodyparts)
    }
    swaps = [
        {"split": name, **swap}
        for name, s in (("train", train), ("test", test))
        for swap in swapped_labels(s.poses, s.labels, s.images, bodyparts)
    ]
    return {
        "train_rmse": train.rmse(),
        "test_rmse": test.rmse(),
        "train_rmse_pcutoff": train.rmse(pcutoff),
        "test_rmse_pcutoff": test.rmse(pcutoff),
        "pcutoff": pcutoff,
        "n_train": len(train.images),
        "n_test": len(test.images),
        "per_bodypart": per_part,
        "weak_bodyparts": weak_bodyparts(
            {"train": train.errors, "test": test.errors},
            {"train": train.images, "test": test.images}, bodyparts, swaps,
        ),
        "swapped_labels": swaps,
    }


def _run_split(model: PoseNet, info: RunInfo, project: Project,
               frames: list[LabeledFrame]) -> SplitErrors:
    scale = info.config.augment.scale
    poses = [predict(model, info.spec, project.load_image(f), scale) for f in frames]
    k = len(info.bodyparts)
    return SplitErrors(
        images=[f.image for f in frames],
        labels=np.stack([f.keypoints for f in frames]) if frames else np.zeros((0, k, 2)),
        poses=np.stack(poses) if poses else np.zeros((0, k, 3), np.float32),
    )


def errors_table(splits: dict[str, SplitErrors], bodyparts: list[str]) -> pd.DataFrame:
    """One row per image and bodypart: label, prediction, likelihood and error."""
    rows = []
    for name, s in splits.items():
        err = s.errors
        for i, image in enumerate(s.images):
            for j, part in enumerate(bodyparts):
                rows.append({
                    "image": image, "split": name, "bodypart": part,
                    "x_label": s.labels[i, j, 0], "y_label": s.labels[i, j, 1],
                    "x_pred": s.poses[i, j, 0], "y_pred": s.poses[i, j, 1],
                    "likelihood": s.poses[i, j, 2], "error_px": err[i, j],
                })
    return pd.DataFrame(rows)


def plot_frames(project: Project, split: SplitErrors, bodyparts: list[str], pcutoff: float,
                out: Path, limit: int = 50) -> list[Path]:
    """PNGs of frames with labels (+) and predictions (o; hollow below pcutoff)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    colors = plt.get_cmap("jet")(np.linspace(0, 1, max(len(bodyparts), 2)))
    by_name = {f.image: f for f in project.frames}
    written = []
    for i, image in enumerate(split.images[:limit]):
        rgb = project.load_image(by_name[image])
        h, w = rgb.shape[:2]
        fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(rgb)
        ax.axis("off")
        for j, part in enumerate(bodyparts):
            lx, ly = split.labels[i, j]
            px, py, p = split.poses[i, j]
            c = colors[j]
            ax.plot(lx, ly, "+", color=c, ms=10, mew=2)
            face = c if p >= pcutoff else "none"
            ax.plot(px, py, "o", mec=c, mfc=face, ms=7, mew=1.5, label=f"{part} {p:.2f}")
        ax.legend(loc="upper right", fontsize=6, framealpha=0.5)
        path = out / (image.replace("/", "__").rsplit(".", 1)[0] + ".png")
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def evaluate(run: str | Path, project_path: str | Path | None = None,
             out: str | Path | None = None, plots: int = 50) -> dict:
    """Evaluate a run; write errors.csv, summary.json and test-frame PNGs; return figures.

    A folder of shuffles (``poseloop train --shuffles K``) is evaluated shuffle by shuffle,
    with the mean and sd over them (see poseloop.training.shuffles).
    """
    from poseloop.training.shuffles import evaluate_shuffles, is_shuffles

    if is_shuffles(run):
        return evaluate_shuffles(run, project_path, out, plots)
    model, info = load_model(run)
    other, root = False, info.project_root
    if project_path is not None and Path(project_path).resolve() != info.project_root:
        other, root = True, project_path
    project = read_project(root)
    if project.bodyparts != info.bodyparts:
        raise ProjectError(
            f"{project.root}: bodyparts {project.bodyparts} differ from the model's "
            f"{info.bodyparts}"
        )
    if other:  # another project's frames are all unseen: they are the test set
        train_frames, test_frames = [], project.frames
    else:
        train_frames = project.subset(info.split.train)
        test_frames = project.subset(info.split.test)
    out = Path(out) if out else info.path / "evaluation"
    if info.multi_animal:
        from poseloop.export.onnx_export import run_spec
        from poseloop.training.multi_evaluate import evaluate_multi

        result = evaluate_multi(model, info, run_spec(info), project, train_frames,
                                test_frames, out, plots)
        result["run"] = str(info.path)
        result["project"] = str(project.root)
        (out / "summary.json").write_text(json.dumps(result, indent=1))
        return result
    train = _run_split(model, info, project, train_frames)
    test = _run_split(model, info, project, test_frames)
    result = summarize(train, test, info.bodyparts, info.pcutoff)
    result["run"] = str(info.path)
    result["project"] = str(project.root)
    out.mkdir(parents=True, exist_ok=True)
    errors_table({"train": train, "test": test}, info.bodyparts).to_csv(
        out / "errors.csv", index=False
    )
    shown = test if test.images else train
    plot_frames(project, shown, info.bodyparts, info.pcutoff, out / "frames", plots)
    splits = {"train": train, "test": test}
    for weak in result["weak_bodyparts"]:
        folder = out / "worst" / weak["bodypart"]
        for name, split in splits.items():
            mine = [w["image"] for w in weak["worst"] if w["split"] == name]
            plot_frames(project, split.pick(mine), info.bodyparts, info.pcutoff, folder)
        weak["advice"] = advice(weak, str(folder))
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    return result


def format_summary(result: dict) -> str:
    """A plain-text table of the evaluation figures, then any weak bodypart's advice."""
    if "shuffles" in result:
        from poseloop.training.shuffles import format_shuffles

        return format_shuffles(result)

    def f(v: float | None) -> str:
        return "   n/a" if v is None else f"{v:6.2f}"

    lines = [
        f"frames: {result['n_train']} train, {result['n_test']} test; "
        f"pcutoff {result['pcutoff']}",
        f"{'':12s} {'train':>6s} {'test':>6s} {'test>=p':>7s}  (mean pixel error)",
        f"{'all':12s} {f(result['train_rmse'])} {f(result['test_rmse'])} "
        f"{f(result['test_rmse_pcutoff'])}",
    ]
    for part, r in result["per_bodypart"].items():
        lines.append(f"{part:12s} {f(r['train_rmse'])} {f(r['test_rmse'])} "
                     f"{f(r['test_rmse_pcutoff'])}")
    if result.get("multi_animal"):
        lines.insert(1, "animals matched to labels by mean keypoint distance")
        lines += [f"{'mAP (OKS)':12s} {f(result['train_map'])} {f(result['test_map'])}",
                  f"{'found':12s} {f(result['train_found'])} {f(result['test_found'])}"
                  f"  (fraction of labeled animals matched with OKS >= 0.5)"]
    lines += [f"\n{line}" for line in diagnosis_lines(result)]
    return "\n".join(lines)
