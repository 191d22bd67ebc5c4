"""One description of scoremap geometry, shared by training targets and pose decoding.

A network output cell ``(iy, ix)`` of a map with stride ``s`` is centred on image pixel
``(ix * s + offset, iy * s + offset)``; DeepLabCut (TF and PyTorch engines) uses
``offset = s / 2``. Location refinement (locref) channels are interleaved per bodypart as
``(dx, dy)`` in units of ``locref_stdev`` pixels. Because targets and decoding both take a
``HeatmapSpec``, they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: DeepLabCut's locref scale (pixels per locref unit).
DLC_LOCREF_STDEV = 7.2801
#: How the scoremap value at the peak becomes a likelihood.
#: sigmoid: the graph outputs logits (poseloop models; DLC3 models with apply_sigmoid);
#: clip: raw heatmap clipped to [0, 1] (DLC3 ``clip_scores`` without sigmoid); raw: as is.
LIKELIHOOD_MODES = ("sigmoid", "clip", "raw")


@dataclass(frozen=True)
class HeatmapSpec:
    """Geometry of scoremap + locref outputs.

    stride: image pixels per map cell.
    offset: image coordinate of cell 0's centre (DeepLabCut: stride / 2).
    locref_stdev: pixels per locref unit.
    pos_dist_thresh: radius (px) of the positive disk in training targets.
    likelihood: how a peak's scoremap value becomes a likelihood (``LIKELIHOOD_MODES``).
    """

    stride: float = 8.0
    offset: float = 4.0
    locref_stdev: float = DLC_LOCREF_STDEV
    pos_dist_thresh: float = 17.0
    likelihood: str = "sigmoid"

    @classmethod
    def for_stride(cls, stride: float, **kwargs: Any) -> HeatmapSpec:
        """The DeepLabCut convention for a given stride (offset = stride / 2).

        kwargs: the other fields (locref_stdev, pos_dist_thresh: float; likelihood: str).
        """
        return cls(stride=float(stride), offset=float(stride) / 2.0, **kwargs)

    def cell_centres(self, n: int) -> np.ndarray:
        """Image coordinates of the centres of ``n`` cells along one axis."""
        return np.arange(n, dtype=np.float32) * self.stride + self.offset

    def targets(
        self, keypoints: np.ndarray, map_hw: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """DeepLabCut training targets for one image.

        keypoints: K x 2 float array in input-image pixels; NaN rows are unlabeled.
        Returns (scoremap K x h x w, locref 2K x h x w, weights K) as float32, where
        scoremap is 1 inside the disk of radius ``pos_dist_thresh`` around each label,
        locref holds the offset from each cell centre to the label in ``locref_stdev``
        units inside the disk (0 elsewhere), and weights is 0 for unlabeled bodyparts.
        """
        h, w = map_hw
        k = keypoints.shape[0]
        scoremap = np.zeros((k, h, w), np.float32)
        locref = np.zeros((2 * k, h, w), np.float32)
        weights = np.zeros(k, np.float32)
        xs = self.cell_centres(w)[None, :]
        ys = self.cell_centres(h)[:, None]
        r2 = self.pos_dist_thresh**2
        for j in range(k):
            x, y = keypoints[j]
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            weights[j] = 1.0
            dx = x - xs
            dy = y - ys
            inside = (dx * dx + dy * dy) <= r2
            scoremap[j][inside] = 1.0
            locref[2 * j][inside] = np.broadcast_to(dx, (h, w))[inside] / self.locref_stdev
            locref[2 * j + 1][inside] = np.broadcast_to(dy, (h, w))[inside] / self.locref_stdev
        return scoremap, locref, weights

    def decode(self, scoremap: np.ndarray, locref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Plain-numpy peak decoding of one image's maps.

        scoremap: K x h x w, locref: 2K x h x w (interleaved dx, dy).
        Returns (xy K x 2 float32 in input-image pixels, peak K float32 = scoremap value
        at the argmax, not transformed). The realtime decoder's numba kernel is held to
        this function by the tests.
        """
        k, h, w = scoremap.shape
        flat = scoremap.reshape(k, h * w)
        idx = np.argmax(flat, axis=1)
        iy, ix = np.divmod(idx, w)
        peak = flat[np.arange(k), idx].astype(np.float32)
        lr = locref.reshape(k, 2, h, w)
        dx = lr[np.arange(k), 0, iy, ix]
        dy = lr[np.arange(k), 1, iy, ix]
        xy = np.empty((k, 2), np.float32)
        xy[:, 0] = ix * self.stride + self.offset + dx * self.locref_stdev
        xy[:, 1] = iy * self.stride + self.offset + dy * self.locref_stdev
        return xy, peak

    def likelihood_of(self, peak: np.ndarray) -> np.ndarray:
        """Likelihoods (float32) from the scoremap values at the peaks (``likelihood`` mode).

        The one definition of the mapping: training evaluation, export checks and the live
        decoder's numpy twin use it (the numba kernel is held to it by the tests).
        """
        peak = np.asarray(peak, np.float32)
        if self.likelihood == "sigmoid":  # tanh form: no overflow for very negative logits
            return (0.5 + 0.5 * np.tanh(0.5 * peak)).astype(np.float32)
        if self.likelihood == "clip":
            return np.clip(peak, 0.0, 1.0)
        if self.likelihood == "raw":
            return peak
        raise ValueError(f"likelihood mode must be one of {LIKELIHOOD_MODES}, "
                         f"got {self.likelihood!r}")

    def decode_pose(self, scoremap: np.ndarray, locref: np.ndarray) -> np.ndarray:
        """K x 3 (x, y, likelihood) in input-image pixels of one image's maps."""
        xy, peak = self.decode(scoremap, locref)
        return np.concatenate([xy, self.likelihood_of(peak)[:, None]], axis=1)
