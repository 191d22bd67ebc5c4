"""The ``genicam`` camera kind (harvesters + a GenTL producer), tested on a real producer.

The EMVA's ``genicam`` package (``pip install harvesters``, or ``pip install
'poseloop[genicam]'``, brings it) ships ``viky.cti``, a simulated GenTL producer with three
cameras (model ``Viky``, serials 0, 1, 2; Width/Height, PixelFormat RGBa8 or Mono8,
AcquisitionFrameRate). The camera tests open, configure, grab from and close those cameras
through harvesters as they would a real one; they are skipped where harvesters or the
producer is absent.

What Viky lacks is tested without a device: trigger, exposure, gain and offsets on a real
GenApi node map loaded from a small camera description (a node map without a device), the
Bayer and line-padded conversions and the tick-to-ns timestamps on a stand-in buffer (Viky
sends no Bayer and stamps no time), and config validation and producer discovery on their
own.
"""

from __future__ import annotations

import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import cv2
import numpy as np
import pytest

from poseloop.errors import CameraError, ConfigError
from poseloop.realtime.cameras import CameraConfig, GrabThread, make_camera
from poseloop.realtime.cameras.genicam import (
    _PRODUCERS,
    GENICAM_FORMATS,
    GENTL_PATH_VAR,
    GenICamCamera,
    GenICamConfig,
    PixelFormat,
    producer_files,
)
from poseloop.realtime.types import CameraInfo

# --- config and producer discovery (no device) -----------------------------------------------


def test_config_section_builds_the_camera_and_names_bad_fields() -> None:
    camera = make_camera({"kind": "genicam", "serial": "22334455", "trigger": "line",
                          "trigger_line": "Line3", "trigger_activation": "falling",
                          "pixel_format": "BayerRG8", "timeout_s": 0.5})
    assert isinstance(camera, GenICamCamera) and repr(camera) == "GenICamCamera(serial 22334455)"
    assert (camera.trigger, camera.trigger_line, camera.trigger_activation) == (
        "line", "Line3", "falling")
    assert isinstance(CameraConfig.model_validate({"kind": "genicam"}).root, GenICamConfig)
    for field, value in (("pixel_format", "YUV422"), ("trigger", "software"),
                         ("trigger_activation", "both"), ("index", -1), ("timeout_s", 0)):
        with pytest.raises(ConfigError, match=f"rig.yaml: field '{field}'"):
            make_camera({"kind": "genicam", field: value}, source="rig.yaml")
    assert set(GENICAM_FORMATS) == set(get_args(PixelFormat))


def test_producers_from_the_config_or_gentl_path(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "producers"
    folder.mkdir()
    for name in ("b.cti", "a.cti", "readme.txt"):
        (folder / name).write_bytes(b"")
    found = [str(folder / "a.cti"), str(folder / "b.cti")]
    assert producer_files(str(folder)) == found
    assert producer_files([str(folder / "b.cti")]) == [found[1]]
    monkeypatch.setenv(GENTL_PATH_VAR, f"{tmp_path / 'gone'}:{folder}")
    assert producer_files(None) == found
    with pytest.raises(CameraError, match=rf"no GenTL producer \(.cti\) found: {GENTL_PATH_VAR}="
                                          rf"'{tmp_path}'; install your camera's SDK"):
        monkeypatch.setenv(GENTL_PATH_VAR, str(tmp_path))
        producer_files(None)
    monkeypatch.delenv(GENTL_PATH_VAR)
    with pytest.raises(CameraError, match=f"{GENTL_PATH_VAR} is not set"):
        producer_files(None)
    with pytest.raises(CameraError, match=r"the camera's field 'cti' is '/no/such.cti'"):
        producer_files("/no/such.cti")


def test_without_harvesters_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "harvesters", None)
    with pytest.raises(CameraError, match=r"pip install 'poseloop\[genicam\]'"):
        GenICamCamera(cti="/no/such.cti").open()


# --- frames from a buffer: conversion into the caller's image, number and time ---------------


class _Unavailable(Exception):
    """Stands in for genicam.gentl's errors: what a producer raises for missing buffer info."""


_GENTL = types.SimpleNamespace(GenericException=_Unavailable)


class _BufferModule:
    """The GenTL buffer info a producer may or may not give (None: raises, as when absent)."""

    def __init__(self, frame_id: int | None, ns: int | None = None, ticks: int | None = None
                 ) -> None:
        self._info = {"frame_id": frame_id, "timestamp_ns": ns, "timestamp": ticks}

    def __getattr__(self, name: str) -> int:
        value = self._info[name]
        if value is None:
            raise _Unavailable(name)
        return value


