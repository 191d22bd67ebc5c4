"""The data that flows through the live loop and the protocols of its stages.

Every stage is a small class behind one of these protocols, so each can be tested and
benchmarked alone and swapped without touching the others; the engine composes the parts it
is given (``poseloop.realtime.builder`` makes them from config). This module imports only
numpy (and the FrameTransform it names).

Poses are N x K x 3 everywhere, from the decoder to every sink: N individuals (1 for a
single-animal model), K bodyparts, (x, y, likelihood) in full-frame pixels. With several
calibrated cameras (a camera group and a triangulation), they are N x K x 4 (x, y, z,
likelihood) in the calibration's world units (mm): 3D adds a coordinate, not a pipeline;
``Session.dims`` says which, and each view's 2D poses travel along in ``Pose.views``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from poseloop.realtime.transform import FrameTransform

#: Stage names, in loop order, used as keys of ``Pose.timings`` (perf_counter_ns stamps,
#: each taken when that stage *finished*; ``grab`` is when the loop took the frame).
STAGES = ("grab", "preprocess", "infer", "decode", "process", "rules", "publish")

#: The last axis of 2D and of triangulated 3D poses.
COORDS_2D = ("x", "y", "likelihood")
COORDS_3D = ("x", "y", "z", "likelihood")
#: The individual's name of a single-animal model (N = 1).
SINGLE_ANIMAL = ("animal",)
#: DeepLabCut's individual for the unique bodyparts of a multi-animal model (in its tables).
UNIQUE_INDIVIDUAL = "single"


@dataclass
class Frame:
    """One camera image with its capture times.

    image: H x W x 3 uint8, BGR (OpenCV's order) unless the camera says otherwise.
    t_capture_ns: host ``time.perf_counter_ns()`` when the driver returned the frame.
    t_device_ns: the camera's own timestamp, if it has one.
    truth: K x 2 float32 ground-truth keypoints, when the source knows them (synthetic).
    camera: index of the camera it came from (in ``Session.cameras``).
    views: when this frame stands for a camera group's frame set (it is the first
        camera's), every camera's frame of the set in camera order, None where missing.
    """

    image: np.ndarray
    index: int
    t_capture_ns: int
    t_device_ns: int | None = None
    truth: np.ndarray | None = None
    camera: int = 0
    views: list[Frame | None] | None = None


@dataclass(frozen=True)
class CameraInfo:
    """What an opened camera delivers: frame size, frame rate and pixel format."""

    width: int
    height: int
    fps: float
    pixel_format: str = "BGR8"
    name: str = "camera"


@dataclass
class Pose:
    """One frame's poses: every individual's bodyparts, their track ids, and the times.

    points: N x K x 3 float32 (x, y, likelihood) in full-frame pixels; N = 1 for a
        single-animal model. In 3D (``Session.dims == 3``): N x K x 4 (x, y, z, likelihood)
        in world units, NaN where fewer than two cameras saw the bodypart.
    ids: N int64 track ids (-1 = not assigned yet).
    unique: U x 3 float32 for DeepLabCut's unique bodyparts (None when the model has none).
    camera: the index of the camera the frame came from.
    timings: ``perf_counter_ns`` stamps of the end of each stage (``STAGES``; 3D adds
        ``triangulate`` between ``decode`` and ``process``).
    views: 3D only: V x N x K x 3 float32, every camera's 2D poses (full-frame pixels of
        that camera; NaN and likelihood 0 for a missing view).
    triangulation: 3D only: N x K x 2 float32, each point's mean reprojection error (px)
        and the number of cameras it was triangulated from.
    """

    points: np.ndarray
    frame_index: int
    t_capture_ns: int
    timings: dict[str, int] = field(default_factory=dict)
    ids: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    unique: np.ndarray | None = None
    camera: int = 0
    views: np.ndarray | None = None
    triangulation: np.ndarray | None = None


@dataclass(frozen=True)
class Session:
    """What the parts of one run know about it once the camera is open.

    Sinks receive it at ``open``: names for the N x K x 3 axes, the skeleton, and the
    camera's size, frame rate and pixel format as it reported them after opening. ``dims``
    is 3 for triangulated poses (N x K x 4, one CameraInfo per camera of the group, in
    the order of ``Pose.views``), 2 otherwise.
    """

    bodyparts: tuple[str, ...]
    individuals: tuple[str, ...] = SINGLE_ANIMAL
    unique_bodyparts: tuple[str, ...] = ()
    skeleton: tuple[tuple[str, str], ...] = ()
    multi_animal: bool = False
    model: str = ""
    scorer: str = "DLC_poseloop_model"
    pcutoff: float = 0.6
    cameras: tuple[CameraInfo, ...] = (CameraInfo(640, 480, 30.0),)
    dims: int = 2

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the first camera's frames: the pixel space of the poses."""
        return self.cameras[0].width, self.cameras[0].height

    @property
    def fps(self) -> float:
        return self.cameras[0].fps

    @property
    def coords(self) -> tuple[str, ...]:
        """The names of the last axis of ``Pose.points``."""
        return COORDS_3D if self.dims == 3 else COORDS_2D

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of ``Pose.points``: (N, K, 3), or (N, K, 4) in 3D."""
        return len(self.individuals), len(self.bodyparts), self.dims + 1


class ActionRecord(NamedTuple):
    """One action a fired rule took: shown, streamed and recorded by the sinks.

    animals: the individuals whose poses made the rule hold, comma-separated (empty for a
    single-animal model).
    t_exposure_us, t_output_us, latency_us: for a device with trigger timing (``timing:
    true``), the frame's exposure strobe and the output's edge on the device's microsecond
    clock, and their difference; NaN where not measured (see
    :mod:`poseloop.hardware.trigger_timing`).
    """

    frame: int
    rule: str
    action: str
    t_ns: int
    animals: str = ""
    t_exposure_us: float = math.nan
    t_output_us: float = math.nan
    latency_us: float = math.nan


@runtime_checkable
class Camera(Protocol):
    """A frame source: a device, a video file, a synthetic scene, a vendor SDK.

    ``open`` returns what the source actually delivers (a device may ignore a request), so
    the engine learns the frame size and rate before warm-up, the stream's meta and the
    recorded video. ``close`` leaves the hardware idle.
    """

    def open(self) -> CameraInfo: ...

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        """The next frame, or None at the end of a file; raises CameraError on failure.

        ``out``: an H x W x 3 uint8 buffer to fill (a frame pool reuses its buffers); a
        camera allocates a new image when it is None or of another shape.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class Preprocess(Protocol):
    """Frame -> graph input and the transform back; may follow the animal (dynamic crop)."""

    def preprocess(self, frame: Frame) -> tuple[np.ndarray, FrameTransform]: ...

    def update(self, points: np.ndarray) -> None: ...


