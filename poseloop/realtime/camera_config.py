"""Typed camera configuration: one small section per kind of source, chosen by ``kind``.

Every option has a working default, so ``{"kind": "synthetic"}`` or ``{"kind": "opencv"}``
is a complete config. Unknown keys are rejected (``poseloop.config.Strict``) and
:func:`poseloop.realtime.cameras.make_camera` reports them with the field named.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, RootModel

from poseloop.config import Strict

#: OpenCV capture backends by name (``cv2.CAP_*``); "any" lets OpenCV choose.
Backend = Literal["any", "v4l2", "dshow", "msmf", "avfoundation", "gstreamer", "ffmpeg"]


class OpenCVConfig(Strict):
    """A camera by device index, or a video file (or stream URL) read with OpenCV."""

    kind: Literal["opencv"] = "opencv"
    source: int | str = Field(0, description="device index, or a video file path / URL")
    width: int | None = Field(None, ge=1, description="requested width (devices); None = as is")
    height: int | None = Field(None, ge=1, description="requested height (devices)")
    fps: float | None = Field(
        None, gt=0, description="requested frame rate (devices); pacing rate for files"
    )
    exposure: float | None = Field(
        None, description="CAP_PROP_EXPOSURE value (backend units; devices only)"
    )
    paced: bool = Field(False, description="files: play at the file's fps like a camera")
    backend: Backend = Field("any", description="OpenCV capture backend; any = OpenCV chooses")


class SyntheticConfig(Strict):
    """The synthetic open-field scene (``poseloop.synthetic.SyntheticScene``)."""

    kind: Literal["synthetic"] = "synthetic"
    width: int = Field(320, ge=64)
    height: int = Field(240, ge=48)
    fps: float = Field(30.0, gt=0, description="frame rate (scene time step and pacing)")
    paced: bool = Field(True, description="deliver frames at fps; False = as fast as possible")
    seed: int = Field(0, ge=0)
    frames: int | None = Field(None, ge=1, description="end after this many; None = endless")


class BaslerConfig(Strict):
    """A Basler camera through pypylon (``PYLON_CAMEMU=1`` gives pylon's emulated camera)."""

    kind: Literal["basler"] = "basler"
    serial: str | None = Field(None, description="serial number; None = the first camera")
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    fps: float | None = Field(None, gt=0, description="acquisition frame rate limit")
    exposure_us: float | None = Field(None, gt=0, description="exposure time in microseconds")
    timeout_ms: int = Field(1000, ge=1, description="longest wait for one frame")


class CameraConfig(RootModel[Annotated[
    OpenCVConfig | SyntheticConfig | BaslerConfig, Field(discriminator="kind")
]]):
    """Any camera section; ``kind`` (opencv, synthetic, basler) selects which."""
