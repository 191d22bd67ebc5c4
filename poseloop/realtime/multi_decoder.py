"""The multi-animal decoder: network outputs of one image -> N x K x 3 animals, unordered.

Peaks of every bodypart (:mod:`poseloop.realtime.peaks`), their likelihoods, assembly into
at most N animals by the part affinity fields (:mod:`poseloop.realtime.assembly`), the
unique bodyparts decoded apart (one argmax each, like a single-animal model) into
``unique``, and, where the model has an identity head, each animal's mean identity
probabilities into ``identity`` (N x individuals) for the tracker. Rows come out strongest
animal first; the tracker (:mod:`poseloop.realtime.tracker`) gives them their identities.
Every buffer is allocated once, at construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

from poseloop.errors import ModelError
from poseloop.modelspec import ModelSpec, output_names
from poseloop.realtime.assembly import assemble, tree_order
from poseloop.realtime.decoder import DECODERS, MODES, _float32, _likelihood, decode_peaks
from poseloop.realtime.peaks import find_peaks, find_peaks_numpy, raw_threshold
from poseloop.realtime.transform import FrameTransform

#: Peaks below this likelihood are not candidates for any animal.
PEAK_THRESHOLD = 0.1
#: A link whose mean projected PAF is at or below this is not made.
MIN_LINK = 0.05


def min_parts(k: int) -> int:
    """Parts an assembly needs to count as an animal: a quarter of K, at least one."""
    return max(1, math.ceil(k / 4))


@njit(cache=True, nogil=True)
def peak_likelihoods(peaks: np.ndarray, counts: np.ndarray, mode: int, out: np.ndarray) -> None:
    """Likelihood of every found peak (raw value -> likelihood by ``mode``)."""
    for c in range(counts.shape[0]):
        for i in range(counts[c]):
            out[c, i] = _likelihood(np.float64(peaks[c, i, 2]), mode)


@njit(cache=True, nogil=True)
def animal_identity(identity: np.ndarray, cells: np.ndarray, member: np.ndarray,
                    ranked: np.ndarray, written: int, out: np.ndarray) -> None:
    """Per written animal the mean softmax of the identity logits over its parts' cells."""
    c_n, h, w = identity.shape
    out[:] = np.nan
    for r in range(written):
        a = ranked[r]
        n = 0
        for c in range(c_n):
            out[r, c] = 0.0
        for p in range(member.shape[1]):
            i = member[a, p]
            if i < 0:
                continue
            cell = cells[p, i]
            iy, ix = cell // w, cell % w
            top = identity[0, iy, ix]
            for c in range(1, c_n):
                top = max(top, identity[c, iy, ix])
            total = 0.0
            for c in range(c_n):
                total += math.exp(identity[c, iy, ix] - top)
            for c in range(c_n):
                out[r, c] += math.exp(identity[c, iy, ix] - top) / total
            n += 1
        for c in range(c_n):
            out[r, c] /= max(n, 1)


