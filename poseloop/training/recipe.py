"""The training recipe chosen from the project: input scale and crop from its labels.

A recipe tuned on one project fails on others: a fixed crop of 256 px at scale 0.8 covers
the whole mouse of a 640x480 open field, but only part of a close-up's hand and bar, and a
part that is never in the crop with the others is never learnt in context. So ``auto``
values are resolved here, once, before training, and the run folder saves the concrete
numbers (export and evaluation read them from there):

- **scale**: the labels' *spread* (per frame the larger side of the labels' bounding box;
  the 90th percentile over frames) is brought to ``animal_size`` network pixels, but never
  enlarged (upscaling adds compute, not information) and never so far down that
  neighbouring parts come closer than ``min_part_distance`` network pixels.
- **crop**: a square that holds the spread at that scale plus ``context`` of it on each
  side, in multiples of 32, no larger than the largest frame at that scale needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poseloop.config import TrainConfig
from poseloop.errors import ProjectError

#: Crops are multiples of this (the backbones' largest stride).
CROP_MULTIPLE = 32
MIN_CROP, MAX_CROP = 128, 512
#: The percentile of the per-frame spread taken as the project's spread.
SPREAD_PERCENTILE = 90


@dataclass(frozen=True)
class LabelGeometry:
    """What the recipe reads off a project: label spread, part spacing, frame sizes."""

    spread: float  # px, SPREAD_PERCENTILE-th percentile of per-frame label extent
    part_distance: float  # px, median distance from a labeled part to its nearest neighbour
    largest_frame: tuple[int, int]  # (width, height) of the largest frame

    @classmethod
    def measure(cls, keypoints: np.ndarray, sizes: list[tuple[int, int]]) -> LabelGeometry:
        """From N x K x 2 labels (NaN = unlabeled) and each frame's (width, height)."""
        extents, nearest = [], []
        for kp in keypoints:
            kp = kp[np.isfinite(kp).all(axis=1)]
            if len(kp) < 2:
                continue
            extents.append(float((kp.max(axis=0) - kp.min(axis=0)).max()))
            d = np.sqrt(((kp[:, None] - kp[None]) ** 2).sum(-1))
            np.fill_diagonal(d, np.inf)
            nearest.extend(d.min(axis=1))
        if not sizes:
            raise ProjectError("the project has no labeled frames to choose a recipe from")
        largest = max(sizes, key=lambda s: s[0] * s[1])
        if not extents:  # one part per frame: a tenth of the frame is a fair guess
            return cls(0.1 * min(largest), np.inf, largest)
        return cls(
            spread=max(float(np.percentile(extents, SPREAD_PERCENTILE)), 1.0),
            part_distance=float(np.median(nearest)),
            largest_frame=largest,
        )


@dataclass(frozen=True)
class Recipe:
    """The resolved scale and crop, with the facts they were chosen from."""

    scale: float
    crop: tuple[int, int]
    geometry: LabelGeometry

    def describe(self) -> str:
        """One line for the training log: what was chosen and why."""
        g = self.geometry
        return (
            f"recipe: scale {self.scale:g}, crop {self.crop[0]}x{self.crop[1]} "
            f"(labels spread {g.spread:.0f} px, neighbouring parts {g.part_distance:.0f} px "
            f"apart, largest frame {g.largest_frame[0]}x{g.largest_frame[1]})"
        )


def _round_up(value: float) -> int:
    return int(np.ceil(value / CROP_MULTIPLE) * CROP_MULTIPLE)


def choose(cfg: TrainConfig, geometry: LabelGeometry) -> Recipe:
    """Resolve ``auto`` scale and crop of ``cfg.augment`` for a project of this geometry."""
    aug = cfg.augment
    if aug.global_scale == "auto":
        fit = aug.animal_size / geometry.spread
        detail = aug.min_part_distance / geometry.part_distance
        scale = float(np.round(min(1.0, max(fit, detail)), 3))
    else:
        scale = aug.global_scale
    if aug.crop_size == "auto":
        side = geometry.spread * scale * (1 + 2 * aug.context)
        frame = _round_up(max(geometry.largest_frame) * scale)
        side = int(np.clip(_round_up(side), MIN_CROP, max(MIN_CROP, min(MAX_CROP, frame))))
        crop = (side, side)
    else:
        crop = aug.crop_size
    return Recipe(scale=scale, crop=crop, geometry=geometry)


def resolve(cfg: TrainConfig, recipe: Recipe) -> TrainConfig:
    """``cfg`` with the recipe's concrete scale and crop (what the run folder saves)."""
    augment = cfg.augment.model_copy(
        update={"global_scale": recipe.scale, "crop_size": recipe.crop}
    )
    return cfg.model_copy(update={"augment": augment})
