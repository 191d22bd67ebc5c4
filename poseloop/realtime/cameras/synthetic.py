"""Camera kind ``synthetic``: the synthetic open-field scene, with its ground truth."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from poseloop.config import Strict
from poseloop.realtime.cameras.common import Pacer, image_buffer
from poseloop.realtime.cameras.registry import camera_kind
from poseloop.realtime.types import CameraInfo, Frame
from poseloop.synthetic import SyntheticScene


class SyntheticConfig(Strict):
    """The synthetic open-field scene (``poseloop.synthetic.SyntheticScene``)."""

    kind: Literal["synthetic"] = "synthetic"
    width: int = Field(default=320, ge=64)
    height: int = Field(default=240, ge=48)
    fps: float = Field(
        default=30.0, gt=0, description="frame rate (scene time step and pacing)"
    )
    paced: bool = Field(
        default=True, description="deliver frames at fps; False = as fast as possible"
    )
    seed: int = Field(default=0, ge=0)
    frames: int | None = Field(
        default=None, ge=1, description="end after this many; None = endless"
    )


@camera_kind("synthetic", SyntheticConfig)
class SyntheticCamera:
    """The synthetic open-field scene as a camera, with ground truth in ``Frame.truth``.

    Frame i shows the scene at ``start_s + i / fps`` seconds (also its ``t_device_ns``), so
    frames are reproducible whatever the pacing; ``paced`` delivers them at ``fps``.
    """

    def __init__(
        self,
        width: int = 320,
        height: int = 240,
        fps: float = 30.0,
        paced: bool = True,
        seed: int = 0,
        frames: int | None = None,
        start_s: float = 0.0,
    ) -> None:
        self.scene = SyntheticScene(width, height, seed)
        self.width, self.height, self.fps = width, height, float(fps)
        self.paced = paced
        self.frames = frames
        self.start_s = start_s
        self._pacer: Pacer | None = None
        self._index = 0

    @classmethod
    def from_config(cls, config: SyntheticConfig) -> SyntheticCamera:
        return cls(config.width, config.height, config.fps, config.paced, config.seed,
                   config.frames)

    def __repr__(self) -> str:
        return f"SyntheticCamera({self.width}x{self.height} @ {self.fps:g} fps)"

    def open(self) -> CameraInfo:
        """Start again at frame 0; the frames are the configured size and rate."""
        self._index = 0
        self._pacer = Pacer(self.fps) if self.paced else None
        return CameraInfo(self.width, self.height, self.fps, "BGR8")

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        """Render the next frame into ``out`` (when it fits); None after ``frames`` frames."""
        if self.frames is not None and self._index >= self.frames:
            return None
        if self._pacer is not None:
            self._pacer.wait()
        t = self.start_s + self._index / self.fps
        image = image_buffer(out, (self.height, self.width, 3))
        truth = self.scene.render_into(t, image)
        frame = Frame(image, self._index, time.perf_counter_ns(), round(t * 1e9), truth)
        self._index += 1
        return frame

    def close(self) -> None:
        self._pacer = None
