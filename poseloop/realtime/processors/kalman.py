"""Latency compensation: every bodypart of every individual predicted to t_capture + latency.

Config ``type: kalman``. One numba kernel filters the rows of the N x K x 3 points (row
n * K + k is bodypart k of individual n; x, y in pixels), or of triangulated N x K x 4
points (x, y, z in world units, mm); identities come from the tracker, so row n is the
same animal on every frame, and N = 1 is exactly the single-animal filter. Noise settings
are in the points' units: px in 2D, mm in 3D.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numba import njit
from pydantic import Field, field_validator

from poseloop.config import Strict, validate
from poseloop.errors import ConfigError
from poseloop.realtime.processors.chain import PROCESSORS

# Prior standard deviations of a newly seen bodypart's velocity (units/s) and acceleration
# (units/s^2); its position starts at the measurement with the measurement's variance.
_INITIAL_STD = (1000.0, 10000.0)


@njit(cache=True, nogil=True)
def _transition(f: np.ndarray, dt: float) -> None:
    """Constant-derivative model: f[i, k] = dt^(k-i) / (k-i)! for k >= i."""
    n = f.shape[0]
    for i in range(n):
        for k in range(n):
            f[i, k] = dt ** (k - i) / math.gamma(k - i + 1) if k >= i else 0.0


@njit(cache=True, nogil=True)
def _process_noise(q: np.ndarray, dt: float, density: float) -> None:
    """Covariance added over dt by white noise of spectral ``density`` on the top derivative."""
    n = q.shape[0]
    for i in range(n):
        for k in range(n):
            p = 2 * n - 1 - i - k
            q[i, k] = density * dt**p / (p * math.gamma(n - i) * math.gamma(n - k))


@njit(cache=True, nogil=True)
def kalman_step(
    pose: np.ndarray,
    t_ns: int,
    dt: float,
    horizon: float,
    pcutoff: float,
    density: float,
    r2: float,
    max_gap_ns: int,
    p0: np.ndarray,
    state: np.ndarray,
    cov: np.ndarray,
    last_ns: np.ndarray,
    f: np.ndarray,
    q: np.ndarray,
    tmp: np.ndarray,
    out: np.ndarray,
) -> np.ndarray:
    """One frame for R rows (bodyparts); writes the rows predicted ``horizon`` s ahead into out.

    pose, out: R x (D + 1), D coordinates (x, y; or x, y, z) then the likelihood. state
    R x n x D (the coordinates share each row's n x n covariance ``cov``, as they share the
    model and the measurement times); last_ns R: time of the last accepted measurement, -1
    when the row is not tracked. f, q, tmp: n x n work arrays.
    """
    n = state.shape[1]
    d = state.shape[2]
    _transition(f, dt)
    _process_noise(q, dt, density)
    for j in range(pose.shape[0]):
        lik = pose[j, d]
        good = lik >= pcutoff
        for col in range(d):
            good = good and math.isfinite(pose[j, col])
        if last_ns[j] >= 0 and t_ns - last_ns[j] > max_gap_ns:
            last_ns[j] = -1
        s, c = state[j], cov[j]
        if last_ns[j] >= 0:
            for col in range(d):  # s <- F s
                for i in range(n):
                    acc = 0.0
                    for k in range(i, n):
                        acc += f[i, k] * s[k, col]
                    s[i, col] = acc
            for i in range(n):  # c <- F c F' + Q
                for k in range(n):
                    acc = 0.0
                    for m in range(i, n):
                        acc += f[i, m] * c[m, k]
                    tmp[i, k] = acc
            for i in range(n):
                for k in range(n):
                    acc = q[i, k]
                    for m in range(k, n):
                        acc += tmp[i, m] * f[k, m]
                    c[i, k] = acc
            if good:  # measurement of the position: H = [1, 0, ...]
                denominator = c[0, 0] + r2
                for i in range(n):
                    tmp[0, i] = c[0, i]
                for i in range(n - 1, -1, -1):  # row 0 last: the residuals use its prior
                    gain = c[i, 0] / denominator
                    for col in range(d):
                        s[i, col] += gain * (pose[j, col] - s[0, col])
                    for k in range(n):
                        c[i, k] -= gain * tmp[0, k]
                last_ns[j] = t_ns
        elif good:
            s[:] = 0.0
            for col in range(d):
                s[0, col] = pose[j, col]
            c[:] = 0.0
            for i in range(n):
                c[i, i] = p0[i]
            last_ns[j] = t_ns
        if last_ns[j] >= 0:
            for col in range(d):
                value, term = 0.0, 1.0
                for i in range(n):
                    value += s[i, col] * term
                    term *= horizon / (i + 1)
                out[j, col] = value
        else:
            for col in range(d):
                out[j, col] = pose[j, col]
        out[j, d] = lik
    return out


class KalmanConfig(Strict):
    """Latency compensation by Kalman forward prediction (see KalmanPredictor)."""

    type: Literal["kalman"] = "kalman"
    latency_ms: float | Literal["measured"] | None = Field(
        default=None,
        description="prediction horizon: ms; None = each frame's capture -> now; 'measured' = "
        "the median exposure -> output latency the devices' trigger timing measured (each "
        "frame's capture -> now until there is one)",
    )

    @field_validator("latency_ms")
    @classmethod
    def _non_negative(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, float | int) and value < 0:
            raise ValueError(f"latency_ms must be >= 0, got {value}")
        return value
    order: Literal[1, 2] = 1
    pcutoff: float | None = Field(default=None, ge=0, le=1, description="None = model pcutoff")
    measurement_noise: float = Field(
        default=3.0, gt=0,
        description="std of the position error, in the points' units: px (2D), mm (3D)")
    process_noise: float = Field(
        default=3000.0, gt=0,
        description="std after 1 s of the top derivative's random walk, in the points' units "
        "(px/s or px/s^2 per sqrt(s) in 2D; mm/s or mm/s^2 per sqrt(s) in 3D)")
    max_gap_ms: float = Field(default=250.0, gt=0)


class KalmanPredictor:
    """Latency compensation: each bodypart's position predicted to t_capture + latency.

    Per bodypart of every individual a Kalman filter on (x, y), or on (x, y, z) for
    triangulated N x K x 4 points, with a constant-velocity (order 1) or
    constant-acceleration (order 2) model, stepped by the frames' own capture times (any
    frame rate, dropped frames included). Measurements with likelihood < pcutoff
    (or NaN) are skipped: the filter coasts on its prediction. A bodypart unseen for longer
    than max_gap_ms is forgotten and restarts at its next confident measurement; until then
    its raw row is passed through. The likelihood column is always the measured one.

    Built from a KalmanConfig, or from its fields as keywords (its defaults apply):
    latency_ms: fixed prediction horizon; None uses each call's ``latency_ns``; "measured"
        its ``trigger_latency_ns`` (exposure -> output, from the devices), else ``latency_ns``.
    measurement_noise: std of the position error, in the points' units (px; mm in 3D).
    process_noise: how fast the top derivative may change: its random walk's std after 1 s
        (px/s per sqrt(s) for order 1, px/s^2 per sqrt(s) for order 2; mm in 3D).
    pcutoff: None means the model's, so it must be given here (``make_processors`` does).
    """

    def __init__(self, config: KalmanConfig | None = None, /, **options: Any):
        if config is None:
            config = validate(KalmanConfig, options, "KalmanPredictor")
        elif options:
            raise TypeError("KalmanPredictor takes a KalmanConfig or its fields, not both")
        if config.pcutoff is None:
            raise ConfigError("KalmanPredictor pcutoff is None (= the model's): give a "
                              "pcutoff, or build it with make_processors from the model's")
        self.config = config
        self._order = config.order
        self._measured = config.latency_ms == "measured"
        self._latency_s = (config.latency_ms * 1e-3 if isinstance(config.latency_ms, float | int)
                           else None)
        self._pcutoff = config.pcutoff
        self._density = config.process_noise**2
        self._r2 = config.measurement_noise**2
        self._max_gap_ns = int(config.max_gap_ms * 1e6)
        n = config.order + 1
        self._p0 = np.array([config.measurement_noise**2, *(v**2 for v in _INITIAL_STD)][:n])
        self._work = np.zeros((3, n, n))
        self.reset()

    def reset(self, shape: tuple[int, ...] = (0, 3)) -> None:
        """Forget every bodypart (and size the state for points of this shape)."""
        n = self._order + 1
        self._out = np.zeros(shape, np.float32)
        self._rows = self._out.reshape(-1, shape[-1])
        r, columns = self._rows.shape
        self._state = np.zeros((r, n, columns - 1))
        self._cov = np.zeros((r, n, n))
        self._last_ns = np.full(r, -1, np.int64)
        self._t_ns: int | None = None

    def warmup(self) -> None:
        """Compile (or load from numba's cache) the filter kernel; leaves no state behind."""
        self.process(np.zeros((1, 1, 3), np.float32), t_capture_ns=0, latency_ns=0)
        self.reset()

    def process(self, pose: np.ndarray, **kwargs: Any) -> np.ndarray:
        """The predicted points, shaped as ``pose`` (N x K x 3, or one individual's K x 3;
        N x K x 4 or K x 4 in 3D); float32, owned by the predictor: valid until the next call.

        kwargs: ``t_capture_ns`` (required) and ``latency_ns`` (required unless latency_ms).
        """
        t_ns = kwargs.get("t_capture_ns")
        if t_ns is None:
            raise ValueError("KalmanPredictor.process needs t_capture_ns (the frame's capture "
                             "time, perf_counter_ns)")
        latency_ns = kwargs.get("latency_ns")
        if self._measured and kwargs.get("trigger_latency_ns") is not None:
            latency_ns = kwargs["trigger_latency_ns"]
        if self._latency_s is not None:
            horizon = self._latency_s
        elif latency_ns is not None:
            horizon = latency_ns * 1e-9
        else:
            raise ConfigError("KalmanPredictor has no latency: set latency_ms, or run it where "
                              "the engine passes the measured latency_ns")
        pose = np.ascontiguousarray(pose, dtype=np.float32)
        if pose.shape != self._out.shape:
            if pose.ndim not in (2, 3) or pose.shape[-1] not in (3, 4):
                raise ValueError(f"KalmanPredictor: points are N x K x 3 or K x 3 (x, y, "
                                 f"likelihood), or N x K x 4 or K x 4 in 3D (x, y, z, "
                                 f"likelihood); got shape {pose.shape}")
            self.reset(pose.shape)
        dt_ns = 0 if self._t_ns is None else t_ns - self._t_ns
        if dt_ns < 0:  # the clock went back (a new source): start over
            self.reset(pose.shape)
            dt_ns = 0
        self._t_ns = t_ns
        f, q, tmp = self._work
        kalman_step(pose.reshape(self._rows.shape), t_ns, dt_ns * 1e-9, horizon, self._pcutoff,
                    self._density, self._r2, self._max_gap_ns, self._p0, self._state,
                    self._cov, self._last_ns, f, q, tmp, self._rows)
        return self._out


@PROCESSORS.register("kalman", KalmanConfig)
def kalman(config: KalmanConfig, pcutoff: float) -> KalmanPredictor:
    """A KalmanPredictor; ``pcutoff: None`` takes the model's."""
    if config.pcutoff is None:
        config = config.model_copy(update={"pcutoff": pcutoff})
    return KalmanPredictor(config)
