"""The data that flows through the live loop and the protocols of its stages.

Every stage is a small class behind one of these protocols, so each can be tested and
benchmarked alone and swapped without touching the others. This module imports only numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

#: Stage names, in loop order, used as keys of ``Pose.timings`` (perf_counter_ns stamps,
#: each taken when that stage *finished*; ``grab`` is when the loop took the frame).
STAGES = ("grab", "preprocess", "infer", "decode", "process", "rules", "publish")


@dataclass
class Frame:
    """One camera image with its capture times.

    image: H x W x 3 uint8, BGR (OpenCV's order) unless the camera says otherwise.
    t_capture_ns: host ``time.perf_counter_ns()`` when the driver returned the frame.
    t_device_ns: the camera's own timestamp, if it has one.
    truth: K x 2 float32 ground-truth keypoints, when the source knows them (synthetic).
    """

    image: np.ndarray
    index: int
    t_capture_ns: int
    t_device_ns: int | None = None
    truth: np.ndarray | None = None


@dataclass
class FrameTransform:
    """Maps network-input pixels back to full-frame pixels: x_full = (x + 0.5) / sx - 0.5 + x0.

    Produced by preprocessing (crop offset x0, y0 then per-axis scale sx, sy); no other
    code needs to know about crops or resizes.
    """

    x0: float = 0.0
    y0: float = 0.0
    sx: float = 1.0
    sy: float = 1.0

    def to_full(self, xy: np.ndarray) -> np.ndarray:
        """Map K x 2 (or K x >=2, only the first two columns) points in place and return them."""
        xy[:, 0] = (xy[:, 0] + 0.5) / self.sx - 0.5 + self.x0
        xy[:, 1] = (xy[:, 1] + 0.5) / self.sy - 0.5 + self.y0
        return xy


@dataclass
class Pose:
    """K x 3 float32 (x, y, likelihood) in full-frame pixels, with the frame's times."""

    data: np.ndarray
    frame_index: int
    t_capture_ns: int
    timings: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Camera(Protocol):
    """A frame source: a device, a video file, a synthetic scene, a vendor SDK."""

    def open(self) -> None: ...

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        """The next frame, or None at the end of a file; raises CameraError on failure.

        ``out``: an H x W x 3 uint8 buffer to fill (a frame pool reuses its buffers); a
        camera allocates a new image when it is None or of another shape.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class Runner(Protocol):
    """Maps a preprocessed image to raw network outputs (scoremap, locref)."""

    def warmup(self) -> None: ...

    def run(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class Decoder(Protocol):
    """Maps one image's scoremap (K x h x w) and locref (2K x h x w) to a K x 3 pose."""

    def decode(self, scoremap: np.ndarray, locref: np.ndarray, out: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Processor(Protocol):
    """Pose -> pose (latency compensation, smoothing); DeepLabCut-Live's interface."""

    def process(self, pose: np.ndarray, **kwargs: object) -> np.ndarray: ...


@runtime_checkable
class Sink(Protocol):
    """Consumes poses (publisher, recorder, device driver); must never block the loop."""

    def send(self, pose: Pose) -> None: ...

    def close(self) -> None: ...
