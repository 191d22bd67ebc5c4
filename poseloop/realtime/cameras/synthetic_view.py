"""Camera kind ``synthetic_view``: one virtual camera of the synthetic 3D rig.

A camera group of ``synthetic_view`` cameras ``view: 0 .. cameras-1`` (same ``seed``, size
and rate) is a hardware-triggered multi-camera rig over the synthetic open field, with
known calibration (:func:`poseloop.threed.synthetic_views.view_rig`, written by
``poseloop calibrate --synthetic``... or :func:`write_view_calibration`) and 3D truth.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from poseloop.config import Strict
from poseloop.realtime.cameras.common import Pacer, image_buffer
from poseloop.realtime.cameras.registry import camera_kind
from poseloop.realtime.types import CameraInfo, Frame


class SyntheticViewConfig(Strict):
    """One view of the synthetic 3D rig (``poseloop.threed.synthetic_views``)."""

    kind: Literal["synthetic_view"] = "synthetic_view"
    view: int = Field(default=0, ge=0, description="which camera of the rig")
    cameras: int = Field(default=3, ge=2, description="cameras in the rig")
    width: int = Field(default=400, ge=64)
    height: int = Field(default=320, ge=48)
    fps: float = Field(default=30.0, gt=0, description="frame rate (scene time step, pacing)")
    paced: bool = Field(default=True, description="deliver frames at fps; False = at once")
    seed: int = Field(default=0, ge=0)
    frames: int | None = Field(default=None, ge=1, description="end after this many")


@camera_kind("synthetic_view", SyntheticViewConfig)
class SyntheticViewCamera:
    """Camera ``view`` of the synthetic rig; frame i shows the scene at i / fps seconds,
    numbered i like a triggered camera, its 2D truth in ``Frame.truth`` and its 3D truth in
    :attr:`last_world`."""

    def __init__(self, view: int = 0, cameras: int = 3, width: int = 400, height: int = 320,
                 fps: float = 30.0, paced: bool = True, seed: int = 0,
                 frames: int | None = None) -> None:
        from poseloop.threed.synthetic_views import RigScene, view_rig

        if view >= cameras:
            raise ValueError(f"view {view} of a rig of {cameras} cameras (views 0..{cameras - 1})")
        self.view, self.fps, self.paced, self.frames = view, float(fps), paced, frames
        self.scene = RigScene(view_rig(cameras, (width, height)), seed=seed)
        self.width, self.height = width, height
        self.last_world: np.ndarray | None = None
        self._pacer: Pacer | None = None
        self._index = 0

    @classmethod
    def from_config(cls, config: SyntheticViewConfig) -> SyntheticViewCamera:
        return cls(config.view, config.cameras, config.width, config.height, config.fps,
                   config.paced, config.seed, config.frames)

    def __repr__(self) -> str:
        return (f"SyntheticViewCamera(view {self.view}, {self.width}x{self.height} @ "
                f"{self.fps:g} fps)")

    def open(self) -> CameraInfo:
        self._index = 0
        self._pacer = Pacer(self.fps) if self.paced else None
        name = self.scene.rig.cameras[self.view].name
        return CameraInfo(self.width, self.height, self.fps, "BGR8", name)

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        if self.frames is not None and self._index >= self.frames:
            return None
        if self._pacer is not None:
            self._pacer.wait()
        t = self._index / self.fps
        image = image_buffer(out, (self.height, self.width, 3))
        truth, self.last_world = self.scene.render_into(self.view, t, image)
        frame = Frame(image, self._index, time.perf_counter_ns(), round(t * 1e9), truth)
        self._index += 1
        return frame

    def close(self) -> None:
        self._pacer = None


def write_view_calibration(path: str | Path, cameras: int = 3,
                           size: tuple[int, int] = (400, 320)) -> Path:
    """The synthetic rig's calibration as anipose's ``calibration.toml``."""
    from poseloop.threed.calibration import write_calibration
    from poseloop.threed.synthetic_views import view_rig

    return write_calibration(view_rig(cameras, size), path)