@runtime_checkable
class Runner(Protocol):
    """Maps a preprocessed image to the network's outputs, in the model's output order."""

    def warmup(self, shape: tuple[int, int] | None = None) -> None:
        """Run blank inputs of (height, width) ``shape`` so the first frame is fast."""

    def run(self, image: np.ndarray) -> Sequence[np.ndarray]: ...


@runtime_checkable
class Decoder(Protocol):
    """Maps one image's network outputs to N x K x 3 points in ``out``: graph-input pixels,
    or full-frame pixels through ``transform`` (applied inside the decoder's kernel where it
    can be: the live loop's decode then costs one call).

    ``shape`` is (N, K, 3), the shape of ``out``.
    """

    shape: tuple[int, int, int]

    def warmup(self) -> None: ...

    def decode(self, outputs: Sequence[np.ndarray], out: np.ndarray,
               transform: FrameTransform | None = None) -> np.ndarray: ...


@runtime_checkable
class Tracker(Protocol):
    """Keeps identities across frames: reorders ``points`` (N x K x 3) and fills ``ids``."""

    def update(self, points: np.ndarray, ids: np.ndarray, t_ns: int) -> None: ...


@runtime_checkable
class Processor(Protocol):
    """N x K x 3 points -> points (latency compensation, smoothing), called with the
    ``PROCESS_KWARGS`` of :mod:`poseloop.realtime.processors`. None keeps the input."""

    def process(self, pose: np.ndarray, **kwargs: object) -> np.ndarray | None: ...


@runtime_checkable
class RuleEvaluator(Protocol):
    """Decides which rules fire on a pose; never acts itself."""

    def evaluate(self, points: np.ndarray, t_ns: int, frame_index: int) -> list: ...


@runtime_checkable
class Actuator(Protocol):
    """A device the rules drive (serial board, ...): ``send`` never blocks.

    ``keepalive`` is called every frame (feeds a device watchdog); ``dropped`` counts
    commands that were not delivered.
    """

    name: str

    def open(self) -> object: ...

    def send(self, command: str | bytes) -> bool: ...

    def keepalive(self) -> None: ...

    def close(self) -> None: ...

    @property
    def dropped(self) -> int: ...


@runtime_checkable
class Sink(Protocol):
    """Takes every pose and every action from the loop without ever blocking it.

    ``open`` is called once the camera is open; ``pose``/``event`` per frame and per
    action; ``close`` flushes. A sink counts what it could not take in ``dropped``; a
    non-empty ``fatal`` asks the engine to stop the run (e.g. the recorder after a write
    error with ``on_error: stop``), ``errors`` lists what went wrong.

    Optional: ``attach(engine)``, called before ``open``, gives a sink with controls (the
    live page's stop and record buttons) the engine; ``set_zones(zones)`` gives a sink that
    draws the rules' zones their shapes (the builder calls it).
    """

    name: str

    def open(self, session: Session) -> None: ...

    def pose(self, pose: Pose, frame: Frame) -> None: ...

    def event(self, action: ActionRecord) -> None: ...

    def close(self) -> None: ...

    @property
    def dropped(self) -> int: ...

    @property
    def fatal(self) -> str | None: ...
