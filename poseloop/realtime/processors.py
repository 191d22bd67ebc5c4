"""Pose processors: latency compensation, and running any DeepLabCut-Live processor.

A processor maps a K x 3 pose (x, y, likelihood in full-frame pixels) to a pose. poseloop
calls it the DeepLabCut-Live way, ``process(pose, **kwargs)``, with the kwargs
``frame_time`` (DeepLabCut-Live's: wall-clock seconds, ``time.time()``, of the capture),
``t_capture_ns`` (host ``perf_counter_ns`` at capture), ``latency_ns`` (the engine's measured
capture-to-output latency, or None) and ``frame_index``; so any ``dlclive.Processor``
subclass works unchanged.
"""

from __future__ import annotations

import importlib
import inspect
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from poseloop.errors import ConfigError, PoseloopError
from poseloop.realtime.types import Processor

#: The kwargs every processor may receive (see the module docstring).
PROCESS_KWARGS = ("frame_time", "t_capture_ns", "latency_ns", "frame_index")

# Prior standard deviations of a newly seen bodypart's velocity (px/s) and acceleration
# (px/s^2); its position starts at the measurement with the measurement's variance.
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
    """One frame for all K bodyparts; writes the pose predicted ``horizon`` s ahead into out.

    state K x n x 2 (x and y share each bodypart's n x n covariance ``cov``, as they share
    the model and the measurement times); last_ns K: time of the last accepted measurement,
    -1 when the bodypart is not tracked. f, q, tmp: n x n work arrays.
    """
    n = state.shape[1]
    _transition(f, dt)
    _process_noise(q, dt, density)
    for j in range(pose.shape[0]):
        x, y, lik = pose[j, 0], pose[j, 1], pose[j, 2]
        good = lik >= pcutoff and math.isfinite(x) and math.isfinite(y)
        if last_ns[j] >= 0 and t_ns - last_ns[j] > max_gap_ns:
            last_ns[j] = -1
        s, c = state[j], cov[j]
        if last_ns[j] >= 0:
            for col in range(2):  # s <- F s
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
                rx, ry = x - s[0, 0], y - s[0, 1]
                for i in range(n):
                    tmp[0, i] = c[0, i]
                for i in range(n):
                    gain = c[i, 0] / denominator
                    s[i, 0] += gain * rx
                    s[i, 1] += gain * ry
                    for k in range(n):
                        c[i, k] -= gain * tmp[0, k]
                last_ns[j] = t_ns
        elif good:
            s[:] = 0.0
            s[0, 0], s[0, 1] = x, y
            c[:] = 0.0
            for i in range(n):
                c[i, i] = p0[i]
            last_ns[j] = t_ns
        if last_ns[j] >= 0:
            px, py, term = 0.0, 0.0, 1.0
            for i in range(n):
                px += s[i, 0] * term
                py += s[i, 1] * term
                term *= horizon / (i + 1)
            out[j, 0], out[j, 1] = px, py
        else:
            out[j, 0], out[j, 1] = x, y
        out[j, 2] = lik
    return out


class KalmanPredictor:
    """Latency compensation: each bodypart's pose predicted to t_capture + latency.

    Per bodypart a Kalman filter on (x, y) with a constant-velocity (order 1) or
    constant-acceleration (order 2) model, stepped by the frames' own capture times (any
    frame rate, dropped frames included). Measurements with likelihood < pcutoff (or NaN)
    are skipped: the filter coasts on its prediction. A bodypart unseen for longer than
    max_gap_ms is forgotten and restarts at its next confident measurement; until then its
    raw row is passed through. The likelihood column is always the measured one.

    latency_ms: fixed prediction horizon; None uses each call's ``latency_ns``.
    measurement_noise: std (px) of the network's position error.
    process_noise: how fast the top derivative may change: its random walk's std after 1 s
        (px/s per sqrt(s) for order 1, px/s^2 per sqrt(s) for order 2).
    """

    def __init__(
        self,
        latency_ms: float | None = None,
        order: int = 1,
        pcutoff: float = 0.5,
        measurement_noise: float = 3.0,
        process_noise: float = 1000.0,
        max_gap_ms: float = 250.0,
    ):
        if order not in (1, 2):
            raise ConfigError(f"KalmanPredictor order must be 1 (velocity) or 2 "
                              f"(acceleration), got {order}")
        if measurement_noise <= 0 or process_noise <= 0 or max_gap_ms <= 0:
            raise ConfigError("KalmanPredictor measurement_noise, process_noise and max_gap_ms "
                              "must be > 0")
        if latency_ms is not None and latency_ms < 0:
            raise ConfigError(f"KalmanPredictor latency_ms must be >= 0, got {latency_ms}")
        self.latency_ms = latency_ms
        self.order = order
        self.pcutoff = float(pcutoff)
        self.measurement_noise = float(measurement_noise)
        self.process_noise = float(process_noise)
        self.max_gap_ns = int(max_gap_ms * 1e6)
        n = order + 1
        self._p0 = np.array([measurement_noise**2, *(v**2 for v in _INITIAL_STD)][:n])
        self._work = np.zeros((3, n, n))
        self.reset()

    def reset(self, k: int = 0) -> None:
        """Forget every bodypart (and size the state for k bodyparts)."""
        n = self.order + 1
        self._k = k
        self._state = np.zeros((k, n, 2))
        self._cov = np.zeros((k, n, n))
        self._last_ns = np.full(k, -1, np.int64)
        self._out = np.zeros((k, 3), np.float32)
        self._t_ns: int | None = None

    def warmup(self) -> None:
        """Compile (or load from numba's cache) the filter kernel; leaves no state behind."""
        self.process(np.zeros((1, 3), np.float32), t_capture_ns=0, latency_ns=0)
        self.reset()

    def process(self, pose: np.ndarray, **kwargs: Any) -> np.ndarray:
        """The predicted pose (K x 3 float32, owned by the predictor: valid until the next call).

        kwargs: ``t_capture_ns`` (required) and ``latency_ns`` (required unless latency_ms).
        """
        t_ns = kwargs.get("t_capture_ns")
        if t_ns is None:
            raise ValueError("KalmanPredictor.process needs t_capture_ns (the frame's capture "
                             "time, perf_counter_ns)")
        latency_ns = kwargs.get("latency_ns")
        if self.latency_ms is not None:
            horizon = self.latency_ms * 1e-3
        elif latency_ns is not None:
            horizon = latency_ns * 1e-9
        else:
            raise ConfigError("KalmanPredictor has no latency: set latency_ms, or run it where "
                              "the engine passes the measured latency_ns")
        pose = np.ascontiguousarray(pose, dtype=np.float32)
        if pose.ndim != 2 or pose.shape[1] != 3:
            raise ValueError(f"a pose is K x 3 (x, y, likelihood), got shape {pose.shape}")
        if pose.shape[0] != self._k:
            self.reset(pose.shape[0])
        dt_ns = 0 if self._t_ns is None else t_ns - self._t_ns
        if dt_ns < 0:  # the clock went back (a new source): start over
            self.reset(self._k)
            dt_ns = 0
        self._t_ns = t_ns
        f, q, tmp = self._work
        return kalman_step(pose, t_ns, dt_ns * 1e-9, horizon, self.pcutoff,
                           self.process_noise**2, self.measurement_noise**2, self.max_gap_ns,
                           self._p0, self._state, self._cov, self._last_ns, f, q, tmp,
                           self._out)


