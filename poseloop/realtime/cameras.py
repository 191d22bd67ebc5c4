"""Frame sources behind the ``Camera`` protocol, and the thread that keeps the newest frame.

* :class:`OpenCVCamera`: a device index (width/height/fps/exposure where the backend allows,
  reporting what the device gave) or a video file, read as fast as possible or ``paced`` at
  the file's frame rate like a camera.
* :class:`SyntheticCamera`: :class:`poseloop.synthetic.SyntheticScene`, each frame carrying
  its ground-truth keypoints in ``Frame.truth``.
* :class:`BaslerCamera`: pypylon, an optional import (``PYLON_CAMEMU=1`` gives pylon's
  emulated camera); the device timestamp goes into ``Frame.t_device_ns``.
* :class:`GrabThread`: reads a camera continuously in its own thread so the driver's buffer
  never fills, keeps only the newest frame (older unprocessed ones are counted as dropped) and
  hands it to the loop; camera errors, stalls and the end of a file reach the consumer.

Every camera fills a caller's buffer when given one (``read(out)``), so the grab thread cycles
three images and a running loop allocates no frame memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from poseloop.config import validate
from poseloop.errors import CameraError
from poseloop.realtime.camera_config import (
    BaslerConfig,
    CameraConfig,
    OpenCVConfig,
    SyntheticConfig,
)
from poseloop.realtime.types import Camera, Frame
from poseloop.synthetic import SyntheticScene

log = logging.getLogger(__name__)

_BACKENDS = {
    "any": cv2.CAP_ANY,
    "v4l2": cv2.CAP_V4L2,
    "dshow": cv2.CAP_DSHOW,
    "msmf": cv2.CAP_MSMF,
    "avfoundation": cv2.CAP_AVFOUNDATION,
    "gstreamer": cv2.CAP_GSTREAMER,
    "ffmpeg": cv2.CAP_FFMPEG,
}


def _buffer(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """``out`` if it can hold a ``shape`` uint8 image, else a new one."""
    if out is not None and out.shape == shape and out.dtype == np.uint8 \
            and out.flags.c_contiguous:
        return out
    return np.empty(shape, np.uint8)


class Pacer:
    """Releases frame i at t0 + i / fps, like a free-running camera.

    If the reader falls more than a frame behind it is rebased instead of bursting old
    frames (a camera does not queue up the frames it could not deliver).
    """

    def __init__(self, fps: float) -> None:
        self.period_ns = round(1e9 / fps)
        self._due: int | None = None

    def wait(self) -> None:
        now = time.perf_counter_ns()
        if self._due is None or now - self._due > self.period_ns:
            self._due = now
        elif now < self._due:
            time.sleep((self._due - now) / 1e9)
        self._due += self.period_ns


class OpenCVCamera:
    """A camera by device index, or a video file / stream URL, through ``cv2.VideoCapture``.

    After :meth:`open`, ``width``, ``height``, ``fps`` (and ``exposure`` for devices) are what
    the source actually gives (a device may ignore a request; a mismatch is logged). Files
    end with ``read() -> None``; a device that stops delivering raises CameraError.
    ``t_device_ns`` is the backend's frame time (``CAP_PROP_POS_MSEC``): the media time for
    files, the driver's buffer time for devices where it reports one.
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
        self.is_file = not isinstance(source, int) and "://" not in self.source
        self.width = self.height = 0
        self.fps = 0.0
        self.exposure: float | None = None
        self.frame_count: int | None = None
        self._cap: cv2.VideoCapture | None = None
        self._pacer: Pacer | None = None
        self._index = 0

    def __repr__(self) -> str:
        return f"OpenCVCamera({self.source!r})"

    def open(self) -> None:
        """Open the source; CameraError naming the path or index if it cannot be read."""
        if self.is_file and not Path(self.source).is_file():
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
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS))
        if self.is_file:
            self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if self.paced:
            rate = self.requested["fps"] or self.fps
            if not rate or rate <= 0:
                cap.release()
                raise CameraError(f"{self!r}: no frame rate in the file; set fps to pace it")
            self._pacer = Pacer(rate)
        self._cap = cap
        self._index = 0

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
        ok, image = cap.retrieve(_buffer(out, (self.height, self.width, 3)))
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

    def __repr__(self) -> str:
        return f"SyntheticCamera({self.width}x{self.height} @ {self.fps:g} fps)"

    def open(self) -> None:
        self._index = 0
        self._pacer = Pacer(self.fps) if self.paced else None

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        """Render the next frame into ``out`` (when it fits); None after ``frames`` frames."""
        if self.frames is not None and self._index >= self.frames:
            return None
        if self._pacer is not None:
            self._pacer.wait()
        t = self.start_s + self._index / self.fps
        image = _buffer(out, (self.height, self.width, 3))
        truth = self.scene.render_into(t, image)
        frame = Frame(image, self._index, time.perf_counter_ns(), round(t * 1e9), truth)
        self._index += 1
        return frame

    def close(self) -> None:
        self._pacer = None


