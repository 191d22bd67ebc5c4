"""Camera kind ``basler``: a Basler camera through pypylon (an optional dependency).

``PYLON_CAMEMU=1`` in the environment gives pylon's emulated camera (serial ``0815-0000``),
which the tests use.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from poseloop.config import Strict
from poseloop.errors import CameraError
from poseloop.realtime.cameras.common import image_buffer
from poseloop.realtime.cameras.registry import camera_kind
from poseloop.realtime.types import CameraInfo, Frame

log = logging.getLogger(__name__)


class BaslerConfig(Strict):
    """A Basler camera through pypylon (``PYLON_CAMEMU=1`` gives pylon's emulated camera)."""

    kind: Literal["basler"] = "basler"
    serial: str | None = Field(
        default=None, description="serial number; None = the first camera"
    )
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    fps: float | None = Field(default=None, gt=0, description="acquisition frame rate limit")
    exposure_us: float | None = Field(
        default=None, gt=0, description="exposure time in microseconds"
    )
    timeout_ms: int = Field(default=1000, ge=1, description="longest wait for one frame")


#: pylon pixel formats we can turn into BGR, in order of preference, and how (None = BGR).
PYLON_FORMATS: dict[str, int | None] = {
    "BGR8": None,
    "BGR8Packed": None,
    "RGB8": cv2.COLOR_RGB2BGR,
    "RGB8Packed": cv2.COLOR_RGB2BGR,
    "Mono8": cv2.COLOR_GRAY2BGR,
    "BayerRG8": cv2.COLOR_BayerRGGB2BGR,
    "BayerGR8": cv2.COLOR_BayerGRBG2BGR,
    "BayerGB8": cv2.COLOR_BayerGBRG2BGR,
    "BayerBG8": cv2.COLOR_BayerBGGR2BGR,
}


def _pypylon() -> tuple[Any, Any]:
    """pypylon's ``pylon`` and ``genicam`` modules, or a CameraError saying how to get them."""
    try:
        from pypylon import genicam, pylon
    except ImportError as e:
        raise CameraError(
            "Basler cameras need pypylon: `pip install pypylon` (set PYLON_CAMEMU=1 to test "
            "with pylon's emulated camera)"
        ) from e
    return pylon, genicam


@camera_kind("basler", BaslerConfig)
class BaslerCamera:
    """A Basler camera through pypylon; frames are BGR, timestamps from the camera clock.

    Width, height, frame rate and exposure (µs) are set where the camera has those features
    (SFNC 2 names, or the older ``...Abs`` GigE names); :meth:`open` reports what the
    camera then gives, and ``exposure_us`` holds its exposure. The camera delivers BGR8 if
    it can, otherwise RGB8, Mono8 or 8-bit Bayer, converted to BGR. Incomplete grabs are
    skipped and counted in ``failed``.
    """

    def __init__(
        self,
        serial: str | None = None,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        exposure_us: float | None = None,
        timeout_ms: int = 1000,
    ) -> None:
        self.serial = serial
        self.requested = {"width": width, "height": height, "fps": fps, "exposure_us": exposure_us}
        self.timeout_ms = timeout_ms
        self.exposure_us: float | None = None
        self.failed = 0
        self._cam: Any = None
        self._pylon: Any = None
        self._convert: int | None = None
        self._tick_hz = 1_000_000_000
        self._index = 0

    @classmethod
    def from_config(cls, config: BaslerConfig) -> BaslerCamera:
        return cls(config.serial, config.width, config.height, config.fps, config.exposure_us,
                   config.timeout_ms)

    def __repr__(self) -> str:
        return f"BaslerCamera({self.serial or 'first'})"

    def open(self) -> CameraInfo:
        """Find, configure and start the camera; CameraError naming what is missing.

        ``pixel_format`` is the pylon format the camera sends; fps is the rate the camera
        says it runs at (``ResultingFrameRate``, else its frame rate setting; 0.0 if none).
        """
        self.close()
        pylon, genicam = _pypylon()
        factory = pylon.TlFactory.GetInstance()
        devices = factory.EnumerateDevices()
        found = [d.GetSerialNumber() for d in devices]
        chosen = [d for d in devices if self.serial in (None, d.GetSerialNumber())]
        if not chosen:
            raise CameraError(
                f"Basler camera {self.serial or '(any)'} not found; cameras present: "
                f"{found or 'none'} (set PYLON_CAMEMU=1 for pylon's emulated camera)"
            )
        self.serial = chosen[0].GetSerialNumber()
        cam = pylon.InstantCamera(factory.CreateDevice(chosen[0]))
        try:
            cam.Open()
            info = self._configure(cam, genicam.GenericException)
            cam.StartGrabbing(pylon.GrabStrategy_OneByOne)
        except genicam.GenericException as e:
            cam.Close()
            raise CameraError(f"{self!r}: cannot configure or start: {e}") from e
        except CameraError:
            cam.Close()
            raise
        self._cam, self._pylon = cam, pylon
        self._index = 0
        return info

    def _configure(self, cam: Any, node_error: type[Exception]) -> CameraInfo:
        formats = list(cam.PixelFormat.Symbolics)
        preferred = [f for f in PYLON_FORMATS if f in formats]
        if not preferred:
            raise CameraError(
                f"{self!r}: none of its pixel formats {formats} is supported; "
                f"supported: {list(PYLON_FORMATS)}"
            )
        cam.PixelFormat.Value = preferred[0]
        self._convert = PYLON_FORMATS[preferred[0]]
        w, h = self.requested["width"], self.requested["height"]
        if w is not None:
            cam.Width.Value = w
        if h is not None:
            cam.Height.Value = h
        if self.requested["fps"] is not None:
            _set_first(cam, ("AcquisitionFrameRateEnable",), True, node_error)
        limit = _set_first(
            cam, ("AcquisitionFrameRate", "AcquisitionFrameRateAbs"), self.requested["fps"],
            node_error,
        )
        self.exposure_us = _set_first(
            cam, ("ExposureTime", "ExposureTimeAbs"), self.requested["exposure_us"], node_error
        )
        tick = _set_first(cam, ("GevTimestampTickFrequency",), None, node_error)
        self._tick_hz = int(tick) if tick else 1_000_000_000
        for name, value in (("fps", limit), ("exposure_us", self.exposure_us)):
            want = self.requested[name]
            if want is not None and (value is None or abs(value - want) > 1e-3 * want):
                log.warning("%r: requested %s=%s, the camera gives %s", self, name, want, value)
        fps = _set_first(cam, ("ResultingFrameRate", "ResultingFrameRateAbs"), None, node_error)
        return CameraInfo(int(cam.Width.Value), int(cam.Height.Value),
                          float(fps or limit or 0.0), preferred[0])

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        """The next complete frame as BGR in ``out`` (when it fits); CameraError on timeout."""
        cam = self._cam
        if cam is None:
            raise CameraError(f"{self!r} is not open; call open() first")
        deadline = time.perf_counter_ns() + self.timeout_ms * 1_000_000
        while True:
            wait_ms = max(1, (deadline - time.perf_counter_ns()) // 1_000_000)
            result = cam.RetrieveResult(int(wait_ms), self._pylon.TimeoutHandling_Return)
            t_capture = time.perf_counter_ns()
            if result is None or not result.IsValid():
                raise CameraError(
                    f"{self!r}: no frame within {self.timeout_ms} ms after frame "
                    f"{self._index - 1} (trigger not firing, cable, or bandwidth?)"
                )
            try:
                if result.GrabSucceeded():
                    return self._frame(result, out, t_capture)
                self.failed += 1
            finally:
                result.Release()

    def _frame(self, result: Any, out: np.ndarray | None, t_capture: int) -> Frame:
        raw = result.Array
        image = image_buffer(out, (raw.shape[0], raw.shape[1], 3))
        if self._convert is None:
            np.copyto(image, raw)
        else:
            cv2.cvtColor(raw, self._convert, dst=image)
        # a camera without a clock (pylon's emulation) stamps every frame 0
        ticks = int(result.TimeStamp)
        t_device = ticks * 1_000_000_000 // self._tick_hz if ticks else None
        frame = Frame(image, self._index, t_capture, t_device)
        self._index += 1
        return frame

    def close(self) -> None:
        """Stop acquisition and release the camera (leaves it idle)."""
        if self._cam is not None:
            cam, self._cam = self._cam, None
            cam.StopGrabbing()
            cam.Close()


def _set_first(cam: Any, names: tuple[str, ...], value: Any, node_error: type[Exception]) -> Any:
    """Set (unless value is None) and read back the first of ``names`` the camera implements.

    Feature names differ between camera generations; one this model lacks raises
    ``node_error`` (genicam's), and the next name is tried.
    """
    for name in names:
        try:
            node = getattr(cam, name)
            if value is not None:
                node.Value = value
            return node.Value
        except (node_error, AttributeError):
            continue
    return None
