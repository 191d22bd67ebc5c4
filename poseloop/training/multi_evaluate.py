"""Evaluation of a multi-animal run: matched pixel errors, mAP over OKS, animals found.

Per frame the predicted animals (decoded and assembled exactly as live, by
:class:`~poseloop.realtime.multi_decoder.MultiAnimalDecoder`) are matched to the labeled
ones by optimal assignment on the mean distance of their shared keypoints. Then:

- ``train_rmse`` / ``test_rmse``: DeepLabCut's "RMSE" (mean Euclidean distance) over the
  labeled keypoints of matched animals; ``*_pcutoff`` over those predicted >= pcutoff.
- ``test_map``: COCO-style mean average precision over OKS thresholds 0.50:0.05:0.95,
  with DeepLabCut's OKS (sigma 0.1 for every keypoint, the labels' bounding box as area),
  predictions ranked by their mean likelihood.
- ``test_found``: the fraction of labeled animals matched with OKS >= 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from poseloop.modelspec import ModelSpec
from poseloop.project import LabeledFrame, Project
from poseloop.realtime.multi_decoder import MultiAnimalDecoder
from poseloop.realtime.types import FrameTransform
from poseloop.training.augment import resize_for_inference
from poseloop.training.diagnose import advice, swapped_labels, weak_bodyparts
from poseloop.training.model import PoseNet
from poseloop.training.run import RunInfo

#: DeepLabCut's keypoint sigma for OKS.
OKS_SIGMA = 0.1
OKS_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
#: OKS a labeled animal's match needs to count as found.
FOUND_OKS = 0.5


def predict_animals(model: PoseNet, decoder: MultiAnimalDecoder, image: np.ndarray,
                    scale: float) -> np.ndarray:
    """Animals (N x K x 3, strongest first; NaN rows where fewer) of one RGB image."""
    resized, sx, sy = resize_for_inference(image, scale)
    x = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1), np.float32))[None]
    with torch.inference_mode():
        outputs = [o.numpy() for o in model(x)]
    out = np.zeros(decoder.shape, np.float32)
    decoder.decode(outputs, out)
    return FrameTransform(sx=sx, sy=sy).to_full(out)


def match(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each labeled animal the row of ``pred`` matched to it (-1: none), by optimal
    assignment on the mean distance of keypoints both have."""
    n_gt, n_pred = len(labels), len(pred)
    cost = np.full((n_gt, n_pred), 1e9)
    for g in range(n_gt):
        for p in range(n_pred):
            d = np.sqrt(((pred[p, :, :2] - labels[g]) ** 2).sum(-1))
            if np.isfinite(d).any():
                cost[g, p] = np.nanmean(d)
    rows, cols = linear_sum_assignment(cost)
    order = np.full(n_gt, -1)
    for g, p in zip(rows, cols, strict=True):
        if cost[g, p] < 1e9:
            order[g] = p
    return order


