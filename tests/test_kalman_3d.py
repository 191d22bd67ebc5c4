"""Processors on triangulated 3D poses (N x K x 4: x, y, z in mm, likelihood)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from poseloop.errors import PoseloopError
from poseloop.realtime.processors import DlcLiveAdapter, KalmanPredictor, ProcessorChain

LATENCY_S = 0.030
VELOCITY = np.array([300.0, -200.0, 120.0])  # mm/s


def capture_times(n: int, rng: np.random.Generator) -> np.ndarray:
    """~30 fps with jitter, and every 17th frame dropped (variable dt)."""
    dt = rng.uniform(0.028, 0.038, n)
    dt[::17] *= 2
    return np.concatenate([[0.0], np.cumsum(dt)[:-1]])


def straight(t: np.ndarray) -> np.ndarray:
    """A constant-velocity 3D path (mm), T x 3."""
    return np.array([100.0, 400.0, 20.0]) + t[:, None] * VELOCITY


def run(predictor: KalmanPredictor, times: np.ndarray, measured: np.ndarray,
        likelihood: np.ndarray) -> np.ndarray:
    """Outputs T x ... x (D + 1) for measurements T x ... x D at capture times T (s)."""
    out = []
    for t, xyz, p in zip(times, measured, likelihood, strict=True):
        pose = np.concatenate([xyz, p[..., None]], axis=-1).astype(np.float32)
        out.append(predictor.process(pose, t_capture_ns=int(1e9 * (5 + t))).copy())
    return np.array(out)


@pytest.mark.parametrize("order", [1, 2])
def test_constant_velocity_3d_is_predicted_ahead(order: int) -> None:
    """Exact measurements: the point 30 ms ahead to within 0.01 mm (it lags 11.4 mm
    without prediction); 2 mm noise per axis: half the raw lag error or less."""
    rng = np.random.default_rng(0)
    t = capture_times(200, rng)
    future = straight(t + LATENCY_S)[:, None, None]  # T x 1 x 1 x 3
    likelihood = np.full((200, 1, 1), 0.95)
    exact = straight(t)[:, None, None]
    out = run(KalmanPredictor(pcutoff=0.5, latency_ms=LATENCY_S * 1e3, order=order), t,
              exact, likelihood)
    assert out.shape == (200, 1, 1, 4) and out.dtype == np.float32
    assert np.linalg.norm(exact - future, axis=-1).min() > 11
    assert np.linalg.norm(out[15:, ..., :3] - future[15:], axis=-1).max() < 0.01
    assert np.array_equal(out[..., 3], likelihood.astype(np.float32))  # passed through
    noisy = exact + rng.normal(0, 2.0, exact.shape)
    out = run(KalmanPredictor(pcutoff=0.5, latency_ms=LATENCY_S * 1e3, order=order,
                              process_noise=1000.0), t, noisy, likelihood)
    err = np.linalg.norm(out[15:, ..., :3] - future[15:], axis=-1).mean()
    lag = np.linalg.norm(noisy[15:] - future[15:], axis=-1).mean()
    assert err < 0.5 * lag, (err, lag)


def test_each_axis_is_the_2d_filter() -> None:
    """x, y, z share the model: the 3D filter's x, y are the 2D filter's on (x, y) exactly,
    and its z is the 2D filter's x on (z, x); confidence gaps and restarts included."""
    rng = np.random.default_rng(3)
    t = capture_times(150, rng)
    measured = np.stack([straight(t), straight(t)[:, ::-1] * 0.5], axis=1)[:, None]
    measured += rng.normal(0, 1.5, measured.shape)  # T x N=1 x K=2 x 3
    likelihood = rng.uniform(0.3, 1.0, (150, 1, 2))
    likelihood[40:60, 0, 1] = 0.1  # hidden long enough to restart
    for order in (1, 2):
        def make(order: int = order) -> KalmanPredictor:
            return KalmanPredictor(pcutoff=0.5, latency_ms=30, order=order)
        three = run(make(), t, measured, likelihood)
        xy = run(make(), t, measured[..., :2], likelihood)
        zx = run(make(), t, measured[..., [2, 0]], likelihood)
        np.testing.assert_array_equal(three[..., :2], xy[..., :2])
        np.testing.assert_array_equal(three[..., 2], zx[..., 0])


