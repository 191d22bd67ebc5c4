"""Cameras (OpenCV file/device, synthetic, Basler emulation), GrabThread, the camera-kind
registry and make_camera."""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pytest
from pydantic import Field

from poseloop.config import Strict, validate
from poseloop.errors import CameraError, ConfigError
from poseloop.realtime.cameras import (
    CAMERAS,
    BaslerCamera,
    CameraConfig,
    GrabThread,
    OpenCVCamera,
    SyntheticCamera,
    SyntheticConfig,
    camera_kind,
    make_camera,
)
from poseloop.realtime.cameras import basler as basler_module
from poseloop.realtime.types import Camera, CameraInfo, Frame
from poseloop.synthetic import SyntheticScene

# pypylon's SWIG bindings warn once, when first imported
pytestmark = pytest.mark.filterwarnings(
    "ignore:builtin type .* has no __module__:DeprecationWarning"
)


def write_video(path: Path, size: tuple[int, int], fps: float, frames: int) -> Path:
    """An mp4v file; frame i is dark with 20x20 cell i (8 cells a row) bright."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        image = np.full((size[1], size[0], 3), 30, np.uint8)
        row, col = divmod(i, 8)
        image[20 * row:20 * row + 20, 20 * col:20 * col + 20] = 220
        writer.write(image)
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-frame 160x120 file at 60 fps."""
    return write_video(tmp_path_factory.mktemp("video") / "cells.mp4", (160, 120), 60.0, 40)


def bright_cell(image: np.ndarray) -> int:
    """Which 20x20 cell of the test video is lit."""
    cells = image[..., 0].reshape(6, 20, 8, 20).mean(axis=(1, 3))
    return int(np.argmax(cells))


def read_all(camera: Camera) -> list[Frame]:
    camera.open()
    frames = []
    try:
        while (frame := camera.read()) is not None:
            frames.append(frame)
    finally:
        camera.close()
    return frames


def test_video_file_frames_indices_and_timestamps(video: Path) -> None:
    camera = OpenCVCamera(video)
    assert camera.open() == CameraInfo(160, 120, 60.0, "BGR8")
    camera.close()
    frames = read_all(camera)
    assert camera.frame_count == len(frames) == 40
    assert [f.index for f in frames] == list(range(40))
    assert all(f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in frames)
    assert np.all(np.diff([f.t_capture_ns for f in frames]) > 0)
    assert np.allclose(np.diff(np.array([f.t_device_ns for f in frames], float)), 1e9 / 60,
                       rtol=1e-3)
    assert [bright_cell(f.image) for f in frames] == list(range(40))


def test_video_file_reports_its_size_and_rate_at_open(tmp_path: Path) -> None:
    """The issue's bug: size and rate must be known from open(), not from defaults."""
    path = write_video(tmp_path / "qvga.mp4", (320, 240), 60.0, 5)
    camera = OpenCVCamera(path)
    info = camera.open()
    try:
        assert info == CameraInfo(320, 240, 60.0, "BGR8")
        frame = camera.read()
        assert frame is not None and frame.image.shape == (240, 320, 3)
    finally:
        camera.close()
    assert make_camera({"kind": "opencv", "source": str(path)}).open() == info


def test_video_read_fills_the_given_buffer(video: Path) -> None:
    camera = OpenCVCamera(video)
    camera.open()
    buffer = np.empty((120, 160, 3), np.uint8)
    frame = camera.read(buffer)
    camera.close()
    assert frame is not None and frame.image is buffer


def test_shared_video_reads_like_a_camera(openfield: Path) -> None:
    camera = OpenCVCamera(openfield / "videos" / "m3v1mp4.mp4")
    info = camera.open()
    frames = [camera.read() for _ in range(20)]
    camera.close()
    assert (info.width, info.height) == (640, 480) and info.fps > 0
    assert camera.frame_count is not None and camera.frame_count > 1000
    assert [f.index for f in frames if f is not None] == list(range(20))
    assert np.all(np.diff([f.t_capture_ns for f in frames if f is not None]) > 0)