def _buffer(data: np.ndarray, width: int, height: int, module: _BufferModule) -> Any:
    """A stand-in harvesters Buffer: its first component's bytes, size and GenTL info."""
    component = types.SimpleNamespace(width=width, height=height, data=data.reshape(-1))
    return types.SimpleNamespace(payload=types.SimpleNamespace(components=[component]),
                                 module=module)


def _camera(pixel_format: PixelFormat) -> GenICamCamera:
    camera = GenICamCamera(pixel_format=pixel_format)
    camera._channels, camera._convert = GENICAM_FORMATS[pixel_format]
    camera._gentl = _GENTL
    return camera


def _mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """The 8-bit Bayer image a sensor with ``pattern`` (its first 2 x 2 cell, e.g. RGGB)
    records of ``bgr``."""
    raw = np.empty(bgr.shape[:2], np.uint8)
    channel = {"B": 0, "G": 1, "R": 2}
    for i, colour in enumerate(pattern):
        y, x = divmod(i, 2)
        raw[y::2, x::2] = bgr[y::2, x::2, channel[colour]]
    return raw


def test_every_format_converts_into_the_callers_buffer() -> None:
    """Each format of the same scene (flat colour blocks) gives the same BGR image, written
    into the buffer given; line padding in the camera's rows is skipped."""
    bgr = np.zeros((16, 24, 3), np.uint8)
    bgr[:, :12] = (30, 140, 220)
    bgr[:, 12:] = (200, 60, 10)
    sent: dict[PixelFormat, np.ndarray] = {
        "BGR8": bgr, "BGR8Packed": bgr, "RGB8": bgr[..., ::-1], "RGB8Packed": bgr[..., ::-1],
        "BGRa8": cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
        "RGBa8": cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA),
        "BayerRG8": _mosaic(bgr, "RGGB"), "BayerGR8": _mosaic(bgr, "GRBG"),
        "BayerGB8": _mosaic(bgr, "GBRG"), "BayerBG8": _mosaic(bgr, "BGGR"),
    }
    assert set(sent) | {"Mono8"} == set(GENICAM_FORMATS)
    out = np.empty((16, 24, 3), np.uint8)
    for pixel_format, data in sent.items():
        rows = np.ascontiguousarray(data).reshape(16, -1)
        padded = np.concatenate([rows, np.full((16, 8), 99, np.uint8)], axis=1)  # 8 bytes pad
        frame = _camera(pixel_format)._frame(_buffer(padded, 24, 16, _BufferModule(5)), out, 1)
        assert frame.image is out and frame.index == 5, pixel_format
        if pixel_format.startswith("Bayer"):  # demosaicing blurs the edges between blocks
            inner = np.s_[2:-2, list(range(2, 10)) + list(range(14, 22))]
            np.testing.assert_allclose(out[inner], bgr[inner], atol=2, err_msg=pixel_format)
        else:
            np.testing.assert_array_equal(out, bgr, err_msg=pixel_format)
    grey = np.arange(16 * 24, dtype=np.uint16).astype(np.uint8).reshape(16, 24)
    frame = _camera("Mono8")._frame(_buffer(grey, 24, 16, _BufferModule(6)), out, 1)
    assert frame.image is out and all(np.array_equal(out[..., c], grey) for c in range(3))
    frame = _camera("Mono8")._frame(_buffer(grey, 24, 16, _BufferModule(6)), None, 1)
    assert frame.image is not out and frame.image.shape == (16, 24, 3)  # wrong size: its own


def test_device_time_in_ns_from_the_producer_or_the_tick_frequency() -> None:
    """GenTL's ns timestamp where the producer gives one, else ticks at the device's tick
    frequency (a GigE camera's GevTimestampTickFrequency); a camera without a clock: None."""
    grey = np.zeros((2, 4), np.uint8)
    camera = _camera("Mono8")
    frame = camera._frame(_buffer(grey, 4, 2, _BufferModule(1, ns=123_456_789)), None, 0)
    assert frame.t_device_ns == 123_456_789

    camera = _camera("Mono8")
    camera._tick_hz = 125_000_000
    frame = camera._frame(_buffer(grey, 4, 2, _BufferModule(9, ticks=250_000_123)), None, 0)
    assert (frame.index, frame.t_device_ns) == (9, 2_000_000_984)
    assert camera._clock == "ticks"  # learnt once, not tried again on every frame

    camera = _camera("Mono8")
    frames = [camera._frame(_buffer(grey, 4, 2, _BufferModule(None)), None, 0) for _ in "ab"]
    assert [(f.index, f.t_device_ns) for f in frames] == [(0, None), (1, None)]  # own count


