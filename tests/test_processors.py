"""Latency compensation beats the lag of the raw pose, for every animal apart;
DeepLabCut-Live processors run as is; processor kinds come from the registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydantic import TypeAdapter

from poseloop.config import Strict
from poseloop.errors import ConfigError, PoseloopError
from poseloop.realtime.processors import (
    PROCESS_KWARGS,
    PROCESSORS,
    DlcLiveAdapter,
    KalmanConfig,
    KalmanPredictor,
    ProcessorChain,
    ProcessorConfig,
    PythonProcessorConfig,
    load_processor,
    make_processors,
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


def kalman(**options: object) -> KalmanPredictor:
    """A predictor with the config's defaults and the old class's pcutoff (0.5)."""
    return KalmanPredictor(**{"pcutoff": 0.5, **options})


def run(predictor: KalmanPredictor, times: np.ndarray, measured: np.ndarray,
        likelihood: np.ndarray | None = None, **kwargs: int) -> np.ndarray:
    """Outputs (T x ... x 3) for measurements T x ... x 2 (N x K or K points) at capture
    times T (s); likelihood T x ... (0.95 when not given)."""
    lik = np.full(measured.shape[:-1], 0.95) if likelihood is None else likelihood
    out = []
    for t, xy, p in zip(times, measured, lik, strict=True):
        pose = np.concatenate([xy, p[..., None]], axis=-1).astype(np.float32)
        out.append(predictor.process(pose, t_capture_ns=int(1e9 * (5 + t)), **kwargs).copy())
    return np.array(out)


def errors(path: Path2D, noise: float, order: int = 1, seed: int = 0,
           **options: float) -> tuple[float, float]:
    """(mean predictor error, mean raw lag error) vs the true position 30 ms ahead."""
    rng = np.random.default_rng(seed)
    t = capture_times(200, rng)
    measured = path(t)[:, None, None, :] + rng.normal(0, noise, (200, 1, 1, 2))  # T x N x K
    future = path(t + LATENCY_S)[:, None, None, :]
    predicted = run(kalman(latency_ms=LATENCY_S * 1e3, order=order, **options), t, measured)
    settle = 15
    err = np.hypot(*(predicted[settle:, ..., :2] - future[settle:]).T).mean()
    lag = np.hypot(*(measured[settle:] - future[settle:]).T).mean()
    return err, lag


@pytest.mark.parametrize("order", [1, 2])
def test_constant_velocity_is_predicted(order: int) -> None:
    err, lag = errors(constant_velocity, noise=0.0, order=order)
    assert lag > 9 and err < 0.05 * lag
    err, lag = errors(constant_velocity, noise=2.0, order=order)
    assert err < 0.55 * lag, (err, lag)
    # a steadier model (less process noise) smooths the noise of a steady path more
    err, lag = errors(constant_velocity, noise=2.0, order=order, process_noise=1000.0)
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
    truth = constant_velocity(t)[:, None, None, :]  # T x N x K
    measured = truth.copy()
    likelihood = np.full((200, 1, 1), 0.95)
    outliers = rng.random(200) < 0.2
    measured[outliers] += 150.0
    likelihood[outliers] = 0.05
    measured[5, 0] = np.nan  # a NaN row with a high likelihood is ignored too
    future = constant_velocity(t + LATENCY_S)
    gated = run(kalman(latency_ms=30), t, measured, likelihood)
    ungated = run(kalman(latency_ms=30, pcutoff=0.0), t, measured, likelihood)
    gated_err = np.hypot(*(gated[20:, 0, 0, :2] - future[20:]).T)
    ungated_err = np.hypot(*(ungated[20:, 0, 0, :2] - future[20:]).T)
    assert gated_err.max() < 0.5 and ungated_err.mean() > 10
    np.testing.assert_allclose(gated[..., 2], likelihood.astype(np.float32))


def test_unseen_bodypart_is_reset_and_never_seen_passes_through() -> None:
    predictor = kalman(latency_ms=30, max_gap_ms=200)
    t = np.arange(40) * 0.033
    measured = constant_velocity(t)[:, None, :].repeat(2, axis=1)
    likelihood = np.full((40, 2), 0.9)
    likelihood[:, 1] = 0.1  # bodypart 1: never confident
    likelihood[10:20, 0] = 0.1  # bodypart 0: lost for 330 ms ...
    measured[20:, 0] += 300.0  # ... and found far away
    out = run(predictor, t, measured[:, None], likelihood[:, None])[:, 0]  # one animal
    np.testing.assert_allclose(out[:, 1, :2], measured[:, 1], atol=1e-3)  # raw, not filtered
    np.testing.assert_allclose(out[20, 0, :2], measured[20, 0], atol=1e-3)  # restarted there
    # while lost but within max_gap it coasts on its velocity
    np.testing.assert_allclose(out[12, 0, :2], constant_velocity(t[12:13] + 0.03)[0], atol=0.5)


def test_measured_latency_per_call() -> None:
    rng = np.random.default_rng(2)
    t = capture_times(60, rng)
    measured = constant_velocity(t)[:, None, None, :]
    fixed = run(kalman(latency_ms=30), t, measured)
    measured_latency = run(kalman(), t, measured, latency_ns=30_000_000)
    np.testing.assert_allclose(fixed, measured_latency, atol=1e-3)
    with pytest.raises(ConfigError, match="latency"):
        kalman().process(np.zeros((1, 1, 3), np.float32), t_capture_ns=0)
    with pytest.raises(ValueError, match="t_capture_ns"):
        kalman(latency_ms=1).process(np.zeros((1, 1, 3), np.float32))
    with pytest.raises(ValueError, match="N x K x 3"):
        kalman(latency_ms=1).process(np.zeros((1, 4, 2), np.float32), t_capture_ns=0)


def test_clock_going_back_restarts() -> None:
    predictor = kalman(latency_ms=30)
    for i in range(10):
        predictor.process(np.array([[[10.0 * i, 0, 1]]], np.float32), t_capture_ns=i * 10**8)
    out = predictor.process(np.array([[[500.0, 50, 1]]], np.float32), t_capture_ns=0)
    np.testing.assert_allclose(out, [[[500, 50, 1]]])


def test_warmup_leaves_no_state() -> None:
    predictor = kalman(latency_ms=30)
    predictor.warmup()
    out = predictor.process(np.array([[[7.0, 8.0, 0.9]]], np.float32), t_capture_ns=10**9)
    np.testing.assert_allclose(out, [[[7, 8, 0.9]]], rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{"order": 3}, {"measurement_noise": 0}, {"latency_ms": -1},
                                    {"speed": 3}])
def test_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=f"KalmanPredictor: field '{next(iter(kwargs))}'"):
        kalman(**kwargs)


def test_one_source_of_defaults() -> None:
    """The predictor's options are its config's: the same omitted option means the same
    from YAML and from Python."""
    assert kalman().config == KalmanConfig(pcutoff=0.5)
    assert kalman().config.process_noise == 3000.0
    with pytest.raises(ConfigError, match="pcutoff is None"):
        KalmanPredictor()  # None means the model's, which only make_processors knows
    with pytest.raises(TypeError, match="not both"):
        KalmanPredictor(KalmanConfig(pcutoff=0.5), order=2)  # type: ignore[call-arg]


# -- many animals ------------------------------------------------------------------------


def test_one_animal_is_the_single_animal_filter() -> None:
    """1 x K x 3 points give exactly the numbers of the K x 3 pose filter."""
    rng = np.random.default_rng(4)
    t = capture_times(120, rng)
    measured = np.stack([circle(t), accelerating(t)], axis=1) + rng.normal(0, 2, (120, 2, 2))
    likelihood = rng.uniform(0.3, 1.0, (120, 2))  # some frames below pcutoff
    for order in (1, 2):
        single = run(kalman(latency_ms=30, order=order), t, measured, likelihood)  # T x K x 3
        one = run(kalman(latency_ms=30, order=order), t, measured[:, None], likelihood[:, None])
        assert one.shape == (120, 1, 2, 3)
        np.testing.assert_array_equal(one[:, 0], single)


def test_animals_are_filtered_independently() -> None:
    """Two animals moving differently, one of them lost for a while: each animal's rows are
    exactly what it would get alone, and each beats its own lag."""
    rng = np.random.default_rng(5)
    t = capture_times(200, rng)
    paths = (circle, right_angle)
    measured = np.stack([np.stack([p(t), p(t) + 20.0], axis=1) for p in paths], axis=1)
    measured += rng.normal(0, 2.0, measured.shape)  # T x N=2 x K=2 x 2
    likelihood = np.full((200, 2, 2), 0.95)
    likelihood[60:75, 1] = 0.1  # animal 1 is hidden for ~0.5 s: it restarts, animal 0 not
    both = run(kalman(latency_ms=30), t, measured, likelihood)
    for n, path in enumerate(paths):
        alone = run(kalman(latency_ms=30), t, measured[:, n:n + 1], likelihood[:, n:n + 1])
        np.testing.assert_array_equal(both[:, n:n + 1], alone)
        future = path(t + LATENCY_S)
        err = np.hypot(*(both[100:, n, 0, :2] - future[100:]).T).mean()
        lag = np.hypot(*(measured[100:, n, 0] - future[100:]).T).mean()
        assert err < 0.5 * lag, (n, err, lag)
    np.testing.assert_allclose(both[75, 1, :, :2], measured[75, 1], atol=1e-3)  # restarted
    assert np.abs(both[75, 0, :, :2] - measured[75, 0]).max() > 1  # still predicting


# -- the chain and DeepLabCut-Live processors ---------------------------------------------


class DlcStyleProcessor:
    """Shaped like dlclive.Processor: process(self, pose, **kwargs) and save(file)."""

    def __init__(self, shift: float = 0.0, **kwargs: object):
        self.shift = shift
        self.calls: list[dict] = []
        self.shapes: list[tuple[int, ...]] = []
        self.saved: list[str] = []

    def process(self, pose: np.ndarray, **kwargs: object) -> np.ndarray:
        self.calls.append(kwargs)
        self.shapes.append(pose.shape)
        pose[..., 0] += self.shift  # DLC-Live processors may modify the pose in place
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


def test_dlclive_processors_get_one_animals_pose_and_frame_time() -> None:
    dlc = DlcStyleProcessor(shift=1.5)
    some = SomeKwargs()
    chain = ProcessorChain([DlcLiveAdapter(p) for p in (dlc, ReturnsNothing(), NoKwargs(), some)])
    points = np.array([[[10.0, 20.0, 0.9], [30.0, 40.0, 0.8]]], np.float32)  # N=1, K=2
    original = points.copy()
    t_capture = time.perf_counter_ns() - 5_000_000  # captured 5 ms ago
    out = chain.process(points, t_capture_ns=t_capture, latency_ns=12_000_000, frame_index=42)
    assert out.dtype == np.float32 and out.shape == (1, 2, 3)
    np.testing.assert_allclose(out, (original + [[[1.5, 0, 0]]]) * 2)
    np.testing.assert_array_equal(points, original)  # the caller's points are untouched
    assert dlc.shapes == [(2, 3)]  # K x 3, as DeepLabCut-Live gives it
    (kwargs,) = dlc.calls
    assert set(kwargs) == set(PROCESS_KWARGS)
    assert abs(kwargs["frame_time"] - (time.time() - 0.005)) < 0.05  # wall clock, as DLC-Live
    assert kwargs["t_capture_ns"] == t_capture and kwargs["latency_ns"] == 12_000_000
    assert some.seen == {"frame_index": 42}
    chain.process(points, t_capture_ns=t_capture + 33_000_000)
    assert abs(dlc.calls[1]["frame_time"] - kwargs["frame_time"] - 0.033) < 1e-6
    chain.save("session.pkl")
    assert dlc.saved == ["session.pkl"]


def test_dlclive_processors_get_every_animal_when_there_are_many() -> None:
    dlc = DlcStyleProcessor(shift=1.0)
    chain = ProcessorChain([DlcLiveAdapter(dlc)])
    points = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    out = chain.process(points, t_capture_ns=0)
    assert dlc.shapes == [(2, 3, 3)]
    np.testing.assert_allclose(out, points + [1.0, 0, 0])


def test_save_reaches_every_processor_that_saves(tmp_path: Path) -> None:
    first, second = DlcStyleProcessor(), DlcStyleProcessor()
    chain = make_processors([
        {"type": "python", "target": f"{__name__}:DlcStyleProcessor"},
        {"type": "kalman"},  # saves nothing
        {"type": "python", "target": f"{__name__}:ReturnsNothing"},  # has no save
    ], pcutoff=0.6)
    chain.save(str(tmp_path / "log.pkl"))
    (adapter, _, nothing) = chain.processors
    assert isinstance(adapter, DlcLiveAdapter) and isinstance(nothing, DlcLiveAdapter)
    assert adapter.processor.saved == [str(tmp_path / "log.pkl")] and nothing.save is None
    chain.save()  # the engine's call at close
    assert adapter.processor.saved[-1] == ""
    two = ProcessorChain([DlcLiveAdapter(first), DlcLiveAdapter(second)])
    two.save("run/log.pkl")
    assert (first.saved, second.saved) == (["run/log_0.pkl"], ["run/log_1.pkl"])


def test_chain_with_the_kalman_predictor_and_a_loaded_processor() -> None:
    chain = make_processors([
        {"type": "python", "target": "poseloop.realtime.processors:KalmanPredictor",
         "kwargs": {"latency_ms": 30, "order": 2, "pcutoff": 0.5}},
        PythonProcessorConfig(target=f"{__name__}:DlcStyleProcessor", kwargs={"shift": 0.0}),
    ], pcutoff=0.6)
    kalman_adapter, dlc_adapter = chain.processors
    assert isinstance(kalman_adapter, DlcLiveAdapter) and isinstance(dlc_adapter, DlcLiveAdapter)
    predictor, dlc = kalman_adapter.processor, dlc_adapter.processor
    assert isinstance(predictor, KalmanPredictor) and predictor.config.order == 2
    chain.warmup()  # the predictor's own warmup, through its adapter
    for i in range(30):
        x = 100 + 10.0 * i
        out = chain.process(np.array([[[x, 50, 0.9]]], np.float32), t_capture_ns=i * 10**7,
                            frame_index=i)
    np.testing.assert_allclose(out[0, 0, 0], x + 30, atol=0.1)  # 1000 px/s, 30 ms ahead
    assert [c["frame_index"] for c in dlc.calls] == list(range(30))


def test_chain_rejects_bad_processors_and_results() -> None:
    with pytest.raises(ConfigError, match="not a processor"):
        ProcessorChain([object()])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="not a processor"):
        DlcLiveAdapter(object())

    class WrongShape:
        def process(self, pose: np.ndarray, **kwargs: object) -> np.ndarray:
            return pose[..., :2]

    points = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(PoseloopError, match=r"WrongShape returned an array of shape \(1, 2, 2\) "
                       r"at frame 7; the points are 1 x 2 x 3"):
        ProcessorChain([WrongShape()]).process(points, t_capture_ns=0, frame_index=7)
    with pytest.raises(PoseloopError, match=r"my:Wrong returned an array of shape \(2, 2\); it "
                       r"is given and returns 2 x 3 \(bodyparts"):
        ProcessorChain([DlcLiveAdapter(WrongShape(), "my:Wrong")]).process(points, t_capture_ns=0)
    with pytest.raises(ValueError, match="N x K x 3"):
        ProcessorChain([]).process(np.zeros((2, 3), np.float32), t_capture_ns=0)


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


# -- the registry ----------------------------------------------------------------------------


class ShiftConfig(Strict):
    """A processor kind that only this test module registers."""

    type: Literal["test-shift"] = "test-shift"
    dx: float = 0.0
    pcutoff: float | None = None


class Shift:
    def __init__(self, dx: float, pcutoff: float) -> None:
        self.dx, self.pcutoff = dx, pcutoff

    def process(self, pose: np.ndarray, **kwargs: object) -> np.ndarray:
        pose[..., 0] += self.dx
        return pose


@PROCESSORS.register("test-shift", ShiftConfig)
def shift(config: ShiftConfig, pcutoff: float) -> Shift:
    return Shift(config.dx, pcutoff if config.pcutoff is None else config.pcutoff)


def test_a_registered_kind_is_built_from_its_config_mapping() -> None:
    chain = make_processors([{"type": "test-shift", "dx": 2.5}, ShiftConfig(pcutoff=0.1)],
                            pcutoff=0.7)
    first, second = chain.processors
    assert isinstance(first, Shift) and (first.dx, first.pcutoff) == (2.5, 0.7)
    assert isinstance(second, Shift) and second.pcutoff == 0.1
    out = chain.process(np.zeros((2, 1, 3), np.float32), t_capture_ns=0)
    np.testing.assert_array_equal(out[..., 0], [[2.5], [2.5]])
    with pytest.raises(ConfigError, match=r"processors\[1\]: field 'dx'"):
        make_processors([{"type": "kalman"}, {"type": "test-shift", "dx": "far"}], 0.6)


def test_unknown_or_missing_type_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"processors\[1\]: field 'type': unknown processor "
                       r"'kalmann' \(known: kalman, python"):
        make_processors([{"type": "kalman"}, {"type": "kalmann"}], 0.6)
    with pytest.raises(ConfigError, match=r"processors\[0\]: field 'type': missing"):
        make_processors([{"latency_ms": 3}], 0.6)


def test_model_pcutoff_fills_in_none() -> None:
    default, own = make_processors([{"type": "kalman"}, KalmanConfig(pcutoff=0.2)],
                                   pcutoff=0.7).processors
    assert isinstance(default, KalmanPredictor) and default.config.pcutoff == 0.7
    assert isinstance(own, KalmanPredictor) and own.config.pcutoff == 0.2
    assert KalmanConfig().pcutoff is None  # the config itself is not changed


def test_processor_config_is_the_union_of_the_registered_kinds() -> None:
    adapter = TypeAdapter(list[ProcessorConfig])
    kalman_cfg, python_cfg = adapter.validate_python(
        [{"type": "kalman", "order": 2}, {"type": "python", "target": "a.b:C"}])
    assert kalman_cfg == KalmanConfig(order=2)
    assert python_cfg == PythonProcessorConfig(target="a.b:C")
