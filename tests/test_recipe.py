"""The recipe adapts scale and crop to the project: large frames, close-ups, mixed sizes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from poseloop.config import AugmentConfig, TrainConfig, load_yaml
from poseloop.errors import ConfigError
from poseloop.project import read_project
from poseloop.training.augment import Augmenter
from poseloop.training.recipe import LabelGeometry, choose

pytest.importorskip("torch")
from poseloop.training.train import learning_rate, prepare_run  # noqa: E402

PARTS = ["hand", "finger", "wrist", "bar"]


def write_project(root: Path, sizes: list[tuple[int, int]], labels: np.ndarray) -> Path:
    """A DeepLabCut project of plain grey frames of these sizes with these labels."""
    folder = root / "labeled-data" / "v"
    folder.mkdir(parents=True)
    lines = ["scorer" + ",s" * 2 * len(PARTS),
             "bodyparts," + ",".join(p for p in PARTS for _ in "xy"),
             "coords," + ",".join("xy" * len(PARTS))]
    for i, ((w, h), kp) in enumerate(zip(sizes, labels, strict=True)):
        cv2.imwrite(str(folder / f"img{i:03d}.png"), np.full((h, w, 3), 90, np.uint8))
        cells = ",".join("" if np.isnan(v) else f"{v:.2f}" for v in kp.reshape(-1))
        lines.append(f"labeled-data/v/img{i:03d}.png,{cells}")
    (folder / "CollectedData_s.csv").write_text("\n".join(lines) + "\n")
    (root / "config.yaml").write_text(
        "Task: t\nscorer: s\nbodyparts: [" + ", ".join(PARTS) + "]\nTrainingFraction: [0.8]\n"
    )
    return root


def reaching_labels(n: int, rng: np.random.Generator, w: int, h: int,
                    spread: float) -> np.ndarray:
    """A hand with its finger and wrist close together and a bar part far from them."""
    hand = rng.uniform([0.2 * w, 0.3 * h], [0.4 * w, 0.7 * h], (n, 2))
    finger = hand + rng.uniform(15, 25, (n, 2))
    wrist = hand - rng.uniform(15, 25, (n, 2))
    bar = hand + np.array([spread * 0.8, spread * 0.5]) + rng.uniform(-10, 10, (n, 2))
    return np.stack([hand, finger, wrist, bar], axis=1)


def test_large_frames_get_a_crop_that_covers_the_labels_spread(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = reaching_labels(20, rng, 1600, 1200, spread=900)
    project = read_project(write_project(tmp_path / "p", [(1600, 1200)] * 20, labels))
    info = prepare_run(project, TrainConfig(), tmp_path / "run")
    aug = load_yaml(TrainConfig, tmp_path / "run" / "train_config.yaml").augment
    spread = np.percentile((labels.max(1) - labels.min(1)).max(1), 90)
    assert aug.scale < 0.5  # brought down to the network, not cropped to a part
    assert min(aug.crop) >= spread * aug.scale  # the whole spread fits in a crop
    assert "recipe: scale" in (tmp_path / "run" / "recipe.txt").read_text()
    assert info.config.augment.crop == aug.crop
    # every training crop around the labels holds all of them (no jitter beyond the slack)
    still = aug.model_copy(update={"rotation": 0.0, "scale_range": 0.0,
                                   "crop_on_keypoint": 1.0})
    augmenter = Augmenter(still, PARTS, seed=1)
    image = np.zeros((1200, 1600, 3), np.uint8)
    for kp in labels:
        _, moved = augmenter(image, kp.astype(np.float32))
        # pixel centres at integers: the crop spans -0.5 .. size - 0.5
        assert (moved >= -0.5).all() and (moved <= np.array(aug.crop) - 0.5).all()


def test_the_old_fixed_crop_missed_the_far_part() -> None:
    """What failed before: 256 px at scale 0.8 cannot hold a 900-px spread."""
    rng = np.random.default_rng(0)
    labels = reaching_labels(20, rng, 1600, 1200, spread=900)
    old = AugmentConfig(crop_size=(256, 256), global_scale=0.8, rotation=0, scale_range=0,
                        crop_on_keypoint=1.0)
    augmenter = Augmenter(old, PARTS, seed=1)
    image = np.zeros((1200, 1600, 3), np.uint8)
    outside = 0
    for kp in labels:
        _, moved = augmenter(image, kp.astype(np.float32))
        outside += int(((moved < 0) | (moved > 255)).any())
    assert outside == len(labels)


def test_small_animal_keeps_full_resolution_and_a_small_crop() -> None:
    rng = np.random.default_rng(1)
    centre = rng.uniform(100, 500, (30, 1, 2))
    labels = centre + rng.uniform(-60, 60, (30, 4, 2))  # a ~120-px mouse in 640x480
    geometry = LabelGeometry.measure(labels, [(640, 480)] * 30)
    recipe = choose(TrainConfig(), geometry)
    assert recipe.scale == 1.0  # never enlarged
    assert recipe.crop[0] == recipe.crop[1] and recipe.crop[0] % 32 == 0
    assert geometry.spread * 1.5 <= recipe.crop[0] <= 256


def test_mixed_sizes_and_close_parts() -> None:
    rng = np.random.default_rng(2)
    big = reaching_labels(10, rng, 832, 747, spread=500)
    small = reaching_labels(5, rng, 640, 470, spread=380)
    geometry = LabelGeometry.measure(np.concatenate([big, small]),
                                     [(832, 747)] * 10 + [(640, 470)] * 5)
    assert geometry.largest_frame == (832, 747)
    recipe = choose(TrainConfig(), geometry)
    assert recipe.scale < 1 and recipe.crop[0] >= geometry.spread * recipe.scale
    # parts ~28 px apart: a larger min_part_distance keeps them apart at a larger scale
    fine = TrainConfig(augment=AugmentConfig(min_part_distance=24))
    assert choose(fine, geometry).scale > recipe.scale
    assert geometry.part_distance * choose(fine, geometry).scale >= 24 - 0.1


def test_fixed_values_are_kept_and_auto_must_be_resolved() -> None:
    fixed = TrainConfig(augment=AugmentConfig(crop_size=(256, 224), global_scale=0.7))
    geometry = LabelGeometry.measure(np.zeros((1, 2, 2)) + [[0, 0], [500, 500]], [(900, 900)])
    recipe = choose(fixed, geometry)
    assert (recipe.scale, recipe.crop) == (0.7, (256, 224))
    with pytest.raises(ConfigError, match="resolve the recipe"):
        _ = AugmentConfig().scale
    with pytest.raises(ConfigError, match="resolve the recipe"):
        _ = AugmentConfig().crop


def test_time_budget_alone_sets_the_schedule() -> None:
    cfg = TrainConfig(max_minutes=10.0, warmup_iterations=100, lr=1e-3)
    assert cfg.step_limit == float("inf")  # no step cap when only a budget is given
    assert TrainConfig().step_limit == 3000
    # a slow step rate: warm-up ends after 5 % of the budget, not after 100 steps
    assert learning_rate(cfg, 10, 15.0) < 1e-3 * 0.6
    assert learning_rate(cfg, 10, 31.0) == pytest.approx(1e-3, rel=0.01)
    assert learning_rate(cfg, 10, 300.0) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert learning_rate(cfg, 10, 600.0) == pytest.approx(1e-5)