# --- trigger, exposure, gain, offsets: a GenApi node map without a device -------------------


def _enum(name: str, entries: str, value: str) -> str:
    items = entries.split()
    xml = "".join(f'<EnumEntry Name="{e}"><Value>{i}</Value></EnumEntry>'
                  for i, e in enumerate(items))
    return f'<Enumeration Name="{name}">{xml}<Value>{items.index(value)}</Value></Enumeration>'


def _number(kind: str, name: str, value: float, low: float, high: float) -> str:
    return f'<{kind} Name="{name}"><Value>{value}</Value><Min>{low}</Min><Max>{high}</Max></{kind}>'


#: A colour GigE camera's features as SFNC names them, every one held in the node map itself.
_CAMERA_XML = "".join([
    '<?xml version="1.0" encoding="utf-8"?>',
    '<RegisterDescription ModelName="Bench" VendorName="Test" StandardNameSpace="None" '
    'SchemaMajorVersion="1" SchemaMinorVersion="1" SchemaSubMinorVersion="0" MajorVersion="1" '
    'MinorVersion="0" SubMinorVersion="0" ProductGuid="11111111-1111-1111-1111-111111111111" '
    'VersionGuid="22222222-2222-2222-2222-222222222222" '
    'xmlns="http://www.genicam.org/GenApi/Version_1_1">',
    '<Category Name="Root"><pFeature>Width</pFeature></Category>',
    '<Integer Name="Width"><Value>1920</Value><Min>16</Min><Max>1920</Max><Inc>16</Inc>'
    '</Integer>',
    _number("Integer", "Height", 1200, 1, 1200),
    _number("Integer", "OffsetX", 0, 0, 1904),
    _number("Integer", "OffsetY", 0, 0, 1199),
    _enum("PixelFormat", "Mono8 BayerRG8 BayerRG12", "Mono8"),
    _enum("AcquisitionMode", "SingleFrame Continuous", "SingleFrame"),
    _enum("TriggerSelector", "AcquisitionStart FrameStart", "AcquisitionStart"),
    _enum("TriggerMode", "Off On", "On"),
    _enum("TriggerSource", "Software Line1 Line2", "Software"),
    _enum("TriggerActivation", "RisingEdge FallingEdge", "RisingEdge"),
    _enum("LineSelector", "Line1 Line2", "Line1"),
    _enum("LineMode", "Input Output", "Output"),
    '<Boolean Name="AcquisitionFrameRateEnable"><Value>1</Value><OnValue>1</OnValue>'
    '<OffValue>0</OffValue></Boolean>',
    _number("Float", "AcquisitionFrameRate", 50.0, 1.0, 500.0),
    _enum("ExposureAuto", "Off Continuous", "Continuous"),
    _number("Float", "ExposureTime", 10000.0, 20.0, 1e6),
    _enum("GainAuto", "Off Continuous", "Continuous"),
    _number("Float", "Gain", 0.0, 0.0, 24.0),
    _number("Integer", "GevTimestampTickFrequency", 125_000_000, 1, 10**10),
    "</RegisterDescription>",
])


@pytest.fixture
def genapi() -> Any:
    return pytest.importorskip("genicam.genapi")


def _node_map(genapi: Any) -> Any:
    node_map = genapi.NodeMap()
    node_map.load_xml_from_string(_CAMERA_XML)
    return node_map


def _values(node_map: Any, *names: str) -> list[Any]:
    return [getattr(node_map, n).value for n in names]


def test_line_trigger_sets_the_frame_start_trigger_on_the_line(genapi: Any) -> None:
    node_map = _node_map(genapi)
    camera = GenICamCamera(serial="bench", width=640, height=480, offset_x=32, offset_y=8,
                           fps=120, exposure_us=2000, gain=6.0, trigger="line",
                           trigger_line="Line2", trigger_activation="falling")
    info = camera._configure(node_map, genapi)
    # the trigger sets the rate: fps is reported as wired, the camera's limit is off
    assert info == CameraInfo(640, 480, 120.0, "BayerRG8")
    assert _values(node_map, "TriggerSelector", "TriggerMode", "TriggerSource",
                   "TriggerActivation", "LineSelector", "LineMode",
                   "AcquisitionFrameRateEnable", "AcquisitionMode") == [
        "FrameStart", "On", "Line2", "FallingEdge", "Line2", "Input", False, "Continuous"]
    assert _values(node_map, "OffsetX", "OffsetY", "ExposureAuto", "ExposureTime", "GainAuto",
                   "Gain") == [32, 8, "Off", 2000.0, "Off", 6.0]
    assert (camera.exposure_us, camera.gain, camera._tick_hz) == (2000.0, 6.0, 125_000_000)


