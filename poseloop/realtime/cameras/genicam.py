"""Camera kind ``genicam``: any GenICam camera through harvesters and its maker's GenTL producer.

A GenTL producer (a ``.cti`` file) is the driver that a camera maker's SDK installs: FLIR /
Teledyne Spinnaker, Basler pylon, Allied Vision Vimba X, IDS peak, ... harvesters (an
optional dependency: ``pip install 'poseloop[genicam]'``) loads it and speaks GenICam's
standard feature names (SFNC) to the camera. The EMVA's ``genicam`` package, which
harvesters installs, ships a simulated producer (``viky.cti``) that the tests use.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
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

#: Where GenTL says its producers are: folders separated by os.pathsep.
GENTL_PATH_VAR = "GENICAM_GENTL64_PATH" if sys.maxsize > 2**32 else "GENICAM_GENTL32_PATH"

PixelFormat = Literal["BGR8", "BGR8Packed", "RGB8", "RGB8Packed", "BGRa8", "RGBa8",
                      "BayerRG8", "BayerGR8", "BayerGB8", "BayerBG8", "Mono8"]

#: The GenICam (PFNC) pixel formats we turn into BGR (``PixelFormat``'s), in order of
#: preference: bytes per pixel and the OpenCV conversion (None = already BGR). The
#: ``...Packed`` names are GigE Vision 1's.
GENICAM_FORMATS: dict[str, tuple[int, int | None]] = {
    "BGR8": (3, None),
    "BGR8Packed": (3, None),
    "RGB8": (3, cv2.COLOR_RGB2BGR),
    "RGB8Packed": (3, cv2.COLOR_RGB2BGR),
    "BGRa8": (4, cv2.COLOR_BGRA2BGR),
    "RGBa8": (4, cv2.COLOR_RGBA2BGR),
    "BayerRG8": (1, cv2.COLOR_BayerRGGB2BGR),
    "BayerGR8": (1, cv2.COLOR_BayerGRBG2BGR),
    "BayerGB8": (1, cv2.COLOR_BayerGBRG2BGR),
    "BayerBG8": (1, cv2.COLOR_BayerBGGR2BGR),
    "Mono8": (1, cv2.COLOR_GRAY2BGR),
}

_EDGES = {"rising": "RisingEdge", "falling": "FallingEdge"}


class GenICamConfig(Strict):
    """A GenICam camera through harvesters and a GenTL producer (.cti) from its maker's SDK."""

    kind: Literal["genicam"] = "genicam"
    cti: str | list[str] | None = Field(
        default=None, description="GenTL producer .cti file(s), or folders holding them; "
        f"None = the folders listed in {GENTL_PATH_VAR} (set by the camera SDK's installer)"
    )
    serial: str | None = Field(default=None, description="serial number; None = any")
    model: str | None = Field(default=None, description="model name; None = any")
    index: int = Field(
        default=0, ge=0, description="which of the cameras matching serial and model, in the "
        "producers' order"
    )
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    offset_x: int | None = Field(default=None, ge=0, description="region of interest's left")
    offset_y: int | None = Field(default=None, ge=0, description="region of interest's top")
    fps: float | None = Field(
        default=None, gt=0, description="free-running: the frame rate set on the camera; "
        "trigger: line: the trigger's rate as wired (reported, not set)"
    )
    exposure_us: float | None = Field(
        default=None, gt=0, description="exposure time in microseconds (auto exposure off)"
    )
    gain: float | None = Field(default=None, description="gain in dB (auto gain off)")
    pixel_format: PixelFormat | None = Field(
        default=None, description="what the camera sends (converted to BGR); None = the "
        "first of BGR8, RGB8, BGRa8, RGBa8, Bayer 8-bit, Mono8 it offers"
    )
    trigger: Literal["none", "line"] = Field(
        default="none", description="none: free-running; line: one frame per edge on "
        "trigger_line (a shared hardware trigger for a camera group)"
    )
    trigger_line: str = Field(default="Line1", description="the trigger input (Line0, Line1, ...)")
    trigger_activation: Literal["rising", "falling"] = Field(
        default="rising", description="the trigger edge that starts an exposure"
    )
    timeout_s: float = Field(default=1.0, gt=0, description="longest wait for one frame")