# pylon pixel formats we can turn into BGR, and how (None = already BGR).
_PYLON_FORMATS: dict[str, int | None] = {
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


class BaslerCamera:
    """A Basler camera through pypylon; frames are BGR, timestamps from the camera clock.

    Width, height, frame rate and exposure (µs) are set where the camera has those features
    (SFNC 2 names, or the older ``...Abs`` GigE names); ``width``, ``height``, ``fps`` and
    ``exposure_us`` then hold what the camera reports. The camera delivers BGR8 if it can,
    otherwise Mono8, RGB8 or 8-bit Bayer converted to BGR. Incomplete grabs are skipped and
    counted in ``failed``.
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
        self.width = self.height = 0
        self.fps: float | None = None
        self.exposure_us: float | None = None
        self.pixel_format = ""
        self.failed = 0
        self._cam: Any = None
        self._pylon: Any = None
        self._convert: int | None = None
        self._tick_hz = 1_000_000_000
        self._index = 0

    def __repr__(self) -> str:
        return f"BaslerCamera({self.serial or 'first'})"

    def open(self) -> None:
        """Find, configure and start the camera; CameraError naming what is missing."""
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
        cam = pylon.InstantCamera(factory.CreateDevice(chosen[0]))
        try:
            cam.Open()
            self._configure(cam, genicam.GenericException)
            cam.StartGrabbing(pylon.GrabStrategy_OneByOne)
        except genicam.GenericException as e:
            if cam.IsOpen():
                cam.Close()
            raise CameraError(f"{self!r}: cannot configure or start: {e}") from e
        self.serial = chosen[0].GetSerialNumber()
        self._cam, self._pylon = cam, pylon
        self._index = 0

    def _configure(self, cam: Any, node_error: type[Exception]) -> None:
        formats = list(cam.PixelFormat.Symbolics)
        preferred = [f for f in _PYLON_FORMATS if f in formats]
        if not preferred:
            raise CameraError(
                f"{self!r}: none of its pixel formats {formats} is supported; "
                f"supported: {list(_PYLON_FORMATS)}"
            )
        cam.PixelFormat.Value = preferred[0]
        self.pixel_format = preferred[0]
        self._convert = _PYLON_FORMATS[preferred[0]]
        w, h = self.requested["width"], self.requested["height"]
        if w is not None:
            cam.Width.Value = w
        if h is not None:
            cam.Height.Value = h
        self.width, self.height = int(cam.Width.Value), int(cam.Height.Value)
        if self.requested["fps"] is not None:
            _set_first(cam, ("AcquisitionFrameRateEnable",), True, node_error)
        self.fps = _set_first(
            cam, ("AcquisitionFrameRate", "AcquisitionFrameRateAbs"), self.requested["fps"],
            node_error,
        )
        self.exposure_us = _set_first(
            cam, ("ExposureTime", "ExposureTimeAbs"), self.requested["exposure_us"], node_error
        )
        tick = _set_first(cam, ("GevTimestampTickFrequency",), None, node_error)
        self._tick_hz = int(tick) if tick else 1_000_000_000
        for name, value in (("fps", self.fps), ("exposure_us", self.exposure_us)):
            want = self.requested[name]
            if want is not None and (value is None or abs(value - want) > 1e-3 * want):
                log.warning("%r: requested %s=%s, the camera gives %s", self, name, want, value)

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
        image = _buffer(out, (raw.shape[0], raw.shape[1], 3))
        if self._convert is None:
            np.copyto(image, raw)
        else:
            cv2.cvtColor(raw, self._convert, dst=image)
        t_device = int(result.TimeStamp) * 1_000_000_000 // self._tick_hz
        frame = Frame(image, self._index, t_capture, t_device)
        self._index += 1
        return frame

    def close(self) -> None:
        """Stop acquisition and release the camera (leaves it idle)."""
        if self._cam is not None:
            self._cam.StopGrabbing()
            self._cam.Close()
            self._cam = None


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


class GrabThread:
    """Reads a camera in a thread and hands the newest frame to one consumer.

    A single slot holds the newest unconsumed frame; a new frame replaces it and the old one
    counts in ``dropped`` (it was never processed). :meth:`get` waits for a frame newer than
    the last one returned, returns None once the camera has ended, and raises CameraError
    when the camera failed or delivered nothing for the timeout. Images cycle through three
    buffers: a frame returned by :meth:`get` is valid until the next :meth:`get` (copy what
    must live longer).
    """

    def __init__(self, camera: Camera, timeout_s: float = 2.0) -> None:
        if not isinstance(camera, Camera):
            raise TypeError(f"{camera!r} is not a Camera (needs open, read, close)")
        self.camera = camera
        self.timeout_s = timeout_s
        self.grabbed = 0
        self.dropped = 0
        self.delivered = 0
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._held: Frame | None = None
        self._free: list[np.ndarray] = []
        self._last_index: int | None = None
        self._ended = False
        self._error: CameraError | None = None
        self._stopping = False
        self._interrupted = False
        self._thread = threading.Thread(target=self._run, name=f"grab {camera!r}", daemon=True)

    def start(self) -> GrabThread:
        """Open the camera (errors raise here) and start grabbing."""
        self.camera.open()
        self._thread.start()
        return self

    def __enter__(self) -> GrabThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                    buffer = self._free.pop() if self._free else None
                frame = self.camera.read(buffer)
                with self._cond:
                    if frame is None:
                        self._ended = True
                    else:
                        if self._slot is not None:
                            self.dropped += 1
                            self._free.append(self._slot.image)
                        self._slot = frame
                        self.grabbed += 1
                    self._cond.notify_all()
                if frame is None:
                    return
        except Exception as e:  # the thread must hand every failure to the consumer
            error = e if isinstance(e, CameraError) else CameraError(
                f"{self.camera!r}: {type(e).__name__}: {e}"
            )
            with self._cond:
                self._error = error
                self._cond.notify_all()

    def interrupt(self) -> None:
        """Make :meth:`get` return None from now on, at once (safe from a signal handler)."""
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet returned; None at the end of the stream or once
        :meth:`interrupt` was called.

        Raises CameraError if the camera failed, or if no new frame came for ``timeout``
        seconds (default: the thread's ``timeout_s``).
        """
        timeout = self.timeout_s if timeout is None else timeout
        with self._cond:
            if self._held is not None:
                self._free.append(self._held.image)
                self._held = None
            deadline = time.monotonic() + timeout
            while self._slot is None or self._interrupted:
                if self._interrupted:
                    return None
                if self._error is not None:
                    raise self._error
                if self._ended:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraError(
                        f"{self.camera!r}: no frame for {timeout:g} s after frame "
                        f"{self._last_index} (camera stalled or disconnected?)"
                    )
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self._held = frame
            self._last_index = frame.index
            self.delivered += 1
            return frame

    def stop(self, timeout: float | None = None) -> None:
        """Stop grabbing and close the camera.

        A camera stuck inside ``read`` cannot be closed safely from here: it is left open
        (logged) and its daemon thread ends with the process.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(self.timeout_s if timeout is None else timeout)
        if self._thread.is_alive():
            log.warning("%r did not return from read(); left it open", self.camera)
            return
        self.camera.close()


def make_camera(config: CameraConfig | OpenCVConfig | SyntheticConfig | BaslerConfig
                | Mapping[str, Any], source: str = "camera") -> Camera:
    """The camera a config describes (a mapping is validated first; ConfigError names the field).

    ``source`` names where the mapping came from, for error messages.
    """
    if isinstance(config, Mapping):
        config = validate(CameraConfig, dict(config), source)
    if isinstance(config, CameraConfig):
        config = config.root
    options = config.model_dump(exclude={"kind"})
    if isinstance(config, OpenCVConfig):
        return OpenCVCamera(**options)
    if isinstance(config, SyntheticConfig):
        return SyntheticCamera(**options)
    return BaslerCamera(**options)
