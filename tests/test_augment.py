"""Augmentation moves labels with the pixels: a dot drawn at a label stays under it."""

from __future__ import annotations

import numpy as np
import pytest

from poseloop.config import AugmentConfig
from poseloop.errors import ConfigError
from poseloop.training.augment import Augmenter, flip_permutation, resize_for_inference

PARTS = ["snout", "leftear", "rightear", "tailbase"]


def _dots(kp: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A dark image with one bright 5x5 square of a distinct colour per keypoint."""
    img = np.zeros((*shape, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for (x, y), c in zip(kp.astype(int), colours[: len(kp)], strict=True):
        img[y - 2 : y + 3, x - 2 : x + 3] = c
    return img


def _centroid(img: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    dist = np.abs(img.astype(np.float32) - np.array(colour, np.float32)).sum(axis=2)
    w = np.clip(1.0 - dist / 200.0, 0, None)
    ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


@pytest.mark.parametrize("hflip", [False, True])
def test_labels_follow_pixels(hflip: bool) -> None:
    cfg = AugmentConfig(
        crop_size=(192, 160), global_scale=0.8, rotation=40, scale_range=0.3, hflip=hflip,
        crop_on_keypoint=1.0,
        brightness=0, contrast=0, blur_prob=0, noise_std=0,
    )
    aug = Augmenter(cfg, PARTS, seed=1)
    kp = np.array([[150, 100], [140, 90], [160, 90], [150, 140]], np.float32)
    image = _dots(kp, (240, 320))
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    checked = flipped = 0
    for _ in range(30):
        out, new_kp = aug(image, kp)
        assert out.shape == (160, 192, 3) and out.dtype == np.float32
        for j, c in enumerate(colours):
            x, y = new_kp[j]
            if not (4 <= x < 188 and 4 <= y < 156):
                continue
            # after a flip, label j carries the swapped part: find the colour it came from
            centre = _centroid(out, c)
            source = j
            if hflip and np.linalg.norm(centre - new_kp[j]) > 1.0:
                source = [0, 2, 1, 3][j]
                flipped += 1
            assert np.linalg.norm(_centroid(out, colours[source]) - new_kp[j]) < 1.0
            checked += 1
    assert checked > 60
    if hflip:
        assert flipped > 0


def test_flip_swaps_left_and_right() -> None:
    perm = flip_permutation(PARTS, "auto")
    assert perm.tolist() == [0, 2, 1, 3]
    assert flip_permutation(["LeftPaw", "RightPaw", "nose"], "auto").tolist() == [1, 0, 2]
    assert flip_permutation(PARTS, [("snout", "tailbase")]).tolist() == [3, 1, 2, 0]
    with pytest.raises(ConfigError, match="'tail' is not a bodypart"):
        flip_permutation(PARTS, [("snout", "tail")])


def test_photometric_stays_in_range() -> None:
    aug = Augmenter(AugmentConfig(brightness=1, contrast=1, blur_prob=1, noise_std=64), PARTS)
    out = aug.photometric(np.full((64, 64, 3), 250, np.uint8))
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255


def test_resize_maps_points_exactly() -> None:
    kp = np.array([[101.0, 57.0]])
    image = _dots(kp, (240, 320))
    out, sx, sy = resize_for_inference(image, 0.8)
    assert out.shape == (192, 256, 3)
    expected = (kp + 0.5) * [sx, sy] - 0.5
    np.testing.assert_allclose(_centroid(out, (255, 0, 0)), expected[0], atol=0.3)