def _harvesters() -> tuple[Any, Any, Any]:
    """harvesters.core, genicam.gentl and genicam.genapi, or a CameraError saying how to get
    them."""
    try:
        from genicam import genapi, gentl
        from harvesters import core
    except ImportError as e:
        raise CameraError(
            "GenICam cameras need harvesters: `pip install 'poseloop[genicam]'`"
        ) from e
    return core, gentl, genapi


def producer_files(cti: str | Sequence[str] | None) -> list[str]:
    """The GenTL producer files to load: ``cti`` (files, or folders holding ``.cti`` files),
    else every ``.cti`` in the folders of GENICAM_GENTL64_PATH, as GenTL specifies.

    CameraError saying where none was found (the config field or the environment variable).
    """
    if cti is None:
        listed = os.environ.get(GENTL_PATH_VAR, "")
        paths = [p for p in listed.split(os.pathsep) if p]
        where = f"{GENTL_PATH_VAR}={listed!r}" if listed else f"{GENTL_PATH_VAR} is not set"
    else:
        paths = [cti] if isinstance(cti, str) else list(cti)
        where = f"the camera's field 'cti' is {cti!r}"
    files: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(str(f) for f in path.glob("*.cti"))
        elif path.is_file():
            files.append(str(path))
    if not files:
        raise CameraError(
            f"no GenTL producer (.cti) found: {where}; install your camera's SDK (FLIR "
            f"Spinnaker, Basler pylon, Allied Vision Vimba X, IDS peak) and set the camera's "
            f"'cti' to its producer file, or {GENTL_PATH_VAR} to its folder"
        )
    return files


class _Producers:
    """The process's one Harvester, shared by every open GenICam camera.

    A producer's system opens once per process (a second Harvester sees no camera), and
    ``Harvester.update()`` destroys every camera it had opened: the first camera to open
    loads the producers, the others use them, the last to close releases them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._harvester: Any = None
        self._users = 0

    def acquire(self, files: list[str], core: Any) -> Any:
        """The Harvester with ``files`` loaded; CameraError if others are open on other ones."""
        with self._lock:
            if self._users == 0:
                harvester = core.Harvester()
                for file in files:
                    harvester.add_file(file)
                harvester.update()
                self._harvester = harvester
            elif not set(files) <= set(self._harvester.files):
                raise CameraError(
                    f"GenTL producers {files} asked for while GenICam cameras are open through "
                    f"{self._harvester.files}: give every GenICam camera the same 'cti'"
                )
            self._users += 1
            return self._harvester

    def release(self) -> None:
        """One camera fewer; the last one's close releases the producers."""
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._harvester.reset()
                self._harvester = None


_PRODUCERS = _Producers()


