"""The engine composes the parts it is given: fake stages (no ONNX file, no torch), the
protocol checks, the lifecycle order, and what the realtime package imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from poseloop.realtime.engine import Engine, LoopConfig
from poseloop.realtime.processors import ProcessorChain
from poseloop.realtime.types import (
    ActionRecord,
    CameraInfo,
    Frame,
    FrameTransform,
    Pose,
    Session,
)
from poseloop.rules import RuleSet

BODYPARTS = ("snout", "tail")
SESSION = Session(bodyparts=BODYPARTS, individuals=("a", "b"), multi_animal=True,
                  skeleton=(("snout", "tail"),), cameras=())


class FakeCamera:
    """Frames with a bright 2 x 2 block at x = 2 * (index % 32), y = 4 (predictable poses)."""

    def __init__(self, frames: int, size: tuple[int, int] = (64, 48), fps: float = 60.0):
        self.frames, self.size, self.fps = frames, size, fps
        self.log: list[str] = []
        self._i = 0

    def open(self) -> CameraInfo:
        self.log.append("open")
        return CameraInfo(self.size[0], self.size[1], self.fps, "Mono8", "fake")

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        if self._i >= self.frames:
            return None
        time.sleep(0.002)  # a camera slower than the loop (newest frame wins otherwise)
        image = np.zeros((self.size[1], self.size[0], 3), np.uint8)
        x = 2 * (self._i % 32)
        image[4:6, x:x + 2] = 255
        frame = Frame(image, self._i, 1_000_000 * (self._i + 1), camera=0)
        self._i += 1
        return frame

    def close(self) -> None:
        self.log.append("close")


class FakePreprocess:
    """Halves the frame (transform sx = sy = 0.5) without OpenCV."""

    def __init__(self) -> None:
        self.updates: list[np.ndarray] = []

    def preprocess(self, frame: Frame) -> tuple[np.ndarray, FrameTransform]:
        return frame.image[None, ::2, ::2], FrameTransform(sx=0.5, sy=0.5)

    def update(self, points: np.ndarray) -> None:
        self.updates.append(points.copy())


class FakeRunner:
    """'Outputs' the input image itself."""

    def __init__(self) -> None:
        self.warm: list[tuple[int, int] | None] = []

    def warmup(self, size: tuple[int, int] | None = None) -> None:
        self.warm.append(size)

    def run(self, image: np.ndarray) -> Sequence[np.ndarray]:
        return (image,)


class FakeDecoder:
    """Two individuals: animal 0 at the bright pixel, animal 1 at its mirror image."""

    shape = (2, 2, 3)

    def warmup(self) -> None:
        pass

    def decode(self, outputs: Sequence[np.ndarray], out: np.ndarray,
               transform: FrameTransform | None = None) -> np.ndarray:
        image = outputs[0][0, :, :, 0]
        iy, ix = np.unravel_index(np.argmax(image), image.shape)
        out[0] = [[ix, iy, 0.9], [ix, iy + 1, 0.9]]
        out[1] = [[image.shape[1] - 1 - ix, iy, 0.8], [0, 0, 0.1]]
        return out if transform is None else transform.to_full(out)


class SwapTracker:
    """Reports the animals in reverse order with ids 7 and 3."""

    def update(self, points: np.ndarray, ids: np.ndarray, t_ns: int) -> None:
        points[:] = points[::-1].copy()
        ids[:] = (7, 3)


class FakeActuator:
    name = "stim"

    def __init__(self) -> None:
        self.sent: list[str | bytes] = []
        self.log: list[str] = []
        self.dropped = 0

    def open(self) -> None:
        self.log.append("open")

    def send(self, command: str | bytes) -> bool:
        self.sent.append(command)
        return True

    def keepalive(self) -> None:
        pass

    def close(self) -> None:
        self.log.append("close")


class ListSink:
    """Keeps everything; ``after_publish`` like the recorder."""

    def __init__(self, name: str, after_publish: bool) -> None:
        self.name, self.after_publish = name, after_publish
        self.session: Session | None = None
        self.poses: list[Pose] = []
        self.events: list[ActionRecord] = []
        self.publish_seen: list[bool] = []
        self.closed = False
        self.dropped = 0
        self.fatal: str | None = None

    def open(self, session: Session) -> None:
        self.session = session

    def pose(self, pose: Pose, frame: Frame) -> None:
        self.poses.append(pose)
        self.publish_seen.append("publish" in pose.timings)

    def event(self, action: ActionRecord) -> None:
        self.events.append(action)

    def close(self) -> None:
        self.closed = True


def _engine(frames: int = 10, **parts: object) -> Engine:
    kwargs: dict = dict(camera=FakeCamera(frames), preprocess=FakePreprocess(),
                        runner=FakeRunner(), decoder=FakeDecoder(), session=SESSION)
    kwargs.update(parts)
    return Engine(**kwargs)


def test_engine_runs_fake_stages_end_to_end() -> None:
    rules = RuleSet.compile([{
        "name": "right", "mode": "level",
        "when": {"animal": "a", "type": "zone", "part": "snout",
                 "rect": {"x1": 5, "y1": 0, "x2": 100, "y2": 100}},
        "actions": [{"device": "stim", "command": "PULSE 1 5"}],
    }], BODYPARTS, 0.5, devices={"stim"}, individuals=SESSION.individuals)
    live, late = ListSink("live", False), ListSink("late", True)
    actuator = FakeActuator()
    camera = FakeCamera(10)
    runner = FakeRunner()
    engine = _engine(camera=camera, runner=runner, rules=rules, actuators=[actuator],
                     sinks=[live, late])
    with engine:
        # the camera is open before warm-up, at its own size; the sinks know it
        assert camera.log == ["open"] and runner.warm == [(24, 32)]
        assert live.session is not None and live.session.image_size == (64, 48)
        assert live.session.fps == 60.0 and live.session.cameras[0].pixel_format == "Mono8"
        stats = engine.run()
    assert stats.stopped_by == "end of stream" and stats.frames + stats.camera_dropped == 10
    assert stats.frames == len(live.poses) == len(late.poses) > 0
    assert camera.log == ["open", "close"] and actuator.log == ["open", "close"]
    assert live.closed and late.closed
    for pose in live.poses:
        i = pose.frame_index
        assert pose.points.shape == (2, 2, 3)
        # full-frame pixels through the transform: x = i on the half-size image -> 2i + 0.5
        np.testing.assert_allclose(pose.points[0, 0, :2], [2 * i + 0.5, 4.5])
        assert pose.points[1, 1, 2] == pytest.approx(0.1)
    n = stats.frames
    assert live.publish_seen == [False] * n and late.publish_seen == [True] * n
    assert live.poses[0] is late.poses[0]
    fired = [r.frame for r in live.events]
    assert fired == [p.frame_index for p in live.poses if 2 * p.frame_index + 0.5 >= 5]
    assert fired
    assert actuator.sent == ["PULSE 1 5"] * len(fired)
    assert live.events[0].action == "stim:PULSE 1 5" and late.events == live.events
    assert stats.sink_dropped == {"live": 0, "late": 0} and stats.events == len(fired)


def test_tracker_reorders_and_names_the_animals() -> None:
    sink = ListSink("s", False)
    pre = FakePreprocess()
    with _engine(3, tracker=SwapTracker(), sinks=[sink], preprocess=pre) as engine:
        engine.run()
    assert [p.ids.tolist() for p in sink.poses] == [[7, 3]] * len(sink.poses)
    last = sink.poses[-1]  # animal 0 is now row 1
    assert last.points[1, 0, 0] == pytest.approx(2 * last.frame_index + 0.5)
    np.testing.assert_array_equal(pre.updates[-1], sink.poses[-1].points)
    # without a tracker every individual keeps its row index as its id
    plain = ListSink("p", False)
    with _engine(1, sinks=[plain]) as engine:
        engine.run()
    assert plain.poses[0].ids.tolist() == [0, 1]


def test_processors_see_every_individual() -> None:
    seen: list[tuple[int, ...]] = []

    class Shift:
        def process(self, pose: np.ndarray, **kwargs: object) -> np.ndarray:
            seen.append(pose.shape)
            out = pose.copy()
            out[..., 0] += 100
            return out

    sink = ListSink("s", False)
    with _engine(2, processors=ProcessorChain([Shift()]), sinks=[sink]) as engine:
        engine.run()
    assert seen == [(2, 2, 3)] * len(sink.poses)
    first = sink.poses[0]
    assert first.points[0, 0, 0] == pytest.approx(100.5 + 2 * first.frame_index)


def test_a_fatal_sink_stops_the_run_and_close_reaches_every_part() -> None:
    failing = ListSink("recorder", True)
    camera = FakeCamera(100)
    actuator = FakeActuator()

    def fail_at_three(pose: Pose, frame: Frame) -> None:
        if frame.index >= 3:
            failing.fatal = "disk full"

    with _engine(camera=camera, sinks=[failing], actuators=[actuator],
                 limits=LoopConfig(max_frames=50)) as engine:
        stats = engine.run(on_pose=fail_at_three)
    assert stats.stopped_by == "recorder error" and failing.poses[-1].frame_index >= 3
    assert [p.frame_index >= 3 for p in failing.poses].count(True) == 1  # stopped at once
    assert "recorder: disk full" in stats.errors
    assert camera.log == ["open", "close"] and actuator.log == ["open", "close"]


def test_limits_and_protocol_checks() -> None:
    with _engine(100, limits=LoopConfig(max_frames=4)) as engine:
        stats = engine.run()
    assert stats.frames == 4 and stats.stopped_by == "max_frames"
    with pytest.raises(TypeError, match="decoder .* is not a Decoder"):
        _engine(decoder=object())
    with pytest.raises(TypeError, match="sink .* is not a Sink"):
        _engine(sinks=[object()])
    with pytest.raises(ValueError, match="session names"):
        _engine(session=Session(bodyparts=("a",), cameras=()))


def test_realtime_imports_no_torch_and_runs_a_model_without_it(synthetic_onnx: Path,
                                                               tmp_path: Path) -> None:
    """Importing the live package and running the engine on a given model loads neither
    torch nor poseloop.training / poseloop.export (a rig needs only the runtime extra)."""
    script = textwrap.dedent(f"""
        import sys
        import poseloop.realtime.engine, poseloop.realtime.builder, poseloop.realtime.analyze
        import poseloop.realtime.cameras, poseloop.realtime.recorder, poseloop.stream.publisher
        from poseloop.realtime.engine import Engine
        cfg = {{"model": {str(synthetic_onnx)!r},
               "camera": {{"kind": "synthetic", "paced": False, "frames": 20}},
               "record": {{"dir": {str(tmp_path)!r}}},
               "stream": {{"endpoint": "tcp://127.0.0.1:*"}}}}
        with Engine.from_config(cfg) as engine:
            stats = engine.run()
        assert stats.frames > 0, stats
        bad = [m for m in sys.modules
               if m.split(".")[0] == "torch" or m.startswith(("poseloop.training",
                                                               "poseloop.export"))]
        print("LOADED", bad)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout


def test_close_lets_the_processors_save() -> None:
    """DeepLabCut-Live processors write their logs in save(): the engine calls it at close."""
    from poseloop.realtime.processors import DlcLiveAdapter

    class Logging:
        def __init__(self) -> None:
            self.saved: list[str] = []
            self.seen = 0

        def process(self, pose: np.ndarray, **kwargs: object) -> np.ndarray:
            self.seen += 1
            return pose

        def save(self, file: str = "") -> None:
            self.saved.append(file)

    proc = Logging()
    with _engine(3, processors=ProcessorChain([DlcLiveAdapter(proc)])) as engine:
        engine.run()
        assert proc.saved == []
    assert proc.seen > 0 and proc.saved == [""]
