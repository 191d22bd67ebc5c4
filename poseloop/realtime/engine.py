"""The live engine: wires camera, preprocess, runner, decoder, processors, rules, devices,
stream and recorder from one EngineConfig. It holds no stage logic of its own.

One grab thread keeps the newest frame; the loop thread runs every other stage without
waiting on slow work (device writes and publishing never block; disk writes go through the
recorder's queue). Use it from Python as::

    with Engine.from_config("configs/zone_trigger.yaml") as engine:
        stats = engine.run(max_frames=1000)

or feed frames yourself with ``engine.step(frame)``.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poseloop.errors import CameraError
from poseloop.hardware.emulator import DeviceEmulator
from poseloop.hardware.serial_device import SerialDevice
from poseloop.realtime.cameras import GrabThread, make_camera
from poseloop.realtime.decoder import PeakDecoder
from poseloop.realtime.engine_config import (
    EngineConfig,
    KalmanConfig,
    PythonProcessorConfig,
    load_engine_config,
    with_overrides,
)
from poseloop.realtime.preprocess import Preprocessor
from poseloop.realtime.processors import KalmanPredictor, ProcessorChain, load_processor
from poseloop.realtime.recorder import Recorder
from poseloop.realtime.runner import OrtRunner
from poseloop.realtime.types import Camera, Frame, Pose
from poseloop.rules import Event, RuleSet
from poseloop.stream.publisher import PosePublisher
from poseloop.stream.wire import Meta

log = logging.getLogger(__name__)
#: A device ``port`` that starts an in-process DeviceEmulator instead of opening hardware.
EMULATOR = "emulator"
_now = time.perf_counter_ns


@dataclass
class RunStats:
    """What a run did: frames processed and everything that was counted instead of waited on."""

    frames: int = 0
    captured: int = 0
    camera_dropped: int = 0
    recorder_dropped: int = 0
    stream_dropped: int = 0
    device_dropped: int = 0
    events: int = 0
    seconds: float = 0.0
    stopped_by: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _processor(cfg: KalmanConfig | PythonProcessorConfig, pcutoff: float) -> Any:
    if isinstance(cfg, KalmanConfig):
        return KalmanPredictor(
            latency_ms=cfg.latency_ms, order=cfg.order,
            pcutoff=pcutoff if cfg.pcutoff is None else cfg.pcutoff,
            measurement_noise=cfg.measurement_noise, process_noise=cfg.process_noise,
            max_gap_ms=cfg.max_gap_ms,
        )
    return load_processor(cfg.target, cfg.kwargs)


class Engine:
    """Every stage of the live loop, built once from an EngineConfig."""

    def __init__(self, config: EngineConfig, model_path: str | Path,
                 camera: Camera | None = None):
        self.config = cfg = config
        self._closed = False
        self.runner = OrtRunner(
            model_path, providers=cfg.runner.providers, allow_fallback=cfg.runner.allow_fallback,
            intra_threads=cfg.runner.intra_threads, inter_threads=cfg.runner.inter_threads,
            device_id=cfg.runner.device_id, trt_cache_dir=cfg.runner.trt_cache_dir,
            trt_fp16=cfg.runner.trt_fp16,
        )
        self.spec = spec = self.runner.spec
        self.model_path = Path(model_path)
        pre = cfg.preprocess
        self.preprocess = Preprocessor.from_spec(
            spec, resize=pre.resize, crop=pre.crop,
            dynamic=(pre.dynamic, spec.pcutoff if pre.dynamic_pcutoff is None
                     else pre.dynamic_pcutoff, pre.dynamic_margin),
        )
        self.decoder = PeakDecoder(spec)
        self.processors = ProcessorChain([_processor(p, spec.pcutoff) for p in cfg.processors])
        # port "emulator": rehearse without hardware, against an in-process device emulator
        self.emulators = {d.name: DeviceEmulator() for d in cfg.devices if d.port == EMULATOR}
        self.devices = {
            d.name: SerialDevice.from_config(
                d.model_copy(update={"port": self.emulators[d.name].port})
                if d.name in self.emulators else d)
            for d in cfg.devices
        }
        self._device_list = tuple(self.devices.values())
        self.rules = RuleSet.compile(
            [r.model_dump(by_alias=True) for r in cfg.rules], spec.bodyparts, spec.pcutoff,
            devices=set(self.devices),
        )
        self.camera = camera if camera is not None else make_camera(cfg.camera)
        self.publisher: PosePublisher | None = None
        self.recorder: Recorder | None = None
        self._raw = np.empty((len(spec.bodyparts), 3), np.float32)
        self._frame_size: tuple[int, int] = (0, 0)
        self.stats = RunStats()
        self.last_events: list[Event] = []
        self._stop_requested = threading.Event()
        self._frozen = False
        self._grab: GrabThread | None = None

    @classmethod
    def from_config(cls, source: str | Path | dict | EngineConfig | None = None,
                    camera: Camera | None = None, **overrides: Any) -> Engine:
        """An Engine from a YAML path, a mapping or an EngineConfig, with field overrides.

        Without a ``model`` the demo's synthetic model is used (built once and cached).
        """
        cfg = load_engine_config(source)
        if overrides:
            cfg = with_overrides(cfg, **overrides)
        model = cfg.model
        if model is None:
            from poseloop.synthetic_model import synthetic_model

            model = synthetic_model()
        return cls(cfg, model, camera)

    # -- lifecycle ------------------------------------------------------------------------
    def open(self, frame_size: tuple[int, int] | None = None) -> Engine:
        """Start devices, stream and recorder, and warm up every stage for ``frame_size``."""
        for emulator in self.emulators.values():
            emulator.start()
        for device in self.devices.values():
            device.open()
        spec, cfg = self.spec, self.config
        if frame_size is None:
            frame_size = (getattr(self.camera, "width", None) or 640,
                          getattr(self.camera, "height", None) or 480)
        self._frame_size = frame_size
        if cfg.stream is not None:
            meta = Meta(bodyparts=list(spec.bodyparts), skeleton=list(spec.skeleton),
                        model=self.model_path.name, image_size=frame_size)
            self.publisher = PosePublisher.from_config(cfg.stream, meta)
        if cfg.record.dir:
            self.recorder = Recorder(
                cfg.record.dir, spec.bodyparts, scorer=f"DLC_poseloop_{spec.backbone or 'model'}",
                name=cfg.record.name, video=cfg.record.video,
                video_fps=float(getattr(self.camera, "fps", None) or 30.0),
                queue_size=cfg.record.queue_size, flush_s=cfg.record.flush_s,
                if_exists=cfg.record.if_exists,
            )
        self.warmup(frame_size)
        # Everything alive now lives as long as the run: move it out of the cyclic
        # collector's sight, so full collections stay short and come often enough to free
        # the recorder's short-lived pandas cycles (without this the memory climbed ~50
        # bytes a frame between the rare full collections). Undone at close.
        gc.freeze()
        self._frozen = True
        return self

    def warmup(self, frame_size: tuple[int, int]) -> None:
        """Compile and warm every stage on a blank frame, outside any timing."""
        w, h = frame_size
        blank = Frame(np.zeros((h, w, 3), np.uint8), -1, _now())
        image, _ = self.preprocess.preprocess(blank)
        self.runner.warmup((image.shape[1], image.shape[2]))
        self.decoder.warmup()
        self.processors.warmup()
        scoremap, locref = self.runner.run(image)
        self.decoder.decode(scoremap, locref, self._raw)

    def close(self) -> None:
        """Flush and close the recorder, stream and devices (device outputs turned off)."""
        if self._closed:
            return
        self._closed = True
        if self._frozen:
            gc.unfreeze()
            self._frozen = False
        for device in self.devices.values():
            try:
                device.close()
            except Exception as e:  # closing must reach every part
                self.stats.errors.append(f"device {device.name}: {e}")
        for emulator in self.emulators.values():
            emulator.stop()
        if self.publisher is not None:
            self.publisher.close()
        if self.recorder is not None:
            self.recorder.close()
            error = f"recorder: {self.recorder.error}"
            if self.recorder.error and error not in self.stats.errors:
                self.stats.errors.append(error)

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
        """Run one frame through every stage; returns its pose in full-frame pixels."""
        t_grab = _now()
        image, transform = self.preprocess.preprocess(frame)
        t_pre = _now()
        scoremap, locref = self.runner.run(image)
        t_infer = _now()
        raw = self.decoder.decode(scoremap, locref, self._raw)
        transform.to_full(raw)
        t_decode = _now()
        self.preprocess.update(raw)
        if self.processors.processors:
            data = self.processors.process(
                raw, t_capture_ns=frame.t_capture_ns, latency_ns=_now() - frame.t_capture_ns,
                frame_index=frame.index,
            ).copy()
        else:
            data = raw.copy()
        t_process = _now()
        events = self.last_events = self.rules.evaluate(data, frame.t_capture_ns, frame.index)
        if events:
            self._fire(events)
        for device in self._device_list:
            device.keepalive()  # feeds the device watchdogs while the loop runs
        t_rules = _now()
        pose = Pose(data, frame.index, frame.t_capture_ns, {
            "grab": t_grab, "preprocess": t_pre, "infer": t_infer, "decode": t_decode,
            "process": t_process, "rules": t_rules,
        })
        if self.publisher is not None:
            self.publisher.send(pose)
        pose.timings["publish"] = _now()
        if self.recorder is not None:
            self.recorder.submit(pose, frame)
        self.stats.frames += 1
        return pose

    def _fire(self, events: list[Event]) -> None:
        """Carry out fired rules' actions: device writes (non-blocking), stream, recorder."""
        for event in events:
            self.stats.events += 1
            for action in event.actions:
                raw = action.raw
                self.devices[action.device].send(raw if raw is not None else action.command)
                text = action.command if raw is None else raw.hex()
                label = f"{action.device}:{text}"
                if self.publisher is not None:
                    self.publisher.send_event(event.frame_index, event.rule, label, _now())
                if self.recorder is not None:
                    self.recorder.submit_event(event.frame_index, event.rule, label, _now())

    def stop(self) -> None:
        """Ask :meth:`run` to stop after the frame in hand (thread- and signal-safe): the
        clean way to end a run from a signal handler or another thread."""
        self._stop_requested.set()
        grab = self._grab
        if grab is not None:
            grab.interrupt()

    def run(self, max_frames: int | None = None, duration_s: float | None = None,
            on_pose: Any = None) -> RunStats:
        """Grab and process frames until the camera ends, a limit is hit, or Ctrl-C.

        ``on_pose(pose, frame)`` (optional) is called after each frame, e.g. for display.
        """
        cfg = self.config
        max_frames = cfg.max_frames if max_frames is None else max_frames
        duration_s = cfg.duration_s if duration_s is None else duration_s
        grab = self._grab = GrabThread(self.camera, cfg.camera_timeout_s).start()
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
                frame = grab.get()
                if frame is None:
                    stats.stopped_by = ("interrupted" if self._stop_requested.is_set()
                                        else "end of stream")
                    break
                pose = self.step(frame)
                if on_pose is not None:
                    on_pose(pose, frame)
                if self.recorder is not None and self.recorder.error:
                    if cfg.record.on_error == "stop":
                        stats.stopped_by = "recorder error"
                        stats.errors.append(f"recorder: {self.recorder.error}")
                        break
        except CameraError as e:
            stats.stopped_by = "camera error"
            stats.errors.append(str(e))
        except KeyboardInterrupt:
            stats.stopped_by = "interrupted"
        finally:
            self._grab = None
            grab.stop()
            stats.seconds = time.monotonic() - t0
            stats.captured = grab.grabbed
            stats.camera_dropped = grab.dropped
            self._count_drops()
        return stats

    def _count_drops(self) -> None:
        s = self.stats
        s.recorder_dropped = self.recorder.dropped if self.recorder is not None else 0
        s.stream_dropped = sum(self.publisher.dropped.values()) if self.publisher else 0
        s.device_dropped = sum(d.counters.dropped for d in self.devices.values())