def test_unseen_3d_points_are_skipped_and_passed_through() -> None:
    kalman = KalmanPredictor(pcutoff=0.5, latency_ms=30)
    pose = np.array([[[1.0, 2.0, np.nan, 0.9], [4.0, 5.0, 6.0, 0.9]]], np.float32)
    out = kalman.process(pose, t_capture_ns=1)
    np.testing.assert_array_equal(out[0, 0], pose[0, 0])  # a NaN coordinate: not tracked
    np.testing.assert_array_equal(out[0, 1], pose[0, 1])  # first sight: the measurement


def test_shapes_are_checked_with_a_clear_message() -> None:
    kalman = KalmanPredictor(pcutoff=0.5, latency_ms=30)
    for shape in [(1, 2, 5), (1, 2, 2), (8,), (1, 1, 2, 4)]:
        with pytest.raises(ValueError, match=r"N x K x 3 or K x 3 \(x, y, likelihood\), or "
                                             r"N x K x 4 or K x 4 in 3D \(x, y, z, likelihood\)"
                                             rf"; got shape \({shape[0]},"):
            kalman.process(np.zeros(shape, np.float32), t_capture_ns=0)
    assert kalman.process(np.zeros((2, 4), np.float32), t_capture_ns=0).shape == (2, 4)


def test_3d_filter_allocates_nothing_per_frame() -> None:
    kalman = KalmanPredictor(pcutoff=0.5, latency_ms=30, order=2)
    kalman.warmup()
    rng = np.random.default_rng(1)
    poses = (rng.random((50, 4, 64, 4)) * [100, 100, 100, 1]).astype(np.float32)  # 4 KiB each
    first = kalman.process(poses[0], t_capture_ns=1_000_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i, pose in enumerate(poses[1:], 1):
            assert kalman.process(pose, t_capture_ns=1_000_000 + i * 33_000_000) is first
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current - before < 1024 and peak - before < 2048, (current - before, peak - before)


def test_chain_and_dlclive_adapter_take_3d_points() -> None:
    class Shift:
        def __init__(self) -> None:
            self.shapes: list[tuple[int, ...]] = []

        def process(self, pose: np.ndarray) -> np.ndarray:
            self.shapes.append(pose.shape)
            return pose + [0, 0, 1, 0]

    shift = Shift()
    chain = ProcessorChain([DlcLiveAdapter(shift), KalmanPredictor(pcutoff=0.5, latency_ms=30)])
    points = np.array([[[1, 2, 3, 0.9], [4, 5, 6, 0.2]]], np.float32)
    out = chain.process(points, t_capture_ns=10)
    assert shift.shapes == [(2, 4)]  # one animal: DeepLabCut-Live's K x C pose
    np.testing.assert_array_equal(out, np.array([[[1, 2, 4, 0.9], [4, 5, 7, 0.2]]], np.float32))
    with pytest.raises(ValueError, match="N x K x 4 \\(x, y, z, likelihood\\); got shape"):
        chain.process(np.zeros((1, 2, 5), np.float32), t_capture_ns=20)

    class Wrong:
        def process(self, pose: np.ndarray, **kwargs: object) -> np.ndarray:
            return pose[..., :3]

    with pytest.raises(PoseloopError, match="x \\(x, y, z, likelihood\\)"):
        ProcessorChain([Wrong()]).process(points, t_capture_ns=30)
    with pytest.raises(PoseloopError, match="bodyparts x \\(x, y, z, likelihood\\)"):
        DlcLiveAdapter(Wrong()).process(points, t_capture_ns=30)