class ProcessorChain:
    """Runs processors in order on a copy of the pose (the caller's array is never changed).

    Each processor gets the kwargs its ``process`` accepts among PROCESS_KWARGS (all of them
    with ``**kwargs``). A processor returning None keeps the pose; any other result is taken
    as a K x 3 pose (converted to float32 when it is not).
    """

    def __init__(self, processors: Sequence[Processor]):
        for p in processors:
            if not callable(getattr(p, "process", None)):
                raise ConfigError(f"{type(p).__name__} is not a processor: it has no "
                                  f"process(pose, **kwargs) method")
        self.processors = list(processors)
        self._accepts = [_accepted_kwargs(p) for p in self.processors]
        # DeepLabCut-Live's frame_time is wall-clock seconds: the clocks' offset, fixed once
        # so that frame_time differences equal capture-time differences exactly.
        self._wall_minus_perf_s = time.time() - time.perf_counter_ns() * 1e-9
        self._pose = np.zeros((0, 3), np.float32)

    def warmup(self) -> None:
        """Warm up the processors that have a ``warmup()`` (e.g. compile numba kernels)."""
        for p in self.processors:
            if callable(getattr(p, "warmup", None)):
                p.warmup()

    def process(self, pose: np.ndarray, *, t_capture_ns: int, latency_ns: int | None = None,
                frame_index: int | None = None) -> np.ndarray:
        """The pose after every processor (K x 3 float32; may be a processor's own buffer)."""
        if self._pose.shape != pose.shape:
            self._pose = np.empty(pose.shape, np.float32)
        np.copyto(self._pose, pose)
        current = self._pose
        kwargs = {"frame_time": t_capture_ns * 1e-9 + self._wall_minus_perf_s,
                  "t_capture_ns": t_capture_ns, "latency_ns": latency_ns,
                  "frame_index": frame_index}
        for p, accepts in zip(self.processors, self._accepts, strict=True):
            given = kwargs if accepts is None else {n: kwargs[n] for n in accepts}
            result = p.process(current, **given)
            if result is not None:
                current = _as_pose(result, current.shape, p)
        return current

    def save(self, file: str = "") -> None:
        """Call each processor's DeepLabCut-Live ``save(file)`` (file_<i> when there are many)."""
        savers = [p for p in self.processors if callable(getattr(p, "save", None))]
        for i, p in enumerate(savers):
            path = Path(file)
            p.save(file if len(savers) == 1 or not file
                   else str(path.with_name(f"{path.stem}_{i}{path.suffix}")))


def load_processor(target: str, kwargs: Mapping[str, Any] | None = None) -> Processor:
    """Instantiate ``"module:Class"`` with ``kwargs`` (as config files name processors)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"processor {target!r}: expected 'module:Class', e.g. "
                          f"'poseloop.realtime.processors:KalmanPredictor'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"processor {target!r}: cannot import {module_name}: {e}") from e
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(f"processor {target!r}: {module_name} has no {attr}")
    try:
        processor = cls(**dict(kwargs or {}))
    except TypeError as e:
        raise ConfigError(f"processor {target!r}: bad arguments {dict(kwargs or {})}: {e}") from e
    if not callable(getattr(processor, "process", None)):
        raise ConfigError(f"processor {target!r}: has no process(pose, **kwargs) method")
    return processor


def _accepted_kwargs(processor: Processor) -> tuple[str, ...] | None:
    """The PROCESS_KWARGS that processor.process takes by name; None when it takes **kwargs."""
    try:
        params = inspect.signature(processor.process).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: pass everything
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    names = {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return tuple(n for n in PROCESS_KWARGS if n in names)


def _as_pose(result: Any, shape: tuple[int, ...], processor: Processor) -> np.ndarray:
    pose = np.asarray(result, dtype=np.float32)
    if pose.shape != shape:
        raise PoseloopError(f"processor {type(processor).__name__} returned an array of shape "
                            f"{pose.shape}; a pose is {shape[0]} x 3 (x, y, likelihood)")
    return pose
