"""Online identities for multi-animal poses: row n of every frame is the same animal.

The decoder writes up to N assembled animals per frame, strongest first. The tracker keeps
N tracks (one per individual of the model) with a constant-velocity motion model each
(every bodypart's last position moved by the track's velocity, the mean velocity of its
parts over the last frames) and assigns the frame's animals to the tracks that predict them
best: the mean distance between the predicted and the detected bodyparts (both confident),
plus, where the model has an identity head, a cost for an animal that looks like another
individual. Optimal assignment (Hungarian, scipy). A track with no animal for a frame is
lost (its row is NaN, likelihood 0, its id -1) and keeps its last position and velocity, so
the animal is found again on its old track when it reappears; at most N tracks ever exist.

Counts: ``new`` (a track's first animal), ``lost``, ``refound``; ``ids`` hold each row's
track number (= row) while it is tracked, -1 while lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

#: Likelihood a bodypart needs to be used for matching and motion.
MATCH_LIKELIHOOD = 0.1
#: Cost of giving an animal to a track that never had one, in pixels: an animal goes to a
#: track that predicts it within this distance before it starts a new one.
NEW_TRACK_COST = 1e4
#: Identity head: pixels of cost for an animal whose identity probability for a track is 0.
IDENTITY_COST = 50.0
#: Weight of the newest velocity in the track's running velocity.
VELOCITY_SMOOTHING = 0.5


@dataclass
class TrackCounts:
    """What the tracker did over a run."""

    new: int = 0
    lost: int = 0
    refound: int = 0


class AnimalTracker:
    """Keeps N identities across frames (see the module docstring).

    identity_source: an object whose ``identity`` attribute holds the current frame's
    N x individuals identity probabilities of the decoder's rows (the multi-animal decoder),
    or None.
    """

    def __init__(self, n: int, k: int, identity_source: object | None = None,
                 match_likelihood: float = MATCH_LIKELIHOOD) -> None:
        self.n, self.k = n, k
        self.match_likelihood = match_likelihood
        self.identity_source = identity_source
        self.position = np.full((n, k, 2), np.nan, np.float64)
        self.velocity = np.zeros((n, 2), np.float64)
        self.last_ns = np.zeros(n, np.int64)
        self.started = np.zeros(n, bool)
        self.tracked = np.zeros(n, bool)
        self.counts = TrackCounts()
        self._cost = np.zeros((n, n), np.float64)
        self._scratch = np.zeros((n, k, 3), np.float32)

    def reset(self) -> None:
        """Forget every track (e.g. between sessions); the counts are kept."""
        self.position[:] = np.nan
        self.velocity[:] = 0
        self.started[:] = False
        self.tracked[:] = False

    def predict(self, t_ns: int) -> np.ndarray:
        """Every track's bodyparts moved to time ``t_ns`` (N x K x 2; NaN where unknown)."""
        dt = np.where(self.started, (t_ns - self.last_ns) * 1e-9, 0.0)
        return self.position + (self.velocity * dt[:, None])[:, None, :]

    def update(self, points: np.ndarray, ids: np.ndarray, t_ns: int) -> None:
        """Reorder ``points`` (N x K x 3, the decoder's rows) so row n is track n; fill ids."""
        n = self.n
        seen = np.asarray(points[:, :, 2] >= self.match_likelihood, bool)  # N x K; NaN: False
        present = np.asarray(seen.any(axis=1), bool)
        predicted = self.predict(t_ns)
        cost = self._cost
        for d in range(n):
            for s in range(n):
                if not present[d]:
                    cost[d, s] = 0.0
                elif not self.started[s]:
                    cost[d, s] = NEW_TRACK_COST
                else:
                    cost[d, s] = _distance(points[d], seen[d], predicted[s])
        identity = getattr(self.identity_source, "identity", None)
        if identity is not None:
            probability = np.nan_to_num(np.asarray(identity, np.float64), nan=1.0 / n)
            cost += np.where(present[:, None], IDENTITY_COST * (1.0 - probability), 0.0)
        rows, slots = linear_sum_assignment(cost)
        order = np.empty(n, np.int64)
        order[slots] = rows
        np.copyto(self._scratch, points)
        for s in range(n):
            d = order[s]
            points[s] = self._scratch[d]
            if not present[d]:
                points[s, :, :2] = np.nan
                points[s, :, 2] = 0.0
                if self.tracked[s]:
                    self.counts.lost += 1
                    self.tracked[s] = False
                    self.velocity[s] = 0.0  # wait where it was last seen
                ids[s] = -1
                continue
            self._follow(s, self._scratch[d], seen[d], t_ns)
            ids[s] = s

    def _follow(self, s: int, animal: np.ndarray, seen: np.ndarray, t_ns: int) -> None:
        """Track s takes this animal: count, update its velocity and positions."""
        if not self.started[s]:
            self.counts.new += 1
        elif not self.tracked[s]:
            self.counts.refound += 1
        xy = animal[:, :2].astype(np.float64)
        if self.started[s] and self.tracked[s]:
            dt = (t_ns - self.last_ns[s]) * 1e-9
            moved = xy[seen] - self.position[s][seen]
            moved = moved[np.isfinite(moved).all(axis=1)]
            if dt > 0 and len(moved):
                v = moved.mean(axis=0) / dt
                self.velocity[s] = VELOCITY_SMOOTHING * v + (1 - VELOCITY_SMOOTHING) \
                    * self.velocity[s]
        else:
            self.velocity[s] = 0.0
        self.position[s][seen] = xy[seen]
        self.last_ns[s] = t_ns
        self.started[s] = True
        self.tracked[s] = True


def _distance(animal: np.ndarray, seen: np.ndarray, predicted: np.ndarray) -> float:
    """Mean distance of an animal's confident parts to a track's predicted parts; the
    distance of their centres when they share no part."""
    known = np.isfinite(predicted[:, 0])
    both = seen & known
    if both.any():
        d = animal[both, :2] - predicted[both]
        return float(np.sqrt((d * d).sum(axis=1)).mean())
    if not known.any():
        return NEW_TRACK_COST
    centre = animal[seen, :2].mean(axis=0) - predicted[known].mean(axis=0)
    return float(np.hypot(*centre))
