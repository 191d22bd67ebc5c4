"""Latency compensation beats the lag of the raw pose; DeepLabCut-Live processors run as is."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from poseloop.errors import ConfigError, PoseloopError
from poseloop.realtime.processors import (
    PROCESS_KWARGS,
    KalmanPredictor,
    ProcessorChain,
    load_processor,
)

LATENCY_S = 0.030
Path2D = Callable[[np.ndarray], np.ndarray]


def constant_velocity(t: np.ndarray) -> np.ndarray:
    return np.stack([100 + 300 * t, 400 - 200 * t], axis=-1)


def circle(t: np.ndarray) -> np.ndarray:
    """A continuous turn: radius 150 px, half a turn per second (~470 px/s)."""
    return np.stack([320 + 150 * np.cos(np.pi * t), 240 + 150 * np.sin(np.pi * t)], axis=-1)


def right_angle(t: np.ndarray) -> np.ndarray:
    """400 px/s to the right, then (after 2 s) 400 px/s down."""
    first = np.minimum(t, 2.0)
    return np.stack([50 + 400 * first, 100 + 400 * (t - first)], axis=-1)


def accelerating(t: np.ndarray) -> np.ndarray:
    return np.stack([100 + 50 * t + 150 * t**2, 300 - 100 * t], axis=-1)


def capture_times(n: int, rng: np.random.Generator) -> np.ndarray:
    """~30 fps with jitter, and every 17th frame dropped (variable dt)."""
    dt = rng.uniform(0.028, 0.038, n)
    dt[::17] *= 2
    return np.concatenate([[0.0], np.cumsum(dt)[:-1]])


def run(predictor: KalmanPredictor, times: np.ndarray, measured: np.ndarray,
        likelihood: np.ndarray | None = None, **kwargs: int) -> np.ndarray:
    """Outputs (N x K x 3) for measurements N x K x 2 at capture times (s)."""
    n, k = measured.shape[:2]
    lik = np.full((n, k), 0.95) if likelihood is None else likelihood
    out = []
    for t, xy, p in zip(times, measured, lik, strict=True):
        pose = np.concatenate([xy, p[:, None]], axis=1).astype(np.float32)
        out.append(predictor.process(pose, t_capture_ns=int(1e9 * (5 + t)), **kwargs).copy())
    return np.array(out)


def errors(path: Path2D, noise: float, order: int = 1, seed: int = 0) -> tuple[float, float]:
    """(mean predictor error, mean raw lag error) vs the true position 30 ms ahead."""
    rng = np.random.default_rng(seed)
    t = capture_times(200, rng)
    measured = path(t)[:, None, :] + rng.normal(0, noise, (200, 1, 2))
    future = path(t + LATENCY_S)[:, None, :]
    predicted = run(KalmanPredictor(latency_ms=LATENCY_S * 1e3, order=order), t, measured)
    settle = 15
    err = np.hypot(*(predicted[settle:, :, :2] - future[settle:]).T).mean()
    lag = np.hypot(*(measured[settle:] - future[settle:]).T).mean()
    return err, lag


@pytest.mark.parametrize("order", [1, 2])
def test_constant_velocity_is_predicted(order: int) -> None:
    err, lag = errors(constant_velocity, noise=0.0, order=order)
    assert lag > 9 and err < 0.05 * lag
    err, lag = errors(constant_velocity, noise=2.0, order=order)
    assert err < 0.45 * lag, (err, lag)


@pytest.mark.parametrize("path", [circle, right_angle])
@pytest.mark.parametrize("order", [1, 2])
def test_turns_with_noise_beat_the_lag(path: Path2D, order: int) -> None:
    err, lag = errors(path, noise=2.0, order=order)
    assert err < 0.5 * lag, (err, lag)


def test_acceleration_model_helps_when_accelerating() -> None:
    err1, lag = errors(accelerating, noise=0.0, order=1)
    err2, _ = errors(accelerating, noise=0.0, order=2)
    assert err2 < 0.5 * err1 and err1 < 0.1 * lag


def test_low_likelihood_outliers_are_ignored() -> None:
    rng = np.random.default_rng(1)
    t = capture_times(200, rng)
    truth = constant_velocity(t)[:, None, :]
    measured = truth.copy()
    likelihood = np.full((200, 1), 0.95)
    outliers = rng.random(200) < 0.2
    measured[outliers] += 150.0
    likelihood[outliers] = 0.05
    measured[5, 0] = np.nan  # a NaN row with a high likelihood is ignored too
    future = constant_velocity(t + LATENCY_S)
    gated = run(KalmanPredictor(latency_ms=30, pcutoff=0.5), t, measured, likelihood)
    ungated = run(KalmanPredictor(latency_ms=30, pcutoff=0.0), t, measured, likelihood)
    gated_err = np.hypot(*(gated[20:, 0, :2] - future[20:]).T)
    ungated_err = np.hypot(*(ungated[20:, 0, :2] - future[20:]).T)
    assert gated_err.max() < 0.5 and ungated_err.mean() > 10
    np.testing.assert_allclose(gated[:, 0, 2], likelihood[:, 0].astype(np.float32))


def test_unseen_bodypart_is_reset_and_never_seen_passes_through() -> None:
    predictor = KalmanPredictor(latency_ms=30, max_gap_ms=200)
    t = np.arange(40) * 0.033
    measured = constant_velocity(t)[:, None, :].repeat(2, axis=1)
    likelihood = np.full((40, 2), 0.9)
    likelihood[:, 1] = 0.1  # bodypart 1: never confident
    likelihood[10:20, 0] = 0.1  # bodypart 0: lost for 330 ms ...
    measured[20:, 0] += 300.0  # ... and found far away
    out = run(predictor, t, measured, likelihood)
    np.testing.assert_allclose(out[:, 1, :2], measured[:, 1], atol=1e-3)  # raw, not filtered
    np.testing.assert_allclose(out[20, 0, :2], measured[20, 0], atol=1e-3)  # restarted there
    # while lost but within max_gap it coasts on its velocity
    np.testing.assert_allclose(out[12, 0, :2], constant_velocity(t[12:13] + 0.03)[0], atol=0.5)


def test_measured_latency_per_call() -> None:
    rng = np.random.default_rng(2)
    t = capture_times(60, rng)
    measured = constant_velocity(t)[:, None, :]
    fixed = run(KalmanPredictor(latency_ms=30), t, measured)
    measured_latency = run(KalmanPredictor(), t, measured, latency_ns=30_000_000)
    np.testing.assert_allclose(fixed, measured_latency, atol=1e-3)
    with pytest.raises(ConfigError, match="latency"):
        KalmanPredictor().process(np.zeros((1, 3), np.float32), t_capture_ns=0)
    with pytest.raises(ValueError, match="t_capture_ns"):
        KalmanPredictor(latency_ms=1).process(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="K x 3"):
        KalmanPredictor(latency_ms=1).process(np.zeros((4, 2), np.float32), t_capture_ns=0)


def test_clock_going_back_restarts() -> None:
    predictor = KalmanPredictor(latency_ms=30)
    for i in range(10):
        predictor.process(np.array([[10.0 * i, 0, 1]], np.float32), t_capture_ns=i * 10**8)
    out = predictor.process(np.array([[500.0, 50, 1]], np.float32), t_capture_ns=0)
    np.testing.assert_allclose(out, [[500, 50, 1]])


def test_warmup_leaves_no_state() -> None:
    predictor = KalmanPredictor(latency_ms=30)
    predictor.warmup()
    out = predictor.process(np.array([[7.0, 8.0, 0.9]], np.float32), t_capture_ns=10**9)
    np.testing.assert_allclose(out, [[7, 8, 0.9]])


@pytest.mark.parametrize("kwargs", [{"order": 3}, {"measurement_noise": 0}, {"latency_ms": -1}])
def test_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        KalmanPredictor(**kwargs)


class DlcStyleProcessor:
    """Shaped like dlclive.Processor: process(self, pose, **kwargs) and save(file)."""

    def __init__(self, shift: float = 0.0, **kwargs: object):
        self.shift = shift
        self.calls: list[dict] = []
        self.saved: list[str] = []

    def process(self, pose: np.ndarray, **kwargs: object) -> np.ndarray:
        self.calls.append(kwargs)
        pose[:, 0] += self.shift  # DLC-Live processors may modify the pose in place
        return pose.astype(np.float64)

    def save(self, file: str = "") -> int:
        self.saved.append(file)
        return 0


class ReturnsNothing:
    def process(self, pose: np.ndarray, **kwargs: object) -> None:
        return None


class NoKwargs:
    """The oldest dlclive.Processor signature: process(self, pose)."""

    def process(self, pose: np.ndarray) -> list:
        return (pose * 2).tolist()


class SomeKwargs:
    def __init__(self) -> None:
        self.seen: dict = {}

    def process(self, pose: np.ndarray, frame_index: int | None = None) -> np.ndarray:
        self.seen = {"frame_index": frame_index}
        return pose


def test_chain_runs_dlclive_processors_with_frame_time() -> None:
    dlc = DlcStyleProcessor(shift=1.5)
    some = SomeKwargs()
    chain = ProcessorChain([dlc, ReturnsNothing(), NoKwargs(), some])
    pose = np.array([[10.0, 20.0, 0.9], [30.0, 40.0, 0.8]], np.float32)
    original = pose.copy()
    t_capture = time.perf_counter_ns() - 5_000_000  # captured 5 ms ago
    out = chain.process(pose, t_capture_ns=t_capture, latency_ns=12_000_000, frame_index=42)
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_allclose(out, (original + [[1.5, 0, 0]]) * 2)
    np.testing.assert_array_equal(pose, original)  # the caller's pose is untouched
    (kwargs,) = dlc.calls
    assert set(kwargs) == set(PROCESS_KWARGS)
    assert abs(kwargs["frame_time"] - (time.time() - 0.005)) < 0.05  # wall clock, as DLC-Live
    assert kwargs["t_capture_ns"] == t_capture and kwargs["latency_ns"] == 12_000_000
    assert some.seen == {"frame_index": 42}
    chain.process(pose, t_capture_ns=t_capture + 33_000_000)
    assert abs(dlc.calls[1]["frame_time"] - kwargs["frame_time"] - 0.033) < 1e-6
    chain.save("session.pkl")
    assert dlc.saved == ["session.pkl"]


def test_chain_with_the_kalman_predictor_and_a_loaded_processor() -> None:
    kalman = load_processor("poseloop.realtime.processors:KalmanPredictor",
                            {"latency_ms": 30, "order": 2})
    assert isinstance(kalman, KalmanPredictor) and kalman.order == 2
    dlc = load_processor(f"{__name__}:DlcStyleProcessor", {"shift": 0.0})
    chain = ProcessorChain([kalman, dlc])
    chain.warmup()
    for i in range(30):
        x = 100 + 10.0 * i
        out = chain.process(np.array([[x, 50, 0.9]], np.float32), t_capture_ns=i * 10**7,
                            frame_index=i)
    np.testing.assert_allclose(out[0, 0], x + 30, atol=0.1)  # 1000 px/s, 30 ms ahead
    assert [c["frame_index"] for c in dlc.calls] == list(range(30))


def test_chain_rejects_bad_processors_and_results() -> None:
    with pytest.raises(ConfigError, match="not a processor"):
        ProcessorChain([object()])  # type: ignore[list-item]

    class WrongShape:
        def process(self, pose: np.ndarray, **kwargs: object) -> np.ndarray:
            return pose[:, :2]

    with pytest.raises(PoseloopError, match="WrongShape returned an array of shape"):
        ProcessorChain([WrongShape()]).process(np.zeros((2, 3), np.float32), t_capture_ns=0)


@pytest.mark.parametrize("target, kwargs, match", [
    ("KalmanPredictor", None, "expected 'module:Class'"),
    ("no_such_module_xyz:Thing", None, "cannot import"),
    ("poseloop.realtime.processors:Nope", None, "has no Nope"),
    ("poseloop.realtime.processors:KalmanPredictor", {"speed": 3}, "bad arguments"),
    ("poseloop.realtime.processors:PROCESS_KWARGS", None, "bad arguments|no process"),
])
def test_load_processor_errors(target: str, kwargs: dict | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_processor(target, kwargs)
