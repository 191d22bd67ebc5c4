"""Triangulation from several calibrated views (numba): undistort, weighted DLT, reproject.

For each point seen by C cameras (pixels, NaN where a view lacks it, and a weight: the
keypoint's likelihood, or 1): every view's pixel is undistorted to normalised image
coordinates (OpenCV's distortion model inverted by fixed-point iteration, as
``cv2.undistortPoints`` does, to convergence), the weighted linear system of the views that
see it (two rows per view: w * (x P3 - P1), w * (y P3 - P2), P = [R | t]) is solved by SVD,
and the 3D point is projected back into each of those views with distortion: the mean
distance to the observed pixels is its reprojection error. Optionally the worst view is
dropped while its error exceeds ``reject_px`` and more than two views remain (outlier views:
a wrong detection in one camera). Points seen by fewer than ``min_cameras`` views are NaN.

:func:`triangulate` takes C x P x 2 pixels and returns P x 3 points, P errors and P camera
counts; the kernels write into caller-owned arrays so the live loop allocates nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from poseloop.threed.calibration import Rig

_UNDISTORT_ITERATIONS = 20


@njit(cache=True, nogil=True)
def _distort(x: float, y: float, d: np.ndarray) -> tuple[float, float]:
    """OpenCV's radial (k1, k2, k3) + tangential (p1, p2) model on normalised coordinates."""
    r2 = x * x + y * y
    radial = 1.0 + r2 * (d[0] + r2 * (d[1] + r2 * d[4]))
    xd = x * radial + 2.0 * d[2] * x * y + d[3] * (r2 + 2.0 * x * x)
    yd = y * radial + d[2] * (r2 + 2.0 * y * y) + 2.0 * d[3] * x * y
    return xd, yd


@njit(cache=True, nogil=True)
def _undistort(u: float, v: float, k: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """Pixel -> undistorted normalised coordinates (fixed-point iteration)."""
    fx, fy, cx, cy, skew = k[0, 0], k[1, 1], k[0, 2], k[1, 2], k[0, 1]
    yd = (v - cy) / fy
    xd = (u - cx - skew * yd) / fx
    x, y = xd, yd
    for _ in range(_UNDISTORT_ITERATIONS):
        r2 = x * x + y * y
        radial = 1.0 + r2 * (d[0] + r2 * (d[1] + r2 * d[4]))
        dx = 2.0 * d[2] * x * y + d[3] * (r2 + 2.0 * x * x)
        dy = d[2] * (r2 + 2.0 * y * y) + 2.0 * d[3] * x * y
        x = (xd - dx) / radial
        y = (yd - dy) / radial
    return x, y


@njit(cache=True, nogil=True)
def _project(point: np.ndarray, rt: np.ndarray, k: np.ndarray, d: np.ndarray
             ) -> tuple[float, float]:
    """World point -> distorted pixel in one camera."""
    xc = rt[0, 0] * point[0] + rt[0, 1] * point[1] + rt[0, 2] * point[2] + rt[0, 3]
    yc = rt[1, 0] * point[0] + rt[1, 1] * point[1] + rt[1, 2] * point[2] + rt[1, 3]
    zc = rt[2, 0] * point[0] + rt[2, 1] * point[1] + rt[2, 2] * point[2] + rt[2, 3]
    xd, yd = _distort(xc / zc, yc / zc, d)
    return k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]


@njit(cache=True, nogil=True)
def _solve(norm: np.ndarray, weights: np.ndarray, rts: np.ndarray, use: np.ndarray,
           a: np.ndarray, out: np.ndarray) -> None:
    """Weighted DLT of one point from the views in ``use``; writes x, y, z into out."""
    rows = 0
    for c in range(norm.shape[0]):
        if not use[c]:
            continue
        w = weights[c]
        for j in range(4):
            a[rows, j] = w * (norm[c, 0] * rts[c, 2, j] - rts[c, 0, j])
            a[rows + 1, j] = w * (norm[c, 1] * rts[c, 2, j] - rts[c, 1, j])
        rows += 2
    _, _, vt = np.linalg.svd(a[:rows])
    h = vt[3]
    out[0] = h[0] / h[3]
    out[1] = h[1] / h[3]
    out[2] = h[2] / h[3]


