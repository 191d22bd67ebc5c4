"""The live loop's triangulation: every view's 2D poses -> one N x K x 4 pose in 3D.

:class:`LiveTriangulation` (the engine's ``Triangulation`` part) triangulates each
animal's bodyparts from the views that saw them with a likelihood of at least ``pcutoff``
(weighted by it; numba, :func:`poseloop.threed.triangulate.triangulate_kernel`), dropping
the worst view while its reprojection error exceeds ``reject_px``. A point's likelihood is
the mean likelihood of the views it was triangulated from; with fewer than ``min_cameras``
views it is NaN with likelihood 0. Animal n of every view is animal n in 3D: the views'
trackers (identity) keep the rows in the same order. Everything is preallocated once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numba import njit
from pydantic import Field, model_validator

from poseloop.config import Strict
from poseloop.errors import ConfigError
from poseloop.threed.calibration import Rig, read_calibration
from poseloop.threed.triangulate import triangulate_kernel


class TriangulationConfig(Strict):
    """How the views' 2D poses become 3D (section ``triangulation`` of a camera group)."""

    calibration: str = Field(description="anipose calibration.toml of the group's cameras")
    cameras: list[str] | None = Field(
        default=None, description="the calibration's camera of each view, in the group's "
        "order; None = the calibration's cameras in its order")
    min_cameras: int = Field(default=2, ge=2, description="views needed for a 3D point")
    reject_px: float = Field(
        default=0.0, ge=0, description="> 0: drop the worst view while its reprojection "
        "error exceeds this (px)")

    @model_validator(mode="after")
    def _unique(self) -> TriangulationConfig:
        if self.cameras is not None and len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must be distinct, got {self.cameras}")
        return self


@runtime_checkable
class Triangulation(Protocol):
    """V x N x K x 3 views -> N x K x 4 points (x, y, z, likelihood) in ``out`` and
    N x K x 2 (reprojection error px, cameras used) in ``quality``. ``names`` and ``sizes``:
    each view's camera in the calibration and the (width, height) it was calibrated at."""

    cameras: int
    names: list[str]
    sizes: list[tuple[int, int]]

    def warmup(self) -> None: ...

    def triangulate(self, views: np.ndarray, out: np.ndarray,
                    quality: np.ndarray) -> np.ndarray: ...


@njit(cache=True, nogil=True)
def _triangulate_poses(views: np.ndarray, pcutoff: float, ks: np.ndarray, ds: np.ndarray,
                       rts: np.ndarray, min_cameras: int, reject_px: float,
                       pixels: np.ndarray, weights: np.ndarray, points: np.ndarray,
                       errors: np.ndarray, counts: np.ndarray, view_errors: np.ndarray,
                       out: np.ndarray, quality: np.ndarray) -> None:
    n_views, n, k = views.shape[0], views.shape[1], views.shape[2]
    for v in range(n_views):
        for i in range(n):
            for j in range(k):
                p = i * k + j
                likelihood = views[v, i, j, 2]
                pixels[v, p, 0] = views[v, i, j, 0]
                pixels[v, p, 1] = views[v, i, j, 1]
                weights[v, p] = likelihood if likelihood >= pcutoff else 0.0
    triangulate_kernel(pixels, weights, ks, ds, rts, min_cameras, reject_px, points,
                       errors, counts, view_errors)
    for i in range(n):
        for j in range(k):
            p = i * k + j
            total, used = 0.0, 0
            for v in range(n_views):
                if not np.isnan(view_errors[v, p]):
                    total += weights[v, p]
                    used += 1
            out[i, j, 0] = points[p, 0]
            out[i, j, 1] = points[p, 1]
            out[i, j, 2] = points[p, 2]
            out[i, j, 3] = total / used if used >= 2 and not np.isnan(points[p, 0]) else 0.0
            quality[i, j, 0] = errors[p]
            quality[i, j, 1] = used if not np.isnan(points[p, 0]) else counts[p]


class LiveTriangulation:
    """Triangulates the views' poses with a calibrated rig (see the module docstring).

    rig: the calibration; cameras: the rig's camera of each view (names), default all in
    the rig's order; shape: (N, K) of the poses.
    """

    def __init__(self, rig: Rig, shape: tuple[int, int], pcutoff: float,
                 cameras: list[str] | None = None, min_cameras: int = 2,
                 reject_px: float = 0.0, where: str = "group.triangulation.cameras") -> None:
        names = cameras if cameras is not None else rig.names
        chosen = [rig.cameras[rig.index(name, f"{where}: ")] for name in names]
        if len(chosen) < 2:
            raise ConfigError(f"{where}: triangulation needs at least two cameras, got {names}")
        self.names = list(names)
        self.cameras = len(chosen)
        self.sizes = [c.size for c in chosen]
        self.pcutoff = float(pcutoff)
        self.min_cameras = int(min_cameras)
        self.reject_px = float(reject_px)
        self._ks = np.stack([c.matrix for c in chosen]).astype(np.float64)
        self._ds = np.stack([c.distortions for c in chosen]).astype(np.float64)
        self._rts = np.stack([c.extrinsics for c in chosen]).astype(np.float64)
        n, k = shape
        p = n * k
        self._pixels = np.empty((self.cameras, p, 2))
        self._weights = np.empty((self.cameras, p))
        self._points = np.empty((p, 3))
        self._errors = np.empty(p)
        self._counts = np.empty(p, np.int64)
        self._view_errors = np.empty((self.cameras, p))

    @classmethod
    def from_config(cls, config: TriangulationConfig, shape: tuple[int, int],
                    pcutoff: float, base: Path | None = None) -> LiveTriangulation:
        """From a ``triangulation`` section (a relative calibration path from ``base``)."""
        path = Path(config.calibration)
        if base is not None and not path.is_absolute():
            path = base / path
        return cls(read_calibration(path), shape, pcutoff, config.cameras,
                   config.min_cameras, config.reject_px)

    def warmup(self) -> None:
        """Compile (or load from numba's cache) the kernel on blank views."""
        n_views, p = self._weights.shape
        views = np.zeros((n_views, 1, p, 3), np.float32)
        self.triangulate(views, np.empty((1, p, 4), np.float32),
                         np.empty((1, p, 2), np.float32))

    def triangulate(self, views: np.ndarray, out: np.ndarray,
                    quality: np.ndarray) -> np.ndarray:
        """Fill ``out`` (N x K x 4) and ``quality`` (N x K x 2) from V x N x K x 3 views."""
        if views.shape[0] != self.cameras or views.shape[1] * views.shape[2] != \
                self._weights.shape[1] or views.shape[3] != 3:
            raise ValueError(f"views must be {self.cameras} x N x K x 3 with N x K = "
                             f"{self._weights.shape[1]}, got {views.shape}")
        _triangulate_poses(views, self.pcutoff, self._ks, self._ds, self._rts,
                           self.min_cameras, self.reject_px, self._pixels, self._weights,
                           self._points, self._errors, self._counts, self._view_errors,
                           out, quality)
        return out
