"""Label-preserving augmentation: one affine warp (scale, rotation, crop, flip) + photometry.

Geometry is a single ``cv2.warpAffine`` whose matrix also moves the keypoints, so image and
labels cannot disagree. Coordinates follow the pixel-centre-at-integer convention of both
OpenCV and DeepLabCut's labels. Needs numpy and OpenCV only.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from poseloop.config import AugmentConfig
from poseloop.errors import ConfigError

#: ImageNet mean in 0..255 RGB: the border fill, which normalises to zero.
FILL = (124, 116, 104)


def flip_permutation(bodyparts: list[str], pairs: list[tuple[str, str]] | str) -> np.ndarray:
    """Index permutation that swaps left/right bodyparts when the image is mirrored.

    ``pairs="auto"`` pairs names that differ only by left/right (``leftear``/``rightear``,
    ``L_paw``/``R_paw`` are not guessed: name them explicitly).
    """
    perm = np.arange(len(bodyparts))
    index = {p: i for i, p in enumerate(bodyparts)}
    if pairs == "auto":
        found = []
        for p in bodyparts:
            m = re.search("left", p, flags=re.IGNORECASE)
            if m:
                right = p[: m.start()] + _same_case("right", m.group()) + p[m.end():]
                if right in index:
                    found.append((p, right))
        pairs = found
    for a, b in pairs:
        for name in (a, b):
            if name not in index:
                raise ConfigError(f"augment.flip_pairs: '{name}' is not a bodypart {bodyparts}")
        perm[index[a]], perm[index[b]] = index[b], index[a]
    return perm


def _same_case(word: str, like: str) -> str:
    if like.isupper():
        return word.upper()
    if like[0].isupper():
        return word.capitalize()
    return word


class Augmenter:
    """Random training crops of a fixed size with their keypoints moved to match.

    Keypoints are an image's joints: K bodyparts, or for a multi-animal project
    ``individuals`` x K bodyparts then the ``unique`` ones. A flip swaps left and right
    parts within each animal (and among the unique parts), never animals.
    """

    def __init__(self, cfg: AugmentConfig, bodyparts: list[str], seed: int = 0,
                 individuals: int = 0, unique: list[str] | None = None):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        k, n = len(bodyparts), max(individuals, 1)
        perm = flip_permutation(bodyparts, cfg.flip_pairs)
        blocks = [perm + i * k for i in range(n)]
        if unique:
            blocks.append(flip_permutation(unique, "auto") + n * k)
        self.flip_perm = np.concatenate(blocks)
        #: The animal each joint belongs to (-1: unique part): crops centre on one animal.
        self.animal = np.concatenate([np.repeat(np.arange(n), k),
                                      np.full(len(unique or []), -1)])
        self.multi = individuals > 0

    def matrix(self, shape: tuple[int, int], keypoints: np.ndarray) -> tuple[np.ndarray, bool]:
        """A random 2x3 affine from image to crop coordinates, and whether it mirrors.

        With probability ``crop_on_keypoint`` the crop is placed around the labeled points,
        shifted at random as far as keeps them all inside (at least an eighth of the view
        either way), so every part is learnt with the others around it; otherwise anywhere.
        """
        cfg, rng = self.cfg, self.rng
        cw, ch = cfg.crop
        h, w = shape
        scale = cfg.scale * rng.uniform(1 - cfg.scale_range, 1 + cfg.scale_range)
        angle = np.deg2rad(rng.uniform(-cfg.rotation, cfg.rotation))
        finite = np.isfinite(keypoints).all(axis=1)
        if self.multi and finite.any():  # around one labeled animal, picked at random
            present = np.unique(self.animal[finite])
            finite &= self.animal == rng.choice(present)
        labeled = keypoints[finite]
        if len(labeled) and rng.random() < cfg.crop_on_keypoint:
            lo, hi = labeled.min(axis=0), labeled.max(axis=0)
            view = np.array([cw, ch]) / scale
            slack = np.maximum(view - (hi - lo), 0.25 * view)
            centre = (lo + hi) / 2 + rng.uniform(-0.5, 0.5, 2) * slack
        else:
            centre = rng.uniform(0, 1, 2) * np.array([w - 1, h - 1])
        c, s = np.cos(angle) * scale, np.sin(angle) * scale
        m = np.array([[c, -s, 0.0], [s, c, 0.0]])
        m[:, 2] = np.array([(cw - 1) / 2, (ch - 1) / 2]) - m[:, :2] @ centre
        flip = bool(cfg.hflip and rng.random() < 0.5)
        if flip:
            m = np.array([[-1.0, 0.0, cw - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
        return m, flip

    def __call__(self, image: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Augment one RGB uint8 image; return (float32 H x W x 3 in 0..255, K x 2 keypoints)."""
        cw, ch = self.cfg.crop
        m, flip = self.matrix(image.shape[:2], keypoints)
        out = cv2.warpAffine(
            image, m, (cw, ch), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=FILL,
        )
        kp = keypoints @ m[:, :2].T + m[:, 2]
        if flip:
            kp = kp[self.flip_perm]
        return self.photometric(out), kp.astype(np.float32)

    def photometric(self, image: np.ndarray) -> np.ndarray:
        """Brightness, contrast, blur and noise on a uint8 image; returns float32 0..255."""
        cfg, rng = self.cfg, self.rng
        out = image.astype(np.float32)
        gain = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
        bias = 255.0 * rng.uniform(-cfg.brightness, cfg.brightness)
        mean = out.mean()
        out = (out - mean) * gain + mean + bias
        if rng.random() < cfg.blur_prob:
            out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
        if cfg.noise_std > 0:
            noise = rng.standard_normal(out.shape, dtype=np.float32)
            out += noise * np.float32(rng.uniform(0, cfg.noise_std))
        return np.clip(out, 0, 255, out=out)


def resize_for_inference(image: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """Resize by ``scale``; return (image, sx, sy) with the exact per-axis scales used.

    A point x in the original maps to (x + 0.5) * sx - 0.5 in the resized image. Bilinear,
    like the training warps and the live preprocessor (which the tests hold pixel-identical).
    """
    if scale == 1.0:
        return image, 1.0, 1.0
    h, w = image.shape[:2]
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    out = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, nw / w, nh / h