@DECODERS.register("multi_animal")
class MultiAnimalDecoder:
    """Scoremap, locref, PAFs (and identity) of one image -> N x K x 3 animals in ``out``.

    use_numba=False runs the numpy twin of the peak finder and the assembly's Python
    steps (``assemble.py_func``): the same results, for tests and comparison.
    """

    def __init__(self, spec: ModelSpec, use_numba: bool = True,
                 threshold: float = PEAK_THRESHOLD, min_link: float = MIN_LINK):
        if not spec.multi_animal:
            raise ModelError("the multi-animal decoder needs a model with individuals")
        index = {p: i for i, p in enumerate(spec.bodyparts)}
        unknown = [p for e in spec.paf_edges for p in e if p not in index]
        if unknown:
            raise ModelError(f"model paf_edges name {unknown[0]!r}, not one of its bodyparts")
        heat = spec.heatmap_spec()
        n, k, u = len(spec.individuals), len(spec.bodyparts), len(spec.unique_bodyparts)
        self.shape: tuple[int, int, int] = (n, k, 3)
        self.outputs = output_names(spec)
        self.stride, self.offset = float(heat.stride), float(heat.offset)
        self.locref_stdev = float(heat.locref_stdev)
        self.mode = MODES[heat.likelihood]
        self.threshold = raw_threshold(threshold, heat.likelihood)
        self.min_link = float(min_link)
        self.min_parts = min_parts(k)
        self.root, self.order = tree_order(
            k, [(index[a], index[b]) for a, b in spec.paf_edges])
        m = max(4, 2 * n)  # peaks kept per bodypart
        self.peaks = np.zeros((k, m, 3), np.float32)
        self.cells = np.zeros((k, m), np.int64)
        self.counts = np.zeros(k, np.int64)
        self.likelihood = np.zeros((k, m), np.float32)
        self.member = np.full((k * m, k), -1, np.int32)
        self.owner = np.full((k, m), -1, np.int32)
        self.scores = np.zeros(k * m, np.float64)
        self.used = np.zeros(2 * m, np.bool_)
        self.ranked = np.zeros(k * m, np.int32)
        #: Animals found in the last frame (rows of ``out`` filled, strongest first).
        self.found = 0
        #: U x 3 unique bodyparts of the last frame (None when the model has none).
        self.unique: np.ndarray | None = np.zeros((u, 3), np.float32) if u else None
        #: N x individuals identity probabilities of the last frame's rows (identity head).
        self.identity: np.ndarray | None = (
            np.full((n, n), np.nan, np.float32) if spec.identity else None)
        self._k = k
        self._edges = len(spec.paf_edges)
        self._find = find_peaks if use_numba else find_peaks_numpy
        self._assemble = assemble if use_numba else assemble.py_func
        self._identity = animal_identity if use_numba else animal_identity.py_func

    def warmup(self) -> None:
        """Compile (or load from numba's cache) every kernel on blank maps."""
        c = self._k + (0 if self.unique is None else len(self.unique))
        blank = [np.zeros((1, c, 4, 4), np.float32), np.zeros((1, 2 * c, 4, 4), np.float32),
                 np.zeros((1, 2 * self._edges, 4, 4), np.float32)]
        if self.identity is not None:
            blank.append(np.zeros((1, self.shape[0], 4, 4), np.float32))
        self.decode(blank, np.zeros(self.shape, np.float32))

    def decode(self, outputs: Sequence[np.ndarray], out: np.ndarray,
               transform: FrameTransform | None = None) -> np.ndarray:
        """Decode one image's outputs into ``out`` (N x K x 3, rows strongest first) and
        ``unique``: graph-input pixels, or full-frame pixels through ``transform``."""
        if len(outputs) < len(self.outputs):
            raise ModelError(f"multi-animal decoding needs outputs {self.outputs}, got "
                             f"{len(outputs)} arrays")
        maps = [_float32(a[0] if a.ndim == 4 else a) for a in outputs[:len(self.outputs)]]
        scoremap, locref, paf = maps[0], maps[1], maps[2]
        k = self._k
        self._find(scoremap[:k], locref[:2 * k], self.threshold, self.stride, self.offset,
                   self.locref_stdev, self.peaks, self.cells, self.counts)
        peak_likelihoods(self.peaks, self.counts, self.mode, self.likelihood)
        self.found = self._assemble(
            self.peaks, self.likelihood, self.counts, paf, self.order, self.root,
            self.stride, self.offset, self.min_link, self.min_parts, self.member,
            self.owner, self.scores, self.used, self.ranked, out)
        if self.unique is not None:
            decode_peaks(scoremap[k:], locref[2 * k:], self.stride, self.offset,
                         self.locref_stdev, self.mode, self.unique)
        if self.identity is not None:
            self._identity(maps[3], self.cells, self.member, self.ranked, self.found,
                           self.identity)
        if transform is not None:
            transform.to_full(out)
            if self.unique is not None:
                transform.to_full(self.unique)
        return out