def test_free_running_turns_the_frame_trigger_off_and_sets_the_rate(genapi: Any) -> None:
    node_map = _node_map(genapi)
    camera = GenICamCamera(serial="bench", fps=200, pixel_format="Mono8")
    assert camera._configure(node_map, genapi) == CameraInfo(1920, 1200, 200.0, "Mono8")
    assert _values(node_map, "TriggerSelector", "TriggerMode", "AcquisitionFrameRateEnable",
                   "ExposureAuto", "GainAuto") == ["FrameStart", "Off", True, "Continuous",
                                                   "Continuous"]  # auto stays unless asked


@pytest.mark.parametrize(("settings", "message"), [
    ({"trigger": "line", "trigger_line": "Line9"},
     r"GenICamCamera\(serial bench\): cannot set TriggerSource = 'Line9': .*invalid.* \(the "
     r"camera has: Software, Line1, Line2\)"),
    ({"width": 650}, r"cannot set Width = 650: .*dividable .* by Inc = 16"),
    ({"exposure_us": 5.0}, r"cannot set ExposureTime = 5.0: .*greater than or equal 20"),
    ({"gain": 48.0}, r"cannot set Gain = 48.0: .*24"),
    ({"fps": 1000.0}, r"cannot set AcquisitionFrameRate = 1000.0: .*500"),
    ({"pixel_format": "RGB8"}, r"pixel format RGB8 not offered; the camera has \['Mono8', "
                               r"'BayerRG8', 'BayerRG12'\]"),
])
def test_a_rejected_value_names_the_camera_the_feature_and_the_value(
        genapi: Any, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(CameraError, match=message):
        GenICamCamera(serial="bench", **settings)._configure(_node_map(genapi), genapi)


# --- the simulated producer: real cameras through harvesters ---------------------------------


@pytest.fixture
def viky() -> Iterator[str]:
    """The path of the genicam package's simulated producer; no camera is left open after."""
    pytest.importorskip("harvesters.core")
    genicam = pytest.importorskip("genicam")
    cti = Path(genicam.__file__).parent / "viky.cti"
    if not cti.is_file():
        pytest.skip(f"this genicam package ({genicam.__file__}) has no viky.cti")
    yield str(cti)
    assert _PRODUCERS._users == 0, "a test left a GenICam camera open"


def test_simulated_camera_grabs_into_a_reused_buffer(viky: str) -> None:
    camera = GenICamCamera(cti=viky, serial="1", width=320, height=240, fps=200)
    info = camera.open()
    try:
        # Viky offers RGBa8 and Mono8: the colour one is preferred, converted to BGR
        assert info == CameraInfo(320, 240, 200.0, "RGBa8")
        assert repr(camera) == "GenICamCamera(Viky, serial 1)"
        out = np.empty((240, 320, 3), np.uint8)
        frames = [camera.read(out) for _ in range(5)]
    finally:
        camera.close()
    assert all(f is not None and f.image is out for f in frames)
    # numbered by the camera's frame ids, from 1; Viky stamps no time: no made-up device time
    assert [f.index for f in frames if f] == [1, 2, 3, 4, 5]
    assert np.all(np.diff([f.t_capture_ns for f in frames if f]) > 0)
    assert all(f.t_device_ns is None for f in frames if f)


def test_simulated_camera_in_mono8_gives_grey_bgr_through_the_grab_thread(viky: str) -> None:
    camera = GenICamCamera(cti=viky, width=160, height=120, fps=200, pixel_format="Mono8")
    assert camera.open() == CameraInfo(160, 120, 200.0, "Mono8")
    try:
        grab = GrabThread(camera, timeout_s=2.0).start()
        frames = [grab.get() for _ in range(3)]
        assert grab.stop()
    finally:
        camera.close()
    images = [f.image for f in frames if f]
    assert len(images) == 3 and all(i.shape == (120, 160, 3) for i in images)
    assert all(np.array_equal(i[..., 0], i[..., 1]) and np.array_equal(i[..., 1], i[..., 2])
               for i in images)
    assert images[-1].std() > 0  # the game is drawn, not a blank frame
    assert np.all(np.diff([f.index for f in frames if f]) > 0)


def test_simulated_camera_rejections_name_the_camera_feature_and_value(viky: str) -> None:
    with pytest.raises(CameraError, match=r"GenICamCamera\(Viky, serial 0\): cannot set Width "
                                          r"= 100000: .*Max = 800"):
        GenICamCamera(cti=viky, width=100_000).open()
    with pytest.raises(CameraError, match=r"GenICamCamera\(Viky, serial 2\): cannot set "
                                          r"ExposureTime / ExposureTimeAbs = 500.0: the camera "
                                          r"has no such feature"):
        GenICamCamera(cti=viky, serial="2", exposure_us=500.0).open()
    with pytest.raises(CameraError, match=r"cannot set TriggerMode = 'On': the camera has no "
                                          r"such feature"):
        GenICamCamera(cti=viky, trigger="line").open()
    with pytest.raises(CameraError, match=r"cannot set OffsetX = 16: the camera has no such"):
        GenICamCamera(cti=viky, offset_x=16).open()
    # none of those left the camera or the producer held
    camera = GenICamCamera(cti=viky, width=160, height=120, fps=200)
    assert camera.open().width == 160
    camera.close()


def test_simulated_cameras_are_chosen_by_serial_model_and_index(viky: str) -> None:
    camera = GenICamCamera(cti=viky, model="Viky", index=2, width=160, height=120, fps=200)
    assert repr(camera) == "GenICamCamera(model Viky #2)"
    camera.open()
    camera.close()
    assert repr(camera) == "GenICamCamera(Viky, serial 2)"
    with pytest.raises(CameraError, match=r"GenICam camera serial 7 not found through \[.*viky"
                                          r".cti'\]; cameras present: \['Viky, serial 0', "
                                          r"'Viky, serial 1', 'Viky, serial 2'\]"):
        GenICamCamera(cti=viky, serial="7").open()
    with pytest.raises(CameraError, match="GenICam camera model Viky #3 not found"):
        GenICamCamera(cti=viky, model="Viky", index=3).open()


def test_simulated_cameras_open_together_on_one_producer(viky: str, tmp_path: Path) -> None:
    """A camera group's cameras share the producer: opening one keeps the other running, and
    the last to close releases it; another producer meanwhile is refused."""
    first = GenICamCamera(cti=viky, serial="0", width=160, height=120, fps=200)
    second = GenICamCamera(cti=viky, serial="1", width=160, height=120, fps=200)
    first.open()
    try:
        second.open()
        try:
            assert first.read() is not None and second.read() is not None
            other = tmp_path / "other.cti"
            other.write_bytes(b"")
            with pytest.raises(CameraError, match=r"give every GenICam camera the same 'cti'"):
                GenICamCamera(cti=str(other), serial="2").open()
            with pytest.raises(CameraError, match=r"cannot open \(in use"):
                GenICamCamera(cti=viky, serial="0").open()
        finally:
            second.close()
        assert first.read() is not None  # the producer stays loaded for the first
    finally:
        first.close()


def test_simulated_camera_close_read_reopen_and_timeout(viky: str) -> None:
    camera = GenICamCamera(cti=viky, width=160, height=120, fps=200, timeout_s=0.2)
    camera.open()
    camera.read()
    camera.close()
    camera.close()  # twice is harmless
    with pytest.raises(CameraError, match=r"GenICamCamera\(Viky, serial 0\) is not open"):
        camera.read()
    camera.open()  # again, from the camera's frame 1
    frame = camera.read()
    camera.close()
    assert frame is not None and frame.index == 1
    slow = GenICamCamera(cti=viky, width=160, height=120, fps=1.0, timeout_s=0.2)
    slow.open()  # Viky sends its first frame one period after the start
    try:
        with pytest.raises(CameraError, match=r"no frame within 0.2 s after 0 frames"):
            slow.read()
    finally:
        slow.close()


def test_simulated_producer_found_through_the_gentl_path(viky: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GENTL_PATH_VAR, str(tmp_path))
    with pytest.raises(CameraError, match=f"no GenTL producer .* {GENTL_PATH_VAR}="):
        GenICamCamera().open()
    shutil.copy(viky, tmp_path / "viky.cti")
    camera = make_camera({"kind": "genicam", "width": 160, "height": 120, "fps": 200})
    assert camera.open().width == 160
    camera.close()
