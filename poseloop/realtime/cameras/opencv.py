"""Camera kind ``opencv``: a device index, or a video file / stream URL, through OpenCV."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from poseloop.config import Strict
from poseloop.errors import CameraError
from poseloop.realtime.cameras.common import Pacer, image_buffer
from poseloop.realtime.cameras.registry import camera_kind
from poseloop.realtime.types import CameraInfo, Frame

log = logging.getLogger(__name__)

#: OpenCV capture backends by name (``cv2.CAP_*``); "any" lets OpenCV choose.
Backend = Literal["any", "v4l2", "dshow", "msmf", "avfoundation", "gstreamer", "ffmpeg"]

_BACKENDS = {
    "any": cv2.CAP_ANY,
    "v4l2": cv2.CAP_V4L2,
    "dshow": cv2.CAP_DSHOW,
    "msmf": cv2.CAP_MSMF,
    "avfoundation": cv2.CAP_AVFOUNDATION,
    "gstreamer": cv2.CAP_GSTREAMER,
    "ffmpeg": cv2.CAP_FFMPEG,
}


class OpenCVConfig(Strict):
    """A camera by device index, or a video file (or stream URL) read with OpenCV."""

    kind: Literal["opencv"] = "opencv"
    source: int | str = Field(default=0, description="device index, or a video file path / URL")
    width: int | None = Field(
        default=None, ge=1, description="requested width (devices); None = as is"
    )
    height: int | None = Field(default=None, ge=1, description="requested height (devices)")
    fps: float | None = Field(
        default=None, gt=0, description="requested frame rate (devices); pacing rate for files"
    )
    exposure: float | None = Field(
        default=None, description="CAP_PROP_EXPOSURE value (backend units; devices only)"
    )
    paced: bool = Field(default=False, description="files: play at the file's fps like a camera")
    backend: Backend = Field(
        default="any", description="OpenCV capture backend; any = OpenCV chooses"
    )


@camera_kind("opencv", OpenCVConfig)
class OpenCVCamera:
    """A camera by device index, or a video file / stream URL, through ``cv2.VideoCapture``.

    :meth:`open` reports what the source gives: a file's size and frame rate, what the
    device's driver took of the requested properties (a mismatch is logged). Files end with
    ``read() -> None``; a device that stops delivering raises CameraError. ``t_device_ns``
    is the backend's frame time (``CAP_PROP_POS_MSEC``): the media time for files, the
    driver's buffer time for devices where it reports one. Frames are BGR.
    """

    def __init__(
        self,
        source: int | str | Path = 0,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        exposure: float | None = None,
        paced: bool = False,
        backend: str = "any",
    ) -> None:
        if backend not in _BACKENDS:
            raise CameraError(f"unknown OpenCV backend {backend!r}; use one of {list(_BACKENDS)}")
        self.source = source if isinstance(source, int) else str(source)
        self.requested = {"width": width, "height": height, "fps": fps, "exposure": exposure}
        self.paced = paced
        self.backend = backend
        self.is_file = isinstance(self.source, str) and "://" not in self.source
        #: after open: the device's exposure (CAP_PROP_EXPOSURE), the file's frame count
        self.exposure: float | None = None
        self.frame_count: int | None = None
        self._cap: cv2.VideoCapture | None = None
        self._pacer: Pacer | None = None
        self._shape = (0, 0, 3)
        self._index = 0

    @classmethod
    def from_config(cls, config: OpenCVConfig) -> OpenCVCamera:
        return cls(config.source, config.width, config.height, config.fps, config.exposure,
                   config.paced, config.backend)

    def __repr__(self) -> str:
        return f"OpenCVCamera({self.source!r})"

    def open(self) -> CameraInfo:
        """Open the source and report its frames; CameraError naming the path or index.

        fps is the file's (the pacing rate when ``paced`` with an ``fps``), or what the
        driver reports for a device; 0.0 when the source reports none.
        """
        self.close()
        if self.is_file and not Path(str(self.source)).is_file():
            raise CameraError(f"video file {self.source!r} not found")
        cap = cv2.VideoCapture(self.source, _BACKENDS[self.backend])
        if not cap.isOpened():
            cap.release()
            if isinstance(self.source, int):
                raise CameraError(
                    f"camera index {self.source} cannot be opened (not connected, no permission "
                    f"for /dev/video{self.source}, or in use by another program?)"
                )
            raise CameraError(
                f"video {self.source!r} cannot be opened (not a video, truncated, or a codec "
                f"this OpenCV build cannot decode?)"
            )
        if not self.is_file:
            self._configure(cap)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = max(0.0, float(cap.get(cv2.CAP_PROP_FPS)))
        if self.is_file:
            self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._pacer = None
        if self.paced:
            fps = self.requested["fps"] or fps
            if not fps:
                cap.release()
                raise CameraError(f"{self!r}: no frame rate in the file; set fps to pace it")
            self._pacer = Pacer(fps)
        self._cap = cap
        self._shape = (height, width, 3)
        self._index = 0
        return CameraInfo(width, height, fps, "BGR8")

    def _configure(self, cap: cv2.VideoCapture) -> None:
        """Request the configured properties and log those the device did not take."""
        props = {
            "width": cv2.CAP_PROP_FRAME_WIDTH,
            "height": cv2.CAP_PROP_FRAME_HEIGHT,
            "fps": cv2.CAP_PROP_FPS,
            "exposure": cv2.CAP_PROP_EXPOSURE,
        }
        for name, prop in props.items():
            value = self.requested[name]
            if value is None:
                continue
            cap.set(prop, float(value))
            actual = cap.get(prop)
            if abs(actual - value) > 1e-3 * max(1.0, abs(value)):
                log.warning("%r: requested %s=%s, the device gives %s", self, name, value, actual)
        self.exposure = cap.get(cv2.CAP_PROP_EXPOSURE)

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        """The next frame (decoded into ``out`` when it fits), None at the end of a file."""
        cap = self._cap
        if cap is None:
            raise CameraError(f"{self!r} is not open; call open() first")
        if self._pacer is not None:
            self._pacer.wait()
        if not cap.grab():
            if self.is_file:
                return None
            raise CameraError(
                f"{self!r} stopped delivering frames after frame {self._index - 1} "
                f"(unplugged or taken by another program?)"
            )
        t_capture = time.perf_counter_ns()
        ok, image = cap.retrieve(image_buffer(out, self._shape))
        if not ok or image is None:
            raise CameraError(f"{self!r}: frame {self._index} could not be decoded")
        ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        t_device = round(ms * 1e6) if self.is_file or ms > 0 else None
        frame = Frame(image, self._index, t_capture, t_device)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