@camera_kind("genicam", GenICamConfig)
class GenICamCamera:
    """A GenICam camera through harvesters; frames are BGR, numbered by the camera.

    Every requested setting goes to its standard (SFNC) feature — ``Width``, ``OffsetX``,
    ``AcquisitionFrameRate``, ``ExposureTime``, ``Gain``, ``PixelFormat``, ``TriggerMode`` /
    ``TriggerSource`` / ``TriggerActivation`` for ``FrameStart`` (older GigE ``...Abs`` names
    too); a feature the camera lacks or a value it rejects is a CameraError naming the camera,
    the feature and the value. Unrequested settings stay as the camera has them, except that
    ``trigger: none`` turns the frame trigger off and a new width or height starts at offset
    0 unless ``offset_x`` / ``offset_y`` say otherwise.

    ``Frame.index`` is the producer's frame id (the camera's block id: cameras on one trigger
    number their frames alike, which a camera group matches; on GigE Vision 1 it wraps after
    65535 frames, on every camera alike). ``t_device_ns`` is the buffer's timestamp (ticks of
    the device's timestamp frequency where the producer gives no ns); None without a clock.
    """

    def __init__(
        self,
        cti: str | Sequence[str] | None = None,
        serial: str | None = None,
        model: str | None = None,
        index: int = 0,
        width: int | None = None,
        height: int | None = None,
        offset_x: int | None = None,
        offset_y: int | None = None,
        fps: float | None = None,
        exposure_us: float | None = None,
        gain: float | None = None,
        pixel_format: PixelFormat | None = None,
        trigger: Literal["none", "line"] = "none",
        trigger_line: str = "Line1",
        trigger_activation: Literal["rising", "falling"] = "rising",
        timeout_s: float = 1.0,
    ) -> None:
        self.cti = cti
        self.serial, self.model, self.index = serial, model, index
        self.requested: dict[str, Any] = {
            "width": width, "height": height, "offset_x": offset_x, "offset_y": offset_y,
            "fps": fps, "exposure_us": exposure_us, "gain": gain,
        }
        self.pixel_format: PixelFormat | None = pixel_format
        self.trigger, self.trigger_line = trigger, trigger_line
        self.trigger_activation = trigger_activation
        self.timeout_s = timeout_s
        self.exposure_us: float | None = None
        self.gain: float | None = None
        chosen = [f"serial {serial}" if serial else "", f"model {model}" if model else "",
                  f"#{index}" if index else ""]
        self._name = " ".join(c for c in chosen if c) or "first"  # the device's once open
        self._ia: Any = None
        self._gentl: Any = None
        self._channels, self._convert = 3, None
        self._tick_hz = 1_000_000_000
        self._clock: Literal["ns", "ticks"] | None = "ns"
        self._count = 0

    @classmethod
    def from_config(cls, config: GenICamConfig) -> GenICamCamera:
        return cls(config.cti, config.serial, config.model, config.index, config.width,
                   config.height, config.offset_x, config.offset_y, config.fps,
                   config.exposure_us, config.gain, config.pixel_format, config.trigger,
                   config.trigger_line, config.trigger_activation, config.timeout_s)

    def __repr__(self) -> str:
        return f"GenICamCamera({self._name})"

    def open(self) -> CameraInfo:
        """Load the producers, find, configure and start the camera; CameraError naming what
        is missing or rejected.

        ``pixel_format`` is the GenICam format the camera sends; fps is the rate the camera
        says it runs at (free-running), or the configured trigger rate (0.0 if unknown).
        """
        self.close()
        core, gentl, genapi = _harvesters()
        files = producer_files(self.cti)
        harvester = _PRODUCERS.acquire(files, core)
        try:
            ia = self._create(harvester, gentl)
            try:
                info = self._configure(ia.remote_device.node_map, genapi)
                try:
                    self._tick_hz = int(ia.device.module.timestamp_frequency)
                except gentl.GenericException:
                    pass  # the producer does not say: the GigE feature, or SFNC's ns
                ia.start()
            except BaseException:
                ia.destroy()
                raise
        except (gentl.GenericException, genapi.GenericException) as e:
            _PRODUCERS.release()
            raise CameraError(f"{self!r}: cannot configure or start: {e}") from e
        except BaseException:
            _PRODUCERS.release()
            raise
        self._ia, self._gentl = ia, gentl
        self._clock, self._count = "ns", 0
        return info

    def _create(self, harvester: Any, gentl: Any) -> Any:
        """The image acquirer of the chosen camera; CameraError listing the cameras present."""
        devices = harvester.device_info_list
        chosen = [d for d in devices if self.serial in (None, d.serial_number)
                  and self.model in (None, d.model)]
        if len(chosen) <= self.index:
            present = [f"{d.model}, serial {d.serial_number}" for d in devices]
            raise CameraError(
                f"GenICam camera {self._name} not found through {harvester.files}; cameras "
                f"present: {present or 'none'}"
            )
        device = chosen[self.index]
        self._name = f"{device.model}, serial {device.serial_number}"
        try:
            return harvester.create(device)
        except gentl.GenericException as e:
            raise CameraError(
                f"{self!r}: cannot open (in use by another camera or program?): {e}"
            ) from e

    def _configure(self, node_map: Any, genapi: Any) -> CameraInfo:
        """Set the requested features on ``node_map`` (a GenApi node map) and report what the
        camera then delivers."""
        features = _Features(node_map, repr(self), genapi)
        offered = features.symbolics("PixelFormat")
        wanted = [self.pixel_format] if self.pixel_format else list(GENICAM_FORMATS)
        usable = [f for f in wanted if f in offered]  # in order of preference
        if not usable:
            raise CameraError(
                f"{self!r}: pixel format {' / '.join(wanted)} not offered; the camera has "
                f"{offered or 'no PixelFormat feature'}"
            )
        features.set("PixelFormat", usable[0])
        self._channels, self._convert = GENICAM_FORMATS[usable[0]]
        want = self.requested
        for axis, size in (("X", "width"), ("Y", "height")):
            offset = want[f"offset_{axis.lower()}"]
            if want[size] is not None or offset is not None:
                features.set(f"Offset{axis}", 0, optional=True)  # room for the size
            if want[size] is not None:
                features.set(size.capitalize(), want[size])
            if offset is not None:
                features.set(f"Offset{axis}", offset)
        features.set("AcquisitionMode", "Continuous", optional=True)
        if self.trigger == "line":
            features.set("TriggerSelector", "FrameStart", optional=True)
            features.set("TriggerMode", "On")
            features.set("TriggerSource", self.trigger_line)
            features.set("TriggerActivation", _EDGES[self.trigger_activation])
            features.set("LineSelector", self.trigger_line, optional=True)
            features.set("LineMode", "Input", optional=True)
            features.set("AcquisitionFrameRateEnable", False, optional=True)  # every trigger
        else:
            if "FrameStart" in features.symbolics("TriggerSelector"):
                features.set("TriggerSelector", "FrameStart")
            features.set("TriggerMode", "Off", optional=True)
            if want["fps"] is not None:
                features.set("AcquisitionFrameRateEnable", True, optional=True)
                features.set(("AcquisitionFrameRate", "AcquisitionFrameRateAbs"), want["fps"])
        if want["exposure_us"] is not None:
            features.set("ExposureAuto", "Off", optional=True)
            features.set(("ExposureTime", "ExposureTimeAbs"), want["exposure_us"])
        if want["gain"] is not None:
            features.set("GainAuto", "Off", optional=True)
            features.set(("Gain", "GainAbs"), want["gain"])
        self.exposure_us = features.get("ExposureTime", "ExposureTimeAbs")
        self.gain = features.get("Gain", "GainAbs")
        self._tick_hz = int(features.get("GevTimestampTickFrequency") or 1_000_000_000)
        if self.trigger == "line":
            fps = want["fps"]
        else:
            fps = features.get("ResultingFrameRate", "AcquisitionResultingFrameRate",
                               "ResultingFrameRateAbs", "AcquisitionFrameRate",
                               "AcquisitionFrameRateAbs")
        return CameraInfo(int(node_map.Width.value), int(node_map.Height.value),
                          float(fps or 0.0), usable[0])

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        """The next complete frame as BGR in ``out`` (when it fits); CameraError on timeout."""
        ia = self._ia
        if ia is None:
            raise CameraError(f"{self!r} is not open; call open() first")
        try:
            buffer = ia.fetch(timeout=self.timeout_s)
        except self._gentl.TimeoutException:
            raise CameraError(
                f"{self!r}: no frame within {self.timeout_s:g} s after {self._count} frames "
                f"({'trigger not firing, ' if self.trigger == 'line' else ''}cable or "
                "bandwidth?)"
            ) from None
        except self._gentl.GenericException as e:
            raise CameraError(f"{self!r}: acquisition failed after {self._count} frames: {e}"
                              ) from e
        t_capture = time.perf_counter_ns()
        with buffer:  # queued back to the producer on leaving
            return self._frame(buffer, out, t_capture)

    def _frame(self, buffer: Any, out: np.ndarray | None, t_capture: int) -> Frame:
        """The buffer's image converted straight into ``out``, with the camera's number and
        time."""
        component = buffer.payload.components[0]
        h, w, c = int(component.height), int(component.width), self._channels
        # the buffer's bytes as rows (any line padding cut off): a view, nothing copied
        raw = component.data.reshape(h, -1)[:, :w * c].reshape(h, w, c)
        image = image_buffer(out, (h, w, 3))
        if self._convert is None:
            np.copyto(image, raw)
        else:
            cv2.cvtColor(raw, self._convert, dst=image)
        self._count += 1
        module = buffer.module
        try:
            index = int(module.frame_id)
        except self._gentl.GenericException:  # a producer without frame ids: our count
            index = self._count - 1
        return Frame(image, index, t_capture, self._device_time(module))

    def _device_time(self, module: Any) -> int | None:
        """The buffer's timestamp in ns: the producer's ns value, else the device's ticks at
        its tick frequency; None without a clock (no timestamp, or 0). Which one the producer
        gives is learnt on the first frame."""
        if self._clock == "ns":
            try:
                return int(module.timestamp_ns) or None
            except self._gentl.GenericException:
                self._clock = "ticks"
        if self._clock == "ticks":
            try:
                ticks = int(module.timestamp)
            except self._gentl.GenericException:
                self._clock = None
                return None
            return ticks * 1_000_000_000 // self._tick_hz if ticks else None
        return None

    def close(self) -> None:
        """Stop acquisition and release the camera (and the producers, if it was the last)."""
        if self._ia is not None:
            ia, self._ia = self._ia, None
            try:
                ia.stop()
                ia.destroy()
            finally:
                _PRODUCERS.release()