def test_paced_playback_takes_n_over_fps(video: Path) -> None:
    start = time.perf_counter()
    frames = read_all(OpenCVCamera(video, paced=True))
    elapsed = time.perf_counter() - start
    assert len(frames) == 40
    assert 39 / 60 * 0.95 < elapsed < 39 / 60 + 0.3
    gaps = np.diff([f.t_capture_ns for f in frames]) / 1e6
    assert np.median(gaps) == pytest.approx(1000 / 60, abs=2)


def test_paced_at_a_given_rate_reports_that_rate(video: Path) -> None:
    camera = OpenCVCamera(video, fps=120, paced=True)
    assert camera.open().fps == 120
    camera.close()


def test_unreadable_video_is_a_camera_error_naming_the_path(tmp_path: Path) -> None:
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(CameraError, match="broken.mp4"):
        OpenCVCamera(garbage).open()
    with pytest.raises(CameraError, match="missing.mp4.*not found"):
        OpenCVCamera(tmp_path / "missing.mp4").open()


def test_missing_device_is_a_camera_error_naming_the_index() -> None:
    with pytest.raises(CameraError, match="camera index 97"):
        OpenCVCamera(97).open()


def test_reading_an_unopened_camera_says_so(video: Path) -> None:
    with pytest.raises(CameraError, match=r"OpenCVCamera\('.*cells.mp4'\) is not open"):
        OpenCVCamera(video).read()


def test_synthetic_frames_match_the_scene() -> None:
    camera = SyntheticCamera(160, 120, fps=25, paced=False, seed=3, frames=6)
    assert camera.open() == CameraInfo(160, 120, 25.0, "BGR8")
    frames = read_all(camera)
    scene = SyntheticScene(160, 120, seed=3)
    assert [f.index for f in frames] == list(range(6))
    for frame in frames:
        image, truth = scene.render(frame.index / 25)
        np.testing.assert_array_equal(frame.image, image)
        np.testing.assert_array_equal(frame.truth, truth)
        assert frame.t_device_ns == round(frame.index / 25 * 1e9)


def test_synthetic_paced_runs_at_fps() -> None:
    start = time.perf_counter()
    frames = read_all(SyntheticCamera(96, 64, fps=100, paced=True, frames=30))
    elapsed = time.perf_counter() - start
    assert len(frames) == 30 and 0.29 * 0.95 < elapsed < 0.29 + 0.25


# --- GrabThread ------------------------------------------------------------------------------

class CountingCamera:
    """Produces `n` frames as fast as possible (optionally blocking after `block_after`)."""

    def __init__(self, n: int, block_after: int | None = None, fail_after: int | None = None):
        self.n, self.block_after, self.fail_after = n, block_after, fail_after
        self.release = threading.Event()
        self.produced = 0
        self.closed = False

    def __repr__(self) -> str:
        return "CountingCamera()"

    def open(self) -> CameraInfo:
        self.produced = 0
        return CameraInfo(8, 8, 1000.0)

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        if self.produced == self.block_after:
            self.release.wait()
            return None
        if self.produced == self.fail_after:
            raise CameraError("CountingCamera: cable pulled")
        if self.produced == self.n:
            return None
        image = out if out is not None else np.empty((8, 8, 3), np.uint8)
        image[...] = self.produced % 256
        frame = Frame(image, self.produced, time.perf_counter_ns())
        self.produced += 1
        return frame

    def close(self) -> None:
        self.closed = True


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_grab_thread_returns_newest_and_counts_drops() -> None:
    camera = CountingCamera(500)
    camera.open()
    with GrabThread(camera, timeout_s=2.0) as grab:
        wait_until(lambda: grab.grabbed == 500)
        frame = grab.get()
        assert frame is not None and frame.index == 499 and frame.image[0, 0, 0] == 499 % 256
        assert grab.dropped == 499
        assert grab.get() is None  # end of stream
    assert not camera.closed  # the camera's owner closes it