@njit(cache=True, nogil=True)
def triangulate_kernel(pixels: np.ndarray, weights: np.ndarray, ks: np.ndarray,
                       ds: np.ndarray, rts: np.ndarray, min_cameras: int, reject_px: float,
                       points: np.ndarray, errors: np.ndarray, counts: np.ndarray,
                       view_errors: np.ndarray) -> None:
    """C x P x 2 pixels (NaN: unseen), C x P weights -> P x 3 points, P mean reprojection
    errors (px), P camera counts; view_errors (C x P) holds each used view's error, NaN for
    the others. reject_px <= 0: no outlier-view rejection."""
    n_cams, n_points = pixels.shape[0], pixels.shape[1]
    norm = np.empty((n_cams, 2))
    w = np.empty(n_cams)
    use = np.zeros(n_cams, np.bool_)
    a = np.empty((2 * n_cams, 4))
    for p in range(n_points):
        seen = 0
        for c in range(n_cams):
            u, v = pixels[c, p, 0], pixels[c, p, 1]
            ok = math.isfinite(u) and math.isfinite(v) and weights[c, p] > 0.0
            use[c] = ok
            view_errors[c, p] = np.nan
            if ok:
                norm[c, 0], norm[c, 1] = _undistort(u, v, ks[c], ds[c])
                w[c] = weights[c, p]
                seen += 1
        if seen < max(2, min_cameras):
            points[p, :] = np.nan
            errors[p] = np.nan
            counts[p] = seen
            continue
        while True:
            _solve(norm, w, rts, use, a, points[p])
            worst, worst_err, total = -1, -1.0, 0.0
            for c in range(n_cams):
                if not use[c]:
                    view_errors[c, p] = np.nan
                    continue
                x, y = _project(points[p], rts[c], ks[c], ds[c])
                e = math.hypot(x - pixels[c, p, 0], y - pixels[c, p, 1])
                view_errors[c, p] = e
                total += e
                if e > worst_err:
                    worst, worst_err = c, e
            if reject_px <= 0.0 or worst_err <= reject_px or seen <= max(2, min_cameras):
                break
            use[worst] = False
            seen -= 1
        errors[p] = total / seen
        counts[p] = seen


@dataclass
class Triangulator:
    """The rig's cameras packed for the kernel; :meth:`__call__` triangulates C x P x 2."""

    rig: Rig
    min_cameras: int = 2
    reject_px: float = 0.0  # > 0: drop the worst view while its error exceeds this

    def __post_init__(self) -> None:
        cams = self.rig.cameras
        self.ks = np.stack([c.matrix for c in cams]).astype(np.float64)
        self.ds = np.stack([c.distortions for c in cams]).astype(np.float64)
        self.rts = np.stack([c.extrinsics for c in cams]).astype(np.float64)

    def __call__(self, pixels: np.ndarray, weights: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(P x 3 points, P errors px, P camera counts, C x P per-view errors) of C x P x 2
        pixels (NaN where a camera does not see the point); weights C x P (default 1)."""
        pixels = np.ascontiguousarray(pixels, np.float64)
        n_cams = len(self.rig)
        if pixels.ndim != 3 or pixels.shape[0] != n_cams or pixels.shape[2] != 2:
            raise ValueError(f"pixels must be cameras x points x 2 with {n_cams} cameras "
                             f"({', '.join(self.rig.names)}), got shape {pixels.shape}")
        if weights is None:
            weights = np.ones(pixels.shape[:2])
        weights = np.ascontiguousarray(np.nan_to_num(weights, nan=0.0), np.float64)
        p = pixels.shape[1]
        points = np.empty((p, 3))
        errors = np.empty(p)
        counts = np.empty(p, np.int64)
        view_errors = np.empty((n_cams, p))
        triangulate_kernel(pixels, weights, self.ks, self.ds, self.rts, self.min_cameras,
                           float(self.reject_px), points, errors, counts, view_errors)
        return points, errors, counts, view_errors


def triangulate(rig: Rig, pixels: np.ndarray, weights: np.ndarray | None = None,
                min_cameras: int = 2, reject_px: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P x 3 points, P reprojection errors (px) and P camera counts of C x P x 2 pixels."""
    points, errors, counts, _ = Triangulator(rig, min_cameras, reject_px)(pixels, weights)
    return points, errors, counts