def matched_to(pred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` (N x K x 3) reordered so row g is the animal matched to labeled animal g
    (``labels``: N x K x >= 2; unmatched rows NaN), and the match (:func:`match`)."""
    order = match(pred, labels[..., :2])
    rows = np.full(pred.shape, np.nan, np.float32)
    for g, p in enumerate(order):
        if p >= 0:
            rows[g] = pred[p]
    return rows, order


def oks(pred: np.ndarray, label: np.ndarray, sigma: float = OKS_SIGMA) -> float:
    """Object keypoint similarity of one predicted animal (K x 3) to one labeled (K x 2)."""
    seen = np.isfinite(label).all(-1)
    if not seen.any():
        return np.nan
    lo, hi = label[seen].min(0), label[seen].max(0)
    area = max(float(np.prod(hi - lo)), 1.0)
    d2 = ((pred[seen, :2] - label[seen]) ** 2).sum(-1)
    similarity = np.exp(-d2 / (2 * area * (2 * sigma) ** 2))
    return float(np.where(np.isfinite(similarity), similarity, 0.0).mean())


def mean_average_precision(preds: list[np.ndarray], labels: list[np.ndarray]) -> float | None:
    """COCO-style mAP over OKS_THRESHOLDS (101-point interpolated precision)."""
    gt_total = sum(int(np.isfinite(lab).all(-1).any(-1).sum()) for lab in labels)
    if gt_total == 0:
        return None
    aps = []
    for t in OKS_THRESHOLDS:
        scored = []  # (score, true positive)
        for pred, lab in zip(preds, labels, strict=True):
            present = [p for p in range(len(pred)) if np.isfinite(pred[p, :, 0]).any()]
            present.sort(key=lambda p: -_score(pred[p]))
            taken: set[int] = set()
            for p in present:
                best, best_g = t, -1
                for g in range(len(lab)):
                    if g in taken:
                        continue
                    s = oks(pred[p], lab[g])
                    if np.isfinite(s) and s >= best:
                        best, best_g = s, g
                if best_g >= 0:
                    taken.add(best_g)
                scored.append((_score(pred[p]), best_g >= 0))
        scored.sort(key=lambda s: -s[0])
        tp = np.cumsum([s[1] for s in scored])
        recall = tp / gt_total
        precision = tp / np.arange(1, len(scored) + 1)
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(scored) else precision
        points = np.linspace(0, 1, 101)
        at = np.searchsorted(recall, points, side="left")
        padded = np.append(np.asarray(precision, np.float64), 0.0)  # beyond the last recall
        aps.append(float(padded[np.minimum(at, len(padded) - 1)].mean()))
    return float(np.mean(aps))


def _score(animal: np.ndarray) -> float:
    return float(np.nanmean(np.where(np.isfinite(animal[:, 0]), animal[:, 2], np.nan)))


def _split(model: PoseNet, decoder: MultiAnimalDecoder, info: RunInfo, project: Project,
           frames: list[LabeledFrame]) -> dict:
    """Predictions, matched predictions and labels of one split."""
    raw, matched, labels, found = [], [], [], []
    for f in frames:
        pred = predict_animals(model, decoder, project.load_image(f), info.config.augment.scale)
        rows, order = matched_to(pred, f.keypoints)
        labeled = np.asarray(np.isfinite(f.keypoints).all(-1).any(-1), bool)
        found += [bool(order[g] >= 0 and oks(rows[g], f.keypoints[g]) >= FOUND_OKS)
                  for g in range(len(order)) if labeled[g]]
        raw.append(pred)
        matched.append(rows)
        labels.append(f.keypoints)
    n, k = len(info.individuals), len(info.bodyparts)
    return {
        "images": [f.image for f in frames],
        "raw": raw,
        "poses": np.stack(matched) if matched else np.zeros((0, n, k, 3), np.float32),
        "labels": np.stack(labels) if labels else np.zeros((0, n, k, 2), np.float32),
        "found": found,
    }


def matched_rmse(model: PoseNet, info: RunInfo, images: list[np.ndarray],
                 labels: np.ndarray) -> float | None:
    """The matched RMSE of RGB images with labels (frames x N x K x 2): the learning curve's."""
    from poseloop.export.onnx_export import run_spec

    decoder = MultiAnimalDecoder(run_spec(info))
    matched = []
    for image, label in zip(images, labels, strict=True):
        pred = predict_animals(model, decoder, image, info.config.augment.scale)
        matched.append(matched_to(pred, label)[0])
    return _rmse({"poses": np.stack(matched), "labels": labels})


def _rmse(split: dict, pcutoff: float | None = None, part: int | None = None) -> float | None:
    err = np.sqrt(((split["poses"][..., :2] - split["labels"]) ** 2).sum(-1))
    if pcutoff is not None:
        err = np.where(split["poses"][..., 2] >= pcutoff, err, np.nan)
    if part is not None:
        err = err[..., part]
    err = err[np.isfinite(err)]
    return float(err.mean()) if err.size else None


def evaluate_multi(model: PoseNet, info: RunInfo, spec: ModelSpec, project: Project,
                   train_frames: list[LabeledFrame], test_frames: list[LabeledFrame],
                   out: Path, plots: int) -> dict:
    """The multi-animal figures (module docstring); writes summary.json and test plots."""
    decoder = MultiAnimalDecoder(spec)
    train = _split(model, decoder, info, project, train_frames)
    test = _split(model, decoder, info, project, test_frames)
    p = info.pcutoff
    result = {
        "multi_animal": True,
        "individuals": info.individuals,
        "train_rmse": _rmse(train), "test_rmse": _rmse(test),
        "train_rmse_pcutoff": _rmse(train, p), "test_rmse_pcutoff": _rmse(test, p),
        "train_map": mean_average_precision(train["raw"], list(train["labels"])),
        "test_map": mean_average_precision(test["raw"], list(test["labels"])),
        "train_found": float(np.mean(train["found"])) if train["found"] else None,
        "test_found": float(np.mean(test["found"])) if test["found"] else None,
        "pcutoff": p, "n_train": len(train_frames), "n_test": len(test_frames),
        "per_bodypart": {
            name: {"train_rmse": _rmse(train, part=j), "test_rmse": _rmse(test, part=j),
                   "test_rmse_pcutoff": _rmse(test, p, part=j)}
            for j, name in enumerate(info.bodyparts)
        },
    }
    result.update(diagnose(train, test, info, project, out))
    out.mkdir(parents=True, exist_ok=True)
    shown = test if test["images"] else train
    plot_animals(project, shown, info, out / "frames", plots)
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    return result


def _per_animal(split: dict, individuals: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A split's matched animals as rows: names ``image (animal)``, poses, labels."""
    names = [f"{image} ({animal})" for image in split["images"] for animal in individuals]
    k = split["labels"].shape[-2]
    return names, split["poses"].reshape(-1, k, 3), split["labels"].reshape(-1, k, 2)


def diagnose(train: dict, test: dict, info: RunInfo, project: Project, out: Path) -> dict:
    """Weak bodyparts and swapped labels as for one animal, each labeled animal a row; the
    weak parts' worst frames drawn in ``out/worst/<bodypart>/``."""
    rows = {name: _per_animal(split, info.individuals)
            for name, split in (("train", train), ("test", test))}
    swaps = [{"split": name, **swap} for name, (names, poses, labels) in rows.items()
             for swap in swapped_labels(poses, labels, names, info.bodyparts)]
    errors = {name: np.sqrt(((poses[..., :2] - labels) ** 2).sum(-1))
              for name, (_, poses, labels) in rows.items()}
    weak = weak_bodyparts(errors, {name: r[0] for name, r in rows.items()}, info.bodyparts,
                          swaps)
    splits = {"train": train, "test": test}
    for part in weak:
        folder = out / "worst" / part["bodypart"]
        for name, split in splits.items():
            mine = {w["image"].rsplit(" (", 1)[0] for w in part["worst"] if w["split"] == name}
            pick = [i for i, image in enumerate(split["images"]) if image in mine]
            if pick:
                sub = {"images": [split["images"][i] for i in pick],
                       "poses": split["poses"][pick], "labels": split["labels"][pick]}
                plot_animals(project, sub, info, folder)
        part["advice"] = advice(part, str(folder))
    return {"weak_bodyparts": weak, "swapped_labels": swaps}


def plot_animals(project: Project, split: dict, info: RunInfo, out: Path,
                 limit: int = 50) -> list[Path]:
    """PNGs of frames, each animal in its own colour: labels (+), matched predictions (o,
    hollow below pcutoff), the skeleton drawn on the predictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    colors = plt.get_cmap("tab10")(np.arange(max(len(info.individuals), 1)) % 10)
    index = {b: j for j, b in enumerate(info.bodyparts)}
    edges = [(index[a], index[b]) for a, b in info.skeleton if a in index and b in index]
    by_name = {f.image: f for f in project.frames}
    written = []
    for i, image in enumerate(split["images"][:limit]):
        rgb = project.load_image(by_name[image])
        h, w = rgb.shape[:2]
        fig = plt.figure(figsize=(max(w, 300) / 100, max(h, 300) / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(rgb)
        ax.axis("off")
        for n, name in enumerate(info.individuals):
            c = colors[n]
            lab, pred = split["labels"][i, n], split["poses"][i, n]
            ax.plot(lab[:, 0], lab[:, 1], "+", color=c, ms=6, mew=1.2)
            for a, b in edges:
                ax.plot(pred[[a, b], 0], pred[[a, b], 1], "-", color=c, lw=0.8, alpha=0.7)
            confident = pred[:, 2] >= info.pcutoff
            ax.plot(pred[confident, 0], pred[confident, 1], "o", mec=c, mfc=c, ms=3.5)
            ax.plot(pred[~confident, 0], pred[~confident, 1], "o", mec=c, mfc="none", ms=3.5)
            ax.plot([], [], "o", color=c, label=name)
        ax.legend(loc="upper right", fontsize=7, framealpha=0.5)
        path = out / (image.replace("/", "__").rsplit(".", 1)[0] + ".png")
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