def test_grab_thread_slow_consumer_sees_increasing_frames_and_few_buffers() -> None:
    camera = SyntheticCamera(96, 64, paced=False, frames=300)
    camera.open()
    grab = GrabThread(camera).start()
    indices, buffers = [], set()
    while (frame := grab.get()) is not None:
        indices.append(frame.index)
        buffers.add(frame.image.ctypes.data)
        assert frame.image.shape == (64, 96, 3)
        time.sleep(0.003)
    assert grab.stop()
    camera.close()
    assert np.all(np.diff(indices) > 0)
    assert grab.dropped > 0 and grab.delivered == len(indices)
    assert grab.grabbed == 300 == grab.delivered + grab.dropped
    assert len(buffers) <= 3  # the pool cycles three images


def test_grab_thread_video_eof_ends_stream(video: Path) -> None:
    camera = OpenCVCamera(video)
    camera.open()
    with GrabThread(camera) as grab:
        frames = 0
        while grab.get() is not None:
            frames += 1
        assert frames == grab.delivered and frames + grab.dropped == 40
    camera.close()


def test_grab_thread_does_not_open_the_camera(video: Path) -> None:
    grab = GrabThread(OpenCVCamera(video)).start()
    with pytest.raises(CameraError, match="is not open; call open"):
        grab.get()
    assert grab.stop()


def test_stalled_camera_raises_after_timeout() -> None:
    camera = CountingCamera(100, block_after=3)
    camera.open()
    grab = GrabThread(camera, timeout_s=0.2).start()
    wait_until(lambda: grab.grabbed == 3)
    frame = grab.get()
    assert frame is not None and frame.index == 2
    start = time.monotonic()
    with pytest.raises(CameraError, match=r"CountingCamera\(\).*0.2 s after frame 2"):
        grab.get()
    assert 0.18 < time.monotonic() - start < 1.0
    camera.release.set()
    assert grab.stop()
    assert not camera.closed


def test_stop_says_when_the_reader_is_stuck_in_read(caplog: pytest.LogCaptureFixture) -> None:
    camera = CountingCamera(100, block_after=0)
    camera.open()
    grab = GrabThread(camera, timeout_s=0.1).start()
    with caplog.at_level(logging.WARNING):
        start = time.monotonic()
        assert grab.stop() is False  # still inside read(): the camera must stay open
        assert time.monotonic() - start < 1.0
    assert "CountingCamera() did not return from read()" in caplog.text
    camera.release.set()
    assert grab.stop(timeout=2.0)  # read returned: now it may be closed


def test_camera_error_reaches_the_consumer() -> None:
    camera = CountingCamera(100, fail_after=5)
    camera.open()
    grab = GrabThread(camera).start()
    with pytest.raises(CameraError, match="cable pulled"):
        for _ in range(10):
            grab.get()
    assert grab.stop()


# --- registry and make_camera ----------------------------------------------------------------

class ReplayConfig(Strict):
    """A kind defined outside poseloop: replays one grey level `frames` times."""

    kind: Literal["test-replay"] = "test-replay"
    level: int = Field(7, ge=0, le=255)
    frames: int = Field(2, ge=1)


@camera_kind("test-replay", ReplayConfig)
class ReplayCamera:
    def __init__(self, level: int = 7, frames: int = 2) -> None:
        self.level, self.frames, self._index = level, frames, 0

    @classmethod
    def from_config(cls, config: ReplayConfig) -> ReplayCamera:
        return cls(config.level, config.frames)

    def open(self) -> CameraInfo:
        self._index = 0
        return CameraInfo(4, 2, 10.0)

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        if self._index == self.frames:
            return None
        self._index += 1
        return Frame(np.full((2, 4, 3), self.level, np.uint8), self._index - 1, 0)

    def close(self) -> None:
        pass


def test_a_kind_registered_elsewhere_is_built_from_a_mapping() -> None:
    camera = make_camera({"kind": "test-replay", "level": 9, "frames": 3}, source="rig.yaml")
    assert isinstance(camera, ReplayCamera)
    frames = read_all(camera)
    assert len(frames) == 3 and all(f.image[0, 0, 0] == 9 for f in frames)
    assert "test-replay" in CAMERAS.names()
    with pytest.raises(ConfigError, match=r"rig.yaml: field 'level'.*less than or equal"):
        make_camera({"kind": "test-replay", "level": 300}, source="rig.yaml")


