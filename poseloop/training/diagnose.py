"""Find a bodypart that lags the others, name its worst frames and its likely cause.

A part is *weak* when its error is over WEAK_RATIO times the median of the other parts'
and at least WEAK_MIN_PX more. Where the network misses it on its own training frames too,
it cannot fit the labels: labels that disagree with each other (the same point placed
differently from frame to frame, a spot on a uniform bar, a part often hidden and guessed)
are the usual cause. Where it fits the training frames but not new ones, the part needs
more labeled frames of its variety.
"""

from __future__ import annotations

import numpy as np

WEAK_RATIO = 2.0
WEAK_MIN_PX = 1.0
WORST_FRAMES = 6


def _part_means(errors: np.ndarray) -> np.ndarray:
    """Mean error per bodypart over frames (NaN where a part has no labels)."""
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(errors).sum(axis=0)
        return np.where(counts > 0, np.nansum(errors, axis=0) / np.maximum(counts, 1), np.nan)


def _others(means: np.ndarray, j: int) -> float:
    rest = np.delete(means, j)
    rest = rest[np.isfinite(rest)]
    return float(np.median(rest)) if rest.size else float("nan")


def weak_bodyparts(errors: dict[str, np.ndarray], images: dict[str, list[str]],
                   bodyparts: list[str]) -> list[dict]:
    """The weak parts, judged on the test split (on train when there is no test frame).

    ``errors`` maps split name ("train", "test") to N x K pixel errors (NaN = unlabeled),
    ``images`` the split to its image names.
    """
    judged = "test" if np.isfinite(errors.get("test", np.empty((0, 0)))).any() else "train"
    means = {name: _part_means(e) for name, e in errors.items() if e.size}
    found = []
    for j, part in enumerate(bodyparts):
        rmse, others = means[judged][j], _others(means[judged], j)
        if not (np.isfinite(rmse) and np.isfinite(others)):
            continue
        if rmse < WEAK_RATIO * others or rmse - others < WEAK_MIN_PX:
            continue
        train = means.get("train")
        train_rmse = float(train[j]) if train is not None else float("nan")
        train_others = _others(train, j) if train is not None else float("nan")
        fits_training = not (train_rmse >= WEAK_RATIO * train_others
                             and train_rmse - train_others >= WEAK_MIN_PX)
        worst = sorted(
            ({"image": images[name][i], "split": name, "error_px": round(float(e[i, j]), 2)}
             for name, e in errors.items() for i in range(len(e)) if np.isfinite(e[i, j])),
            key=lambda w: -w["error_px"],
        )[:WORST_FRAMES]
        found.append({
            "bodypart": part, "split": judged, "rmse": round(float(rmse), 2),
            "others_rmse": round(others, 2), "train_rmse": round(train_rmse, 2),
            "train_others_rmse": round(train_others, 2),
            "cause": "new frames" if fits_training else "labels",
            "worst": worst,
        })
    return found


def advice(weak: dict, folder: str) -> str:
    """What to tell the user about one weak part: how bad, the likely cause, what to check."""
    head = (f"{weak['bodypart']} is weak: {weak['rmse']:.2f} px on {weak['split']} frames, "
            f"the other parts {weak['others_rmse']:.2f} px (train: {weak['train_rmse']:.2f} "
            f"vs {weak['train_others_rmse']:.2f}).")
    if weak["cause"] == "labels":
        cause = ("The network misses it on its training frames too, so it cannot fit these "
                 "labels: labels that disagree with each other are the usual cause.")
    else:
        cause = ("It fits the training frames but not new ones: label more frames that show "
                 "this part's variety.")
    worst = ", ".join(f"{w['image']} ({w['error_px']:.1f} px)" for w in weak["worst"][:3])
    check = (f"Check: open {folder}/ (+ label, o prediction) and see whether the label sits "
             f"on the same point of the animal in every frame; relabel those that do not, "
             f"then retrain. Worst: {worst}.")
    return f"{head} {cause} {check}"
