"""Find a bodypart that lags the others, name its worst frames and its likely cause.

A part is *weak* when its error is over WEAK_RATIO times the median of the other parts'
and at least WEAK_MIN_PX more. Where the network misses it on its own training frames too,
it cannot fit the labels: labels that disagree with each other (the same point placed
differently from frame to frame, a spot on a uniform bar, a part often hidden and guessed)
are the usual cause. Where it fits the training frames but not new ones, the part needs
more labeled frames of its variety.

Swapped labels (left and right ear exchanged on one frame) are found directly: a frame
where two parts' predictions each sit on the *other* part's label (within SWAP_SHARE of
the distance between the two labels) and at least SWAP_GAIN times farther from their own.
"""

from __future__ import annotations

import numpy as np

WEAK_RATIO = 2.0
WEAK_MIN_PX = 1.0
WORST_FRAMES = 6
SWAP_SHARE = 0.35
SWAP_GAIN = 3.0


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
                   bodyparts: list[str], swaps: list[dict] | None = None) -> list[dict]:
    """The weak parts, judged on the test split (on train when there is no test frame).

    ``errors`` maps split name ("train", "test") to N x K pixel errors (NaN = unlabeled),
    ``images`` the split to its image names; a part in one of ``swaps`` (swapped_labels)
    gets the cause "swapped labels".
    """
    swapped = {p for swap in swaps or [] for p in swap["bodyparts"]}
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
            "cause": "swapped labels" if part in swapped
            else "new frames" if fits_training else "labels",
            "worst": worst,
        })
    return found


def advice(weak: dict, folder: str) -> str:
    """What to tell the user about one weak part: how bad, the likely cause, what to check."""
    head = (f"{weak['bodypart']} is weak: {weak['rmse']:.2f} px on {weak['split']} frames, "
            f"the other parts {weak['others_rmse']:.2f} px (train: {weak['train_rmse']:.2f} "
            f"vs {weak['train_others_rmse']:.2f}).")
    if weak["cause"] == "swapped labels":
        cause = ("Some of its frames have labels that look swapped with another part's (see "
                 "the swapped-label lines): a few such frames are enough to lift its error.")
    elif weak["cause"] == "labels":
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


def swapped_labels(poses: np.ndarray, labels: np.ndarray, images: list[str],
                   bodyparts: list[str]) -> list[dict]:
    """Frames whose labels of two parts look exchanged: each prediction on the other label.

    ``poses`` N x K x 3 predictions, ``labels`` N x K x 2 (NaN = unlabeled).
    """
    found = []
    for i in range(len(images)):
        # d[j, k]: prediction of part j to the label of part k
        d = np.sqrt(((poses[i, :, None, :2] - labels[i, None, :, :]) ** 2).sum(-1))
        for j in range(len(bodyparts)):
            for k in range(j + 1, len(bodyparts)):
                own = max(d[j, j], d[k, k])
                crossed = max(d[j, k], d[k, j])
                gap = float(np.linalg.norm(labels[i, j] - labels[i, k]))
                if crossed <= SWAP_SHARE * gap and own >= SWAP_GAIN * max(crossed, 1.0):
                    found.append({"image": images[i], "bodyparts": [bodyparts[j], bodyparts[k]],
                                  "error_px": round(float(own), 2),
                                  "swapped_error_px": round(float(crossed), 2)})
    return found


def swap_advice(swap: dict) -> str:
    """What to tell the user about one frame whose labels look exchanged."""
    a, b = swap["bodyparts"]
    return (f"{swap['image']}: the labels of {a} and {b} look swapped (predictions "
            f"{swap['error_px']:.1f} px from them, {swap['swapped_error_px']:.1f} px from the "
            f"other's label): check that frame and relabel it if so.")


def diagnosis_lines(result: dict) -> list[str]:
    """The advice of an evaluation's weak parts and swapped labels, one line each."""
    return ([w["advice"] for w in result.get("weak_bodyparts", []) if "advice" in w]
            + [swap_advice(w) for w in result.get("swapped_labels", [])])
