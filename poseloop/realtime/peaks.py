"""Every local maximum of a scoremap above a threshold (non-maximum suppression), refined.

Multi-animal decoding starts here: each bodypart's map holds one peak per visible animal.
``find_peaks`` is the numba kernel the live loop runs, ``find_peaks_numpy`` its vectorised
twin that the tests hold it to. Both take every argument explicitly and write into
preallocated buffers.

A cell is a peak when its raw value is at least ``threshold`` and no neighbour in its 3 x 3
window beats it: neighbours before it in row-major order must be strictly lower, those after
it lower or equal, so a plateau yields exactly its first cell. Per channel the ``M``
strongest peaks are kept, strongest first (ties: the earlier cell first). A peak is written
as x, y (locref-refined, graph-input pixels), its raw value and its cell's flat index.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def find_peaks(
    scoremap: np.ndarray,
    locref: np.ndarray,
    threshold: float,
    stride: float,
    offset: float,
    locref_stdev: float,
    peaks: np.ndarray,
    cells: np.ndarray,
    counts: np.ndarray,
) -> None:
    """numba kernel: C x h x w scoremap, 2C x h x w locref -> peaks C x M x 3 (x, y, raw
    value), cells C x M (flat cell index), counts C (peaks found, at most M)."""
    c_n, h, w = scoremap.shape
    m = peaks.shape[1]
    for c in range(c_n):
        n = 0
        for iy in range(h):
            for ix in range(w):
                v = scoremap[c, iy, ix]
                if not (v >= threshold):  # also rejects NaN
                    continue
                peak = True
                for dy in range(-1, 2):
                    yy = iy + dy
                    if yy < 0 or yy >= h:
                        continue
                    for dx in range(-1, 2):
                        xx = ix + dx
                        if (dy == 0 and dx == 0) or xx < 0 or xx >= w:
                            continue
                        u = scoremap[c, yy, xx]
                        before = dy < 0 or (dy == 0 and dx < 0)
                        if (before and u >= v) or (not before and u > v):
                            peak = False
                    if not peak:
                        break
                if not peak:
                    continue
                # insert into the channel's top-M list, strongest first (stable on ties)
                pos = n
                while pos > 0 and peaks[c, pos - 1, 2] < v:
                    pos -= 1
                if pos >= m:
                    continue
                last = min(n, m - 1)
                for q in range(last, pos, -1):
                    peaks[c, q, 0] = peaks[c, q - 1, 0]
                    peaks[c, q, 1] = peaks[c, q - 1, 1]
                    peaks[c, q, 2] = peaks[c, q - 1, 2]
                    cells[c, q] = cells[c, q - 1]
                peaks[c, pos, 0] = ix * stride + offset + locref[2 * c, iy, ix] * locref_stdev
                peaks[c, pos, 1] = iy * stride + offset + locref[2 * c + 1, iy, ix] * locref_stdev
                peaks[c, pos, 2] = v
                cells[c, pos] = iy * w + ix
                if n < m:
                    n += 1
        counts[c] = n


def find_peaks_numpy(
    scoremap: np.ndarray,
    locref: np.ndarray,
    threshold: float,
    stride: float,
    offset: float,
    locref_stdev: float,
    peaks: np.ndarray,
    cells: np.ndarray,
    counts: np.ndarray,
) -> None:
    """The vectorised numpy twin of :func:`find_peaks` (same arguments, same result)."""
    c_n, h, w = scoremap.shape
    m = peaks.shape[1]
    padded = np.pad(scoremap, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    is_peak = scoremap >= threshold
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            nb = padded[:, 1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w]
            before = dy < 0 or (dy == 0 and dx < 0)
            is_peak &= (scoremap > nb) if before else (scoremap >= nb)
    for c in range(c_n):
        flat = np.flatnonzero(is_peak[c])
        values = scoremap[c].reshape(-1)[flat]
        order = np.lexsort((flat, -values))[:m]  # strongest first, earlier cell on ties
        flat = flat[order]
        iy, ix = np.divmod(flat, w)
        n = len(flat)
        peaks[c, :n, 0] = ix * stride + offset + locref[2 * c, iy, ix] * locref_stdev
        peaks[c, :n, 1] = iy * stride + offset + locref[2 * c + 1, iy, ix] * locref_stdev
        peaks[c, :n, 2] = values[order]
        cells[c, :n] = flat
        counts[c] = n


def raw_threshold(likelihood: float, mode: str) -> float:
    """The raw scoremap value whose likelihood is ``likelihood`` under ``mode``."""
    if mode == "sigmoid":
        p = min(max(likelihood, 1e-7), 1 - 1e-7)
        return math.log(p / (1 - p))
    return likelihood
