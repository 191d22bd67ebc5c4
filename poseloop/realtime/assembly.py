"""Assembly of bodypart peaks into animals, scored by part affinity fields (numba).

DeepLabCut's multi-animal method (Lauer et al. 2022, after OpenPose): the peaks of every
bodypart are linked along the edges of a tree over the bodyparts; a candidate link between
peak ``i`` of part ``a`` and peak ``j`` of part ``b`` scores the mean of the PAF of that
edge, sampled along the segment i -> j, projected on its direction. Edges are visited from
the root outwards (``tree_order``); per edge the best-scoring links are taken greedily, each
peak once, and the child joins its parent's animal. A child peak left over starts an animal
of its own (a fragment). Animals are ranked by the sum of their parts' likelihoods; the best
``N`` with at least ``min_parts`` parts are written out, in that order. A part that was
not found cuts its subtree off its animal (a leg whose middle joint is hidden): the other
assemblies, strongest first, then join the nearest written animal that lacks all their parts
and lies within half its extent (at least two map cells).

``assemble`` is the kernel; :func:`paf_scores_numpy` is the vectorised twin of its link
score (``link_score``) that the tests hold it to, and ``assemble.py_func`` runs the same
greedy steps in plain Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

#: Samples along a candidate link when its PAF is integrated.
SAMPLES = 10


def tree_order(k: int, edges: Sequence[tuple[int, int]]) -> tuple[int, np.ndarray]:
    """The root (the part with most edges) and the edges in breadth-first order from it, as
    rows (parent, child, edge index, sign): sign -1 when the PAF of edge (a, b) points from
    child to parent. Parts the edges do not reach are roots of their own trees (their rows
    have parent -1: every peak of such a part starts an animal)."""
    neighbours: list[list[tuple[int, int, int]]] = [[] for _ in range(k)]
    for e, (a, b) in enumerate(edges):
        neighbours[a].append((b, e, 1))
        neighbours[b].append((a, e, -1))
    degree = [len(n) for n in neighbours]
    root = int(np.argmax(degree)) if k else 0
    seen = [False] * k
    rows: list[tuple[int, int, int, int]] = []
    for start in [root] + [p for p in range(k) if p != root]:
        if seen[start]:
            continue
        seen[start] = True
        if start != root:
            rows.append((-1, start, -1, 0))
        queue = [start]
        while queue:
            here = queue.pop(0)
            for there, e, sign in neighbours[here]:
                if not seen[there]:
                    seen[there] = True
                    rows.append((here, there, e, sign))
                    queue.append(there)
    return root, np.array(rows, np.int32).reshape(-1, 4)


@njit(cache=True, nogil=True)
def link_score(paf: np.ndarray, e: int, sign: int, xa: float, ya: float, xb: float, yb: float,
               stride: float, offset: float) -> float:
    """Mean PAF of edge ``e`` along a -> b projected on a -> b (1 for coincident points)."""
    dx, dy = xb - xa, yb - ya
    length = math.sqrt(dx * dx + dy * dy)
    if not length >= 1.0:  # coincident (or NaN): nothing to integrate
        return 1.0 if length < 1.0 else 0.0
    ux, uy = sign * dx / length, sign * dy / length
    h, w = paf.shape[1], paf.shape[2]
    total = 0.0
    for s in range(SAMPLES):
        t = s / (SAMPLES - 1)
        ix = int(round((xa + t * dx - offset) / stride))
        iy = int(round((ya + t * dy - offset) / stride))
        ix = min(max(ix, 0), w - 1)
        iy = min(max(iy, 0), h - 1)
        total += paf[2 * e, iy, ix] * ux + paf[2 * e + 1, iy, ix] * uy
    return total / SAMPLES


def paf_scores_numpy(paf: np.ndarray, e: int, sign: int, a: np.ndarray, b: np.ndarray,
                     stride: float, offset: float) -> np.ndarray:
    """Vectorised twin of :func:`link_score` for all pairs: a (I x 2), b (J x 2) -> I x J."""
    h, w = paf.shape[1:]
    d = b[None, :, :] - a[:, None, :]  # I x J x 2
    length = np.sqrt((d ** 2).sum(-1))
    safe = np.where(length >= 1.0, length, 1.0)
    u = sign * d / safe[..., None]
    t = np.linspace(0.0, 1.0, SAMPLES)[:, None, None, None]
    p = a[None, :, None, :] + t * d[None]  # S x I x J x 2
    # numba's round() rounds half to even, like np.round
    ix = np.clip(np.round((p[..., 0] - offset) / stride), 0, w - 1).astype(int)
    iy = np.clip(np.round((p[..., 1] - offset) / stride), 0, h - 1).astype(int)
    v = paf[2 * e][iy, ix] * u[None, ..., 0] + paf[2 * e + 1][iy, ix] * u[None, ..., 1]
    score = v.mean(0)
    return np.where(length >= 1.0, score, np.where(length < 1.0, 1.0, 0.0))


@njit(cache=True, nogil=True)
def assemble(
    peaks: np.ndarray,
    likelihood: np.ndarray,
    counts: np.ndarray,
    paf: np.ndarray,
    order: np.ndarray,
    root: int,
    stride: float,
    offset: float,
    min_link: float,
    min_parts: int,
    member: np.ndarray,
    owner: np.ndarray,
    scores: np.ndarray,
    used: np.ndarray,
    ranked: np.ndarray,
    out: np.ndarray,
) -> int:
    """numba kernel: peaks K x M x 3 (x, y, raw), likelihood K x M, counts K, paf 2E x h x w,
    order (rows of :func:`tree_order`) -> out N x K x 3 (x, y, likelihood; a part not found
    is NaN, NaN, 0). Scratch: member A x K, owner K x M (int32; A >= K * M), scores A,
    used 2M (bool), ranked A (int32: the written animals' indices, in out's order).
    Returns the number of animals written (the rest of ``out`` is NaN, NaN, 0); ``member``
    holds each written animal's peak per part (rows ``ranked``), fragments merged in."""
    k, m = likelihood.shape
    n_out = out.shape[0]
    member[:] = -1
    owner[:] = -1
    n_animals = 0
    for i in range(counts[root]):
        member[n_animals, root] = i
        owner[root, i] = n_animals
        n_animals += 1
    for r in range(order.shape[0]):
        parent, child, e, sign = order[r, 0], order[r, 1], order[r, 2], order[r, 3]
        if parent >= 0:
            used[:] = False
            while True:
                best = min_link
                bi, bj = -1, -1
                for i in range(counts[parent]):
                    if used[i]:
                        continue
                    for j in range(counts[child]):
                        if used[m + j]:
                            continue
                        s = link_score(paf, e, sign, peaks[parent, i, 0], peaks[parent, i, 1],
                                       peaks[child, j, 0], peaks[child, j, 1], stride, offset)
                        if s > best:
                            best, bi, bj = s, i, j
                if bi < 0:
                    break
                used[bi] = True
                used[m + bj] = True
                a = owner[parent, bi]
                if a >= 0 and member[a, child] < 0:
                    member[a, child] = bj
                    owner[child, bj] = a
        for j in range(counts[child]):
            if owner[child, j] < 0:  # unlinked: a fragment of its own
                member[n_animals, child] = j
                owner[child, j] = n_animals
                n_animals += 1
    for a in range(n_animals):
        total = 0.0
        parts = 0
        for p in range(k):
            if member[a, p] >= 0:
                total += likelihood[p, member[a, p]]
                parts += 1
        scores[a] = total if parts >= min_parts else -1.0 - total  # fragments rank below
    # the N strongest animals with min_parts, strongest first
    written = 0
    for _ in range(n_out):
        best_a = -1
        best_s = -0.5
        for a in range(n_animals):  # the strongest animal not taken yet (first on ties)
            if scores[a] > best_s:
                best_s, best_a = scores[a], a
        if best_a < 0:
            break
        scores[best_a] = -np.inf
        ranked[written] = best_a
        written += 1
    # fragments cut off by a part that was not found (e.g. a leg's middle joint) join the
    # nearest written animal that lacks all their parts, within half that animal's extent
    while True:
        frag = -1
        best_s = -np.inf
        for a in range(n_animals):
            if scores[a] > best_s:
                best_s, frag = scores[a], a
        if frag < 0:
            break
        scores[frag] = -np.inf
        target, target_d = -1, np.inf
        for r in range(written):
            a = ranked[r]
            clash = False
            lo_x = lo_y = np.inf
            hi_x = hi_y = -np.inf
            d_min = np.inf
            for p in range(k):
                i = member[a, p]
                if i < 0:
                    continue
                if member[frag, p] >= 0:
                    clash = True
                    break
                x, y = peaks[p, i, 0], peaks[p, i, 1]
                lo_x, hi_x = min(lo_x, x), max(hi_x, x)
                lo_y, hi_y = min(lo_y, y), max(hi_y, y)
                for q in range(k):
                    j = member[frag, q]
                    if j >= 0:
                        dx, dy = peaks[q, j, 0] - x, peaks[q, j, 1] - y
                        d_min = min(d_min, math.sqrt(dx * dx + dy * dy))
            if clash:
                continue
            radius = max(2.0 * stride, 0.5 * max(hi_x - lo_x, hi_y - lo_y))
            if d_min <= radius and d_min < target_d:
                target, target_d = a, d_min
        if target >= 0:
            for p in range(k):
                if member[frag, p] >= 0:
                    member[target, p] = member[frag, p]
    for r in range(written):
        a = ranked[r]
        for p in range(k):
            i = member[a, p]
            if i >= 0:
                out[r, p, 0] = peaks[p, i, 0]
                out[r, p, 1] = peaks[p, i, 1]
                out[r, p, 2] = likelihood[p, i]
            else:
                out[r, p, 0] = np.nan
                out[r, p, 1] = np.nan
                out[r, p, 2] = 0.0
    for r in range(written, n_out):
        for p in range(k):
            out[r, p, 0] = np.nan
            out[r, p, 1] = np.nan
            out[r, p, 2] = 0.0
    return written