def test_a_section_must_default_its_kind_to_the_name() -> None:
    with pytest.raises(ValueError, match="kind: Literal\\['other'\\]"):
        camera_kind("other", ReplayConfig)


def test_unknown_or_missing_kind_names_the_field_and_the_known_kinds() -> None:
    with pytest.raises(ConfigError, match=r"rig.yaml: field 'kind': unknown camera kind 'webcam' "
                                          r"\(known: .*basler.*opencv.*synthetic"):
        make_camera({"kind": "webcam"}, source="rig.yaml")
    with pytest.raises(ConfigError, match=r"field 'kind': no camera kind given \(known: "):
        make_camera({"width": 320}, source="rig.yaml")

    class Rig(Strict):
        camera: CameraConfig = Field(default_factory=lambda: CameraConfig(SyntheticConfig()))

    with pytest.raises(ConfigError, match=r"run.yaml: field 'camera.kind': unknown camera kind "
                                          r"'webcam' \(known: .*opencv"):
        validate(Rig, {"camera": {"kind": "webcam"}}, "run.yaml")
    with pytest.raises(ConfigError, match=r"field 'camera.kind': no camera kind given"):
        validate(Rig, {"camera": {"width": 320}}, "run.yaml")
    with pytest.raises(ConfigError, match=r"field 'camera.width': .*greater than or equal to 64"):
        validate(Rig, {"camera": {"kind": "synthetic", "width": 10}}, "run.yaml")
    rig = validate(Rig, {"camera": {"kind": "opencv", "source": "a.mp4"}}, "run.yaml")
    assert validate(Rig, rig.model_dump()) == rig
    assert isinstance(Rig().camera.root, SyntheticConfig)


def test_make_camera_from_config(video: Path) -> None:
    camera = make_camera({"kind": "synthetic", "width": 96, "height": 64, "frames": 2})
    assert isinstance(camera, SyntheticCamera) and camera.paced
    assert len(read_all(camera)) == 2
    camera = make_camera(CameraConfig.model_validate(
        {"kind": "opencv", "source": str(video), "paced": True}
    ))
    assert isinstance(camera, OpenCVCamera) and camera.is_file and camera.paced
    assert isinstance(make_camera({"kind": "basler", "exposure_us": 500}), BaslerCamera)


def test_make_camera_rejects_unknown_keys_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="rig.yaml: field 'exposure'"):
        make_camera({"kind": "synthetic", "exposure": 3}, source="rig.yaml")
    with pytest.raises(ConfigError, match="rig.yaml: field 'fps'"):
        make_camera({"kind": "opencv", "fps": -1}, source="rig.yaml")


def test_camera_defaults_are_their_config_sections_defaults() -> None:
    """One source of defaults: a camera built in Python is the one its empty section makes."""
    for entry in CAMERAS:
        assert entry.config is not None
        parameters = inspect.signature(entry.factory).parameters
        for name, field in entry.config.model_fields.items():
            if name != "kind":
                assert parameters[name].default == field.default, (entry.name, name)


# --- Basler, through pylon's emulated camera -------------------------------------------------


@pytest.fixture
def camemu(monkeypatch: pytest.MonkeyPatch) -> None:
    """pylon's emulated camera (serial 0815-0000): set before pypylon is first imported."""
    monkeypatch.setenv("PYLON_CAMEMU", "1")


def test_basler_without_pypylon_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypylon", None)
    with pytest.raises(CameraError, match="pip install pypylon"):
        BaslerCamera().open()


