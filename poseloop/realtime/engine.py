"""The live engine: composes the parts it is given and owns only the loop and the lifecycle.

Parts (each behind a Protocol of :mod:`poseloop.realtime.types`): a camera, a preprocess, a
runner, a decoder, an optional tracker, processors, rules, actuators (devices) and sinks
(stream, recorder, LSL, display, ...). :mod:`poseloop.realtime.builder` makes them from an
``EngineConfig``; tests and programs can pass their own. Use it from Python as::

    with Engine.from_config("configs/zone_trigger.yaml") as engine:
        stats = engine.run(max_frames=1000)

or feed frames yourself with ``engine.step(frame)``.

With a :class:`~poseloop.realtime.cameras.group.CameraGroup` as the camera (one preprocess
and one tracker per camera) and a ``triangulation``, the loop is the same over frame sets:
each set's views go through the network as one batch, are decoded per view
(:class:`~poseloop.realtime.views.ViewSet`), triangulated into N x K x 4 poses, and those go
through the same processors, rules and sinks (``engine.step_set(frame_set)``).

Lifecycle: :meth:`open` opens the actuators and the camera (whose reported size and frame
rate reach the warm-up and every sink), opens the sinks and warms every stage up;
:meth:`run` grabs in a thread (newest frame wins) and runs every other stage in the calling
thread without waiting on slow work; :meth:`close` turns outputs off, closes the camera,
flushes the sinks and lets the processors save.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydantic import Field

from poseloop.config import Strict
from poseloop.errors import CameraError
from poseloop.realtime.cameras import GrabThread
from poseloop.realtime.cameras.group import CameraGroup, FrameSet
from poseloop.realtime.processors import ProcessorChain
from poseloop.realtime.types import (
    ActionRecord,
    Actuator,
    Camera,
    CameraInfo,
    Decoder,
    Frame,
    Pose,
    Preprocess,
    RuleEvaluator,
    Runner,
    Session,
    Sink,
    Tracker,
)
from poseloop.realtime.views import ViewSet
from poseloop.threed.live import Triangulation

_now = time.perf_counter_ns
_LATENCY_WINDOW = 100  # trigger latencies in the running median


class LoopConfig(Strict):
    """When a run ends and how long a camera may stay silent (top level of the config)."""

    camera_timeout_s: float = Field(default=2.0, gt=0, description="no frame for this long = error")
    max_frames: int | None = Field(default=None, ge=1)
    duration_s: float | None = Field(default=None, gt=0)


@dataclass
class RunStats:
    """What a run did: frames processed and everything that was counted instead of waited on.

    sink_dropped: per sink name (``stream``, ``recorder``, ...), what it could not take.
    """

    frames: int = 0
    captured: int = 0
    camera_dropped: int = 0
    sink_dropped: dict[str, int] = field(default_factory=dict)
    device_dropped: int = 0
    events: int = 0
    seconds: float = 0.0
    stopped_by: str = ""
    errors: list[str] = field(default_factory=list)
    tracks: dict[str, int] = field(default_factory=dict)  # multi-animal: new, lost, refound
    #: A camera group: per camera, sets it was missing from, frames it sent that no set used.
    views_missing: list[int] = field(default_factory=list)
    views_unused: list[int] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _check(part: object, protocol: type, what: str) -> None:
    if not isinstance(part, protocol):
        raise TypeError(f"{what} {part!r} is not a {protocol.__name__} (see "
                        f"poseloop.realtime.types.{protocol.__name__})")


class Engine:
    """The live loop over the parts it is given (see the module docstring).

    session: the names of the pose axes, skeleton, model and scorer; its ``cameras`` are
    filled in from the camera at :meth:`open`. limits: ``LoopConfig`` (an EngineConfig is
    one). Sinks whose ``after_publish`` is True (the
    recorder: it records every stage stamp) are handed each pose after the ``publish`` stamp,
    the others (stream, LSL) before it.
    """

    def __init__(
        self,
        *,
        camera: Camera | CameraGroup,
        preprocess: Preprocess | Sequence[Preprocess],
        runner: Runner,
        decoder: Decoder,
        session: Session,
        tracker: Tracker | Sequence[Tracker | None] | None = None,
        triangulation: Triangulation | None = None,
        processors: ProcessorChain | None = None,
        rules: RuleEvaluator | None = None,
        actuators: Sequence[Actuator] = (),
        sinks: Sequence[Sink] = (),
        limits: LoopConfig | None = None,
        model_path: str | Path | None = None,
    ) -> None:
        group = camera if isinstance(camera, CameraGroup) else None
        preprocesses = list(preprocess) if isinstance(preprocess, Sequence) else [preprocess]
        trackers = list(tracker) if isinstance(tracker, Sequence) else [tracker]
        views = len(group.cameras) if group is not None else 1
        if group is None and (len(preprocesses) != 1 or len(trackers) != 1
                              or triangulation is not None):
            raise ValueError("one preprocess and one tracker per camera, and a triangulation "
                             "only with a camera group")
        if group is not None:
            if triangulation is None:
                raise ValueError("a camera group needs a triangulation (its calibration)")
            if not (len(preprocesses) == views and len(trackers) in (1, views)
                    and triangulation.cameras == views):
                raise ValueError(f"a group of {views} cameras needs {views} preprocesses, "
                                 f"{views} trackers (or none) and a triangulation of {views} "
                                 f"cameras; got {len(preprocesses)}, {len(trackers)} and "
                                 f"{triangulation.cameras}")
            if len(trackers) == 1:
                trackers *= views
        else:
            _check(camera, Camera, "camera")
        for part, protocol, what in ((runner, Runner, "runner"), (decoder, Decoder, "decoder")):
            _check(part, protocol, what)
        for p in preprocesses:
            _check(p, Preprocess, "preprocess")
        for t in trackers:
            if t is not None:
                _check(t, Tracker, "tracker")
        if rules is not None:
            _check(rules, RuleEvaluator, "rules")
        for actuator in actuators:
            _check(actuator, Actuator, "actuator")
        for sink in sinks:
            _check(sink, Sink, "sink")
        names = [a.name for a in actuators]
        if len(set(names)) != len(names):
            raise ValueError(f"actuator names must be unique, got {names}")
        if tuple(decoder.shape[:2]) != session.shape[:2]:
            raise ValueError(f"decoder writes {decoder.shape} points, the session names "
                             f"{session.shape} (individuals x bodyparts x 3)")
        self.camera, self.runner, self.decoder = camera, runner, decoder
        self.preprocess = preprocesses[0]
        self.group = group
        self.triangulation = triangulation
        self.session = session
        self.tracker = trackers[0]
        #: A camera group's per-view stages (None for one camera).
        self.views = ViewSet(preprocesses, runner, decoder, trackers) if group else None
        self.processors = processors if processors is not None else ProcessorChain([])
        self.rules = rules
        self.actuators: dict[str, Actuator] = {a.name: a for a in actuators}
        self.sinks: tuple[Sink, ...] = tuple(sinks)
        self.limits = limits if limits is not None else LoopConfig()
        self.model_path = Path(model_path) if model_path is not None else None
        self.camera_info: CameraInfo | None = None
        self._live = tuple(s for s in sinks if not getattr(s, "after_publish", False))
        self._late = tuple(s for s in sinks if getattr(s, "after_publish", False))
        self._actuator_list = tuple(actuators)
        # Devices with trigger timing (send(command, trace=(record, t_capture_ns)), timed()):
        # each fired action comes back with its exposure -> output latency, for the sinks
        # with a timing(record) hook (the recorder's events table) and the processors.
        self._timed = tuple(a for a in actuators if getattr(a, "timing", False))
        self._timed_names = frozenset(a.name for a in self._timed)
        self._timing_hooks = tuple(h for s in sinks if (h := getattr(s, "timing", None)))
        self._latencies_us: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        #: Median exposure -> output latency of the last fired actions (ns), None until one.
        self.trigger_latency_ns: int | None = None
        self._has_processors = bool(self.processors.processors)
        n, k, _ = decoder.shape
        self._points = np.zeros((n, k, 4) if group else decoder.shape, np.float32)
        self._quality = np.zeros((n, k, 2), np.float32)
        #: The decoder's unique bodyparts (U x 3, multi-animal models that have some).
        self._unique: np.ndarray | None = getattr(decoder, "unique", None)
        self._ids = np.arange(decoder.shape[0], dtype=np.int64) if self.tracker is None \
            else np.full(decoder.shape[0], -1, np.int64)
        self.stats = RunStats()
        self.last_events: list = []
        self._opened: list[Any] = []
        self._camera_open = False
        self._closed = False
        self._stop_requested = threading.Event()
        self._grab: GrabThread | None = None

    @classmethod
    def from_config(cls, source: Any = None, camera: Camera | None = None,
                    **overrides: Any) -> Engine:
        """An Engine from a YAML path, a mapping or an EngineConfig, with field overrides
        (see :func:`poseloop.realtime.builder.build_engine`)."""
        from poseloop.realtime.builder import build_engine
        from poseloop.realtime.engine_config import load_engine_config, with_overrides

        cfg = load_engine_config(source)
        if overrides:
            cfg = with_overrides(cfg, **overrides)
        return build_engine(cfg, camera)

    def sink(self, name: str) -> Sink | None:
        """The sink called ``name`` (``stream``, ``recorder``, ``lsl``, ...), or None."""
        return next((s for s in self.sinks if s.name == name), None)

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> Engine:
        """Open actuators and the camera, open the sinks with the camera's real size and
        frame rate, and warm every stage up for that size (outside any timing)."""
        for actuator in self._actuator_list:
            actuator.open()
            self._opened.append(actuator)
        if self.group is not None:
            infos = self.group.open()
            self._camera_open = True
            infos = self._calibrated(infos)
            self.camera_info = info = infos[0]
            self.session = replace(self.session, cameras=tuple(infos), dims=3)
        else:
            camera = cast(Camera, self.camera)
            self.camera_info = info = camera.open()
            self._camera_open = True
            self.session = replace(self.session, cameras=(info,))
        for sink in self.sinks:
            attach = getattr(sink, "attach", None)
            if attach is not None:  # a sink with controls (the live page's stop button)
                attach(self)
            sink.open(self.session)
            self._opened.append(sink)
        if self.views is not None:
            self.views.warmup([(c.width, c.height) for c in self.session.cameras])
            assert self.triangulation is not None
            self.triangulation.warmup()
            self.processors.warmup()
        else:
            self.warmup((info.width, info.height))
        return self

    def _calibrated(self, infos: Sequence[CameraInfo]) -> list[CameraInfo]:
        """The cameras named as their calibration names them (and their files); CameraError
        unless each delivers the size it was calibrated at."""
        assert self.triangulation is not None
        tri = self.triangulation
        named = []
        for i, (info, size, name) in enumerate(zip(infos, tri.sizes, tri.names, strict=True)):
            if (info.width, info.height) != tuple(size):
                raise CameraError(
                    f"camera {i} ({info.name}) delivers {info.width}x{info.height} frames; "
                    f"its calibration ({name}) is for {size[0]}x{size[1]}: calibrate at the "
                    f"size you record, or set the camera's size")
            named.append(replace(info, name=name))
        return named

    def warmup(self, frame_size: tuple[int, int]) -> None:
        """Compile and warm every stage on a blank frame of (width, height), outside any timing."""
        w, h = frame_size
        blank = Frame(np.zeros((h, w, 3), np.uint8), -1, _now())
        image, _ = self.preprocess.preprocess(blank)
        self.runner.warmup((image.shape[1], image.shape[2]))
        self.decoder.warmup()
        self.processors.warmup()
        self.decoder.decode(self.runner.run(image), self._points)

    def close(self) -> None:
        """Turn device outputs off, close the camera, flush and close every sink, and let the
        processors save (DeepLabCut-Live's ``save``). Reaches every part even if one fails."""
        if self._closed:
            return
        self._closed = True
        steps: list[tuple[str, Callable[[], object]]] = [
            (f"device {a.name}", a.close) for a in self._actuator_list if a in self._opened]
        if self._timed:  # closing a device resolves its last traced actions
            steps.append(("trigger timing", self._deliver_timing))
        if self._camera_open:
            steps.append(("camera", self.camera.close))
        steps += [(f"{s.name}", s.close) for s in self.sinks if s in self._opened]
        steps.append(("processors", self.processors.save))
        for what, step in steps:
            try:
                step()
            except Exception as e:  # closing must reach every part
                self.stats.errors.append(f"{what}: {e}")
        for sink in self.sinks:
            fatal = sink.fatal
            if fatal and f"{sink.name}: {fatal}" not in self.stats.errors:
                self.stats.errors.append(f"{sink.name}: {fatal}")
        self._count_drops()
        counts = getattr(self.tracker, "counts", None)
        if counts is not None:
            self.stats.tracks = asdict(counts)

    def __enter__(self) -> Engine:
        try:
            return self.open()
        except BaseException:  # e.g. Ctrl-C during warm-up: close what was opened
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop -------------------------------------------------------------------------
    def step(self, frame: Frame) -> Pose:
        """Run one frame through every stage; returns its poses in full-frame pixels.

        The returned Pose owns its arrays (they are copies, not the loop's buffers).
        """
        t_grab = _now()
        image, transform = self.preprocess.preprocess(frame)
        t_pre = _now()
        outputs = self.runner.run(image)
        t_infer = _now()
        points = self.decoder.decode(outputs, self._points, transform)
        if self.tracker is not None:
            self.tracker.update(points, self._ids, frame.t_capture_ns)
        t_decode = _now()
        self.preprocess.update(points)
        return self._finish(points, frame, {"grab": t_grab, "preprocess": t_pre,
                                            "infer": t_infer, "decode": t_decode})

    def step_set(self, frame_set: FrameSet) -> Pose:
        """Run one camera group's frame set through every stage; returns its 3D poses
        (N x K x 4) with every view's 2D poses in ``Pose.views``.

        The sinks are handed the first camera's frame, its ``views`` set to the set's frames.
        """
        views, triangulation = self.views, self.triangulation
        if views is None or triangulation is None:
            raise RuntimeError("step_set needs a camera group (use step for one camera)")
        t_grab = _now()
        frames = frame_set.frames
        t_pre, t_infer = views.infer(frames, frame_set.t_capture_ns)
        t_decode = _now()
        points = triangulation.triangulate(views.views, self._points, self._quality)
        t_tri = _now()
        self._ids[:] = views.ids[0]
        anchor = next(f for f in frames if f is not None)
        anchor.views = frames
        return self._finish(points, anchor, {
            "grab": t_grab, "preprocess": t_pre, "infer": t_infer, "decode": t_decode,
            "triangulate": t_tri}, views=views.views.copy(), quality=self._quality.copy())

    def _finish(self, points: np.ndarray, frame: Frame, timings: dict[str, int],
                views: np.ndarray | None = None, quality: np.ndarray | None = None) -> Pose:
        """The stages after the poses: processors, rules and devices, then the sinks."""
        if self._has_processors:
            points = self.processors.process(
                points, t_capture_ns=frame.t_capture_ns,
                latency_ns=_now() - frame.t_capture_ns, frame_index=frame.index,
                trigger_latency_ns=self.trigger_latency_ns,
            )
        data = points.copy()
        timings["process"] = _now()
        if self.rules is not None:
            events = self.last_events = self.rules.evaluate(data, frame.t_capture_ns,
                                                             frame.index)
            if events:
                self._fire(events, frame.t_capture_ns)
        for actuator in self._actuator_list:
            actuator.keepalive()  # feeds the device watchdogs while the loop runs
        if self._timed:
            self._deliver_timing()
        timings["rules"] = _now()
        unique = self._unique if views is None else None  # 3D: unique parts not triangulated
        pose = Pose(data, frame.index, frame.t_capture_ns, timings, self._ids.copy(),
                    None if unique is None else unique.copy(), frame.camera, views, quality)
        for sink in self._live:
            sink.pose(pose, frame)
        pose.timings["publish"] = _now()
        for sink in self._late:
            sink.pose(pose, frame)
        self.stats.frames += 1
        return pose

    def _fire(self, events: list, t_capture_ns: int) -> None:
        """Carry out fired rules' actions (non-blocking device writes) and tell the sinks;
        devices with trigger timing are asked to time each action they were sent."""
        for event in events:
            self.stats.events += 1
            for action in event.actions:
                raw = action.raw
                actuator = self.actuators[action.device]
                text = action.command if raw is None else raw.hex()
                record = ActionRecord(event.frame_index, event.rule, f"{action.device}:{text}",
                                      _now(), ",".join(event.animals))
                command = raw if raw is not None else action.command
                if action.device in self._timed_names:  # timed from before the write on
                    actuator.send(command, trace=(record, t_capture_ns))  # type: ignore[call-arg]
                else:
                    actuator.send(command)
                for sink in self.sinks:
                    sink.event(record)

    def _deliver_timing(self) -> None:
        """Hand the timed actions the devices resolved to the sinks' ``timing`` hooks and
        keep the running median latency (the Kalman processor's ``latency_ms: measured``)."""
        changed = False
        for actuator in self._timed:
            for record in actuator.timed():  # type: ignore[attr-defined]
                for hook in self._timing_hooks:
                    hook(record)
                if not math.isnan(record.latency_us):
                    self._latencies_us.append(record.latency_us)
                    changed = True
        if changed:
            self.trigger_latency_ns = int(np.median(self._latencies_us) * 1000)

    def stop(self) -> None:
        """Ask :meth:`run` to stop after the frame in hand (thread- and signal-safe): the
        clean way to end a run from a signal handler or another thread."""
        self._stop_requested.set()
        grab = self._grab
        if grab is not None:
            grab.interrupt()

    def run(self, max_frames: int | None = None, duration_s: float | None = None,
            on_pose: Callable[[Pose, Frame], object] | None = None) -> RunStats:
        """Grab and process frames until the camera ends, a limit is hit, a sink fails
        fatally, or Ctrl-C. ``on_pose(pose, frame)`` (optional) is called after each frame."""
        max_frames = self.limits.max_frames if max_frames is None else max_frames
        duration_s = self.limits.duration_s if duration_s is None else duration_s
        group = self.group
        grab = None
        if group is None:
            grab = self._grab = GrabThread(cast(Camera, self.camera),
                                           self.limits.camera_timeout_s).start()
        t0 = time.monotonic()
        stats = self.stats
        try:
            while True:
                if self._stop_requested.is_set():
                    stats.stopped_by = "interrupted"
                    break
                if max_frames is not None and stats.frames >= max_frames:
                    stats.stopped_by = "max_frames"
                    break
                if duration_s is not None and time.monotonic() - t0 >= duration_s:
                    stats.stopped_by = "duration"
                    break
                if group is not None:
                    frame_set = group.read()
                    if frame_set is None:
                        stats.stopped_by = "end of stream"
                        break
                    pose = self.step_set(frame_set)
                    frame = next(f for f in frame_set.frames if f is not None)
                else:
                    assert grab is not None
                    frame = grab.get()
                    if frame is None:
                        stats.stopped_by = ("interrupted" if self._stop_requested.is_set()
                                            else "end of stream")
                        break
                    pose = self.step(frame)
                if on_pose is not None:
                    on_pose(pose, frame)
                failed = next((s for s in self.sinks if s.fatal), None)
                if failed is not None:
                    stats.stopped_by = f"{failed.name} error"
                    stats.errors.append(f"{failed.name}: {failed.fatal}")
                    break
        except CameraError as e:
            stats.stopped_by = "camera error"
            stats.errors.append(str(e))
        except KeyboardInterrupt:
            stats.stopped_by = "interrupted"
        finally:
            self._grab = None
            stats.seconds = time.monotonic() - t0
            if grab is not None:
                if not grab.stop():  # stuck in read(): the camera cannot be closed safely
                    self._camera_open = False
                stats.captured = grab.grabbed
                stats.camera_dropped = grab.dropped
            elif group is not None:
                counters = group.counters
                stats.captured = counters.sets
                stats.camera_dropped = counters.unused[0]
                stats.views_missing = list(counters.missing)
                stats.views_unused = list(counters.unused)
            self._count_drops()
        return stats

    def _count_drops(self) -> None:
        s = self.stats
        s.sink_dropped = {sink.name: sink.dropped for sink in self.sinks}
        s.device_dropped = sum(a.dropped for a in self._actuator_list)