class _Features:
    """A camera's GenICam features by name: set and read back, errors naming the camera."""

    def __init__(self, node_map: Any, who: str, genapi: Any) -> None:
        self.node_map, self.who, self.genapi = node_map, who, genapi

    def _node(self, name: str) -> Any:
        """The feature's node, None where the camera lacks it (or it is not available now)."""
        node = getattr(self.node_map, name, None)
        return node if node is not None and self.genapi.is_available(node) else None

    def symbolics(self, name: str) -> list[str]:
        """The values an enumeration feature offers; [] where the camera lacks it."""
        node = self._node(name)
        return list(node.symbolics) if node is not None else []

    def get(self, *names: str) -> Any:
        """The value of the first of ``names`` the camera has; None if it has none."""
        for name in names:
            node = self._node(name)
            if node is not None:
                try:
                    return node.value
                except self.genapi.GenericException:
                    continue
        return None

    def set(self, names: str | tuple[str, ...], value: Any, optional: bool = False) -> Any:
        """Set the first of ``names`` the camera has (names differ between camera generations)
        to ``value``, written only if it differs, and read it back.

        CameraError naming the camera, the feature and the value when the camera rejects it,
        or lacks the feature (unless ``optional``: then None).
        """
        names = (names,) if isinstance(names, str) else names
        for name in names:
            node = self._node(name)
            if node is None:
                continue
            try:
                if node.value != value:
                    node.value = value
                actual = node.value
            except self.genapi.GenericException as e:
                choices = getattr(node, "symbolics", None)
                has = f" (the camera has: {', '.join(choices)})" if choices else ""
                raise CameraError(f"{self.who}: cannot set {name} = {value!r}: {e}{has}") from e
            if isinstance(value, float) and abs(actual - value) > 1e-3 * abs(value):
                log.warning("%s: %s = %s requested, the camera took %s", self.who, name, value,
                            actual)
            return actual
        if optional:
            return None
        raise CameraError(
            f"{self.who}: cannot set {' / '.join(names)} = {value!r}: the camera has no such "
            "feature"
        )

