"""Training targets of DeepLabCut's multi-animal network (Lauer et al., Nature Methods 2022).

For one augmented image whose labels are given as joints (every animal's K bodyparts in
turn, then the U unique bodyparts; NaN = unlabeled):

- **scoremap** (K + U channels): the disk of radius ``pos_dist_thresh`` around every
  animal's label of bodypart k; **locref** (2(K + U)): in each cell the offset to the
  *nearest* such label (as DeepLabCut does), so decoding any peak refines it correctly.
- **part affinity fields** (2E channels, x then y per edge): along edge a->b of each animal,
  the unit vector from a to b in every cell within ``paf_width`` of the segment (the mean of
  the vectors where limbs of several animals overlap, as OpenPose and DeepLabCut do).
- **identity** (N classes per cell, optional): which individual the bodypart disks around
  that cell belong to (-1 = no label near, ignored by the loss).

Geometry (cell centres, stride, locref units) is the shared :class:`HeatmapSpec`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from poseloop.heatmap import HeatmapSpec

#: DeepLabCut's default half-width of a limb's part affinity field, in image pixels.
PAF_WIDTH = 20.0


@dataclass(frozen=True)
class MultiTargets:
    """Makes the multi-animal targets of one image from its joints ((N*K + U) x 2).

    edges: (a, b) bodypart index pairs (of the K animal bodyparts) with a PAF each.
    identity: whether to make identity targets (the model has an identity head).
    """

    spec: HeatmapSpec
    n: int
    k: int
    u: int
    edges: tuple[tuple[int, int], ...]
    paf_width: float = PAF_WIDTH
    identity: bool = False

    def __call__(self, joints: np.ndarray, map_hw: tuple[int, int]) -> tuple[np.ndarray, ...]:
        """(scoremap, locref, weights, paf, paf_weights[, identity]) as float32 (identity
        int64), shaped (K+U) x h x w, 2(K+U) x h x w, K+U, 2E x h x w, E[, h x w]."""
        n, k, u = self.n, self.k, self.u
        h, w = map_hw
        spec = self.spec
        animals = joints[: n * k].reshape(n, k, 2)
        unique = joints[n * k: n * k + u]
        scoremap = np.zeros((k + u, h, w), np.float32)
        locref = np.zeros((2 * (k + u), h, w), np.float32)
        weights = np.zeros(k + u, np.float32)
        xs = spec.cell_centres(w)[None, :]
        ys = spec.cell_centres(h)[:, None]
        r2 = spec.pos_dist_thresh ** 2
        owner = np.full((h, w), -1, np.int64)
        owner_d2 = np.full((h, w), np.inf, np.float32)
        for j in range(k + u):
            points = animals[:, j] if j < k else unique[j - k: j - k + 1]
            best = np.full((h, w), np.inf, np.float32)
            for i, (x, y) in enumerate(points):
                if not (np.isfinite(x) and np.isfinite(y)):
                    continue
                weights[j] = 1.0
                dx = np.broadcast_to(x - xs, (h, w))
                dy = np.broadcast_to(y - ys, (h, w))
                d2 = dx * dx + dy * dy
                nearer = (d2 <= r2) & (d2 < best)
                best[nearer] = d2[nearer]
                locref[2 * j][nearer] = dx[nearer] / spec.locref_stdev
                locref[2 * j + 1][nearer] = dy[nearer] / spec.locref_stdev
                if self.identity and j < k:
                    mine = nearer & (d2 < owner_d2)
                    owner[mine] = i
                    owner_d2[mine] = d2[mine]
            scoremap[j][np.isfinite(best)] = 1.0
        paf, paf_weights = self.pafs(animals, (h, w), xs, ys)
        out: tuple[np.ndarray, ...] = (scoremap, locref, weights, paf, paf_weights)
        return out + (owner,) if self.identity else out

    def pafs(self, animals: np.ndarray, map_hw: tuple[int, int], xs: np.ndarray,
             ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The part affinity fields (2E x h x w) and which edges are labeled (E)."""
        h, w = map_hw
        e = len(self.edges)
        paf = np.zeros((2 * e, h, w), np.float32)
        weights = np.zeros(e, np.float32)
        for c, (a, b) in enumerate(self.edges):
            count = np.zeros((h, w), np.float32)
            for animal in animals:
                pa, pb = animal[a], animal[b]
                if not (np.isfinite(pa).all() and np.isfinite(pb).all()):
                    continue
                weights[c] = 1.0
                d = pb - pa
                length = float(np.hypot(*d))
                if length < 1e-6:
                    continue
                ux, uy = d / length
                rx, ry = xs - pa[0], ys - pa[1]
                along = rx * ux + ry * uy
                across = np.abs(rx * uy - ry * ux)
                band = (along >= -self.paf_width / 2) & (along <= length + self.paf_width / 2) \
                    & (across <= self.paf_width / 2)
                band = np.broadcast_to(band, (h, w))
                paf[2 * c][band] += ux
                paf[2 * c + 1][band] += uy
                count[band] += 1
            several = count > 1
            paf[2 * c][several] /= count[several]
            paf[2 * c + 1][several] /= count[several]
        return paf, weights


def paf_graph(bodyparts: list[str], skeleton: list[tuple[str, str]],
              animals: np.ndarray) -> list[tuple[str, str]]:
    """The edges that get a part affinity field: a tree over all K bodyparts.

    The skeleton's edges come first, as long as they join parts not yet joined (a tree: the
    assembly grows each animal from one part along it); parts the skeleton leaves apart are
    then joined by the edge of smallest median labeled length (Kruskal's algorithm on the
    labels, like DeepLabCut's data-driven graph). ``animals``: labels, any x K x 2.
    """
    k = len(bodyparts)
    index = {p: i for i, p in enumerate(bodyparts)}
    parent = list(range(k))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    edges: list[tuple[str, str]] = []

    def join(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[rb] = ra
            edges.append((bodyparts[a], bodyparts[b]))

    for a, b in skeleton:
        if a in index and b in index:
            join(index[a], index[b])
    if len(edges) < k - 1:
        flat = animals.reshape(-1, k, 2)
        d = np.sqrt(((flat[:, :, None] - flat[:, None]) ** 2).sum(-1))  # any x K x K
        with warnings.catch_warnings():  # parts never labeled together: all-NaN medians
            warnings.simplefilter("ignore", RuntimeWarning)
            finite = np.isfinite(d)
            median = np.where(finite.any(0), np.nanmedian(np.where(finite, d, np.nan), 0),
                              np.inf) if len(flat) else np.full((k, k), np.inf)
        order = sorted((median[a, b], a, b) for a in range(k) for b in range(a + 1, k))
        for _, a, b in order:
            join(a, b)
    return edges