def test_basler_emulated_camera_reports_what_it_delivers(camemu: None) -> None:
    camera = BaslerCamera(width=320, height=240, fps=200, exposure_us=1000)
    info = camera.open()
    try:
        # the emulation offers Mono8 ... BGR8Packed: the BGR one is taken, no conversion
        assert info == CameraInfo(320, 240, 200.0, "BGR8Packed")
        assert camera.serial == "0815-0000" and camera.exposure_us == pytest.approx(1000)
        grab = GrabThread(camera, timeout_s=2.0).start()
        frames = [grab.get() for _ in range(3)]
        assert grab.stop()
    finally:
        camera.close()
    assert all(f is not None for f in frames)
    assert [f.image.shape for f in frames if f] == [(240, 320, 3)] * 3
    assert all(f.image.dtype == np.uint8 for f in frames if f)
    assert np.all(np.diff([f.index for f in frames if f]) > 0)
    assert np.all(np.diff([f.t_capture_ns for f in frames if f]) > 0)
    # the emulation has no clock (it stamps every frame 0): no made-up device times
    assert all(f.t_device_ns is None for f in frames if f)


def test_basler_unconfigured_reports_the_camera_settings(camemu: None) -> None:
    camera = BaslerCamera()
    info = camera.open()
    frame = camera.read()
    camera.close()
    assert info == CameraInfo(1024, 1040, 100.0, "BGR8Packed")  # the emulation's defaults
    assert frame is not None and frame.image.shape == (1040, 1024, 3)


def test_basler_converts_mono_and_rgb_to_bgr(camemu: None, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """Each supported format the emulation has gives the same BGR image (its test image is
    grey, so every conversion must give the BGR8 camera's frame)."""
    def first_frame(formats: dict[str, int | None]) -> tuple[CameraInfo, np.ndarray]:
        monkeypatch.setattr(basler_module, "PYLON_FORMATS", formats)
        camera = BaslerCamera(width=160, height=120)
        info = camera.open()
        frame = camera.read(np.empty((120, 160, 3), np.uint8))
        camera.close()
        assert frame is not None
        return info, frame.image

    _, bgr = first_frame({"BGR8Packed": None})
    for pixel_format, code in (("RGB8Packed", cv2.COLOR_RGB2BGR), ("Mono8", cv2.COLOR_GRAY2BGR)):
        info, image = first_frame({pixel_format: code})
        assert info.pixel_format == pixel_format
        np.testing.assert_array_equal(image, bgr)
    monkeypatch.setattr(basler_module, "PYLON_FORMATS", {"BGR10": None})
    with pytest.raises(CameraError, match=r"none of its pixel formats .*Mono8.* is supported"):
        BaslerCamera().open()


def test_basler_close_leaves_the_camera_idle(camemu: None) -> None:
    camera = BaslerCamera(width=160, height=120)
    camera.open()
    device = camera._cam
    assert device.IsOpen() and device.IsGrabbing()
    camera.close()
    assert not device.IsGrabbing() and not device.IsOpen()
    camera.close()  # twice is harmless
    with pytest.raises(CameraError, match=r"BaslerCamera\(0815-0000\) is not open"):
        camera.read()
    assert camera.open().width == 160  # and it opens again, from frame 0
    frame = camera.read()
    camera.close()
    assert frame is not None and frame.index == 0


def test_basler_missing_serial_is_a_clear_camera_error(camemu: None) -> None:
    with pytest.raises(CameraError, match=r"Basler camera no-such-serial not found; cameras "
                                          r"present: \['0815-0000'\]"):
        BaslerCamera(serial="no-such-serial").open()
    with pytest.raises(CameraError, match=r"cannot configure or start: .*Width"):
        BaslerCamera(width=100_000).open()


def test_basler_device_time_is_the_camera_clock_in_ns() -> None:
    """A GigE camera counts ticks of GevTimestampTickFrequency; the emulation has no clock,
    so one grab result is stood in for here."""

    class Result:
        Array = np.zeros((2, 4, 3), np.uint8)
        TimeStamp = 250_000_123

    camera = BaslerCamera()
    camera._tick_hz = 125_000_000
    frame = camera._frame(Result(), None, 0)
    assert frame.t_device_ns == 2_000_000_984 and frame.image.shape == (2, 4, 3)
