"""Cameras (OpenCV file/device, synthetic, Basler emulation), GrabThread and make_camera."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from poseloop.errors import CameraError, ConfigError
from poseloop.realtime.cameras import (
    BaslerCamera,
    GrabThread,
    OpenCVCamera,
    SyntheticCamera,
    make_camera,
)
from poseloop.realtime.types import Camera, Frame
from poseloop.synthetic import SyntheticScene


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-frame 160x120 mp4v file at 60 fps; frame i is dark with 20x20 cell i bright."""
    path = tmp_path_factory.mktemp("video") / "cells.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 60.0, (160, 120))
    assert writer.isOpened()
    for i in range(40):
        image = np.full((120, 160, 3), 30, np.uint8)
        row, col = divmod(i, 8)
        image[20 * row:20 * row + 20, 20 * col:20 * col + 20] = 220
        writer.write(image)
    writer.release()
    return path


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
    frames = read_all(camera)
    assert camera.frame_count == len(frames) == 40
    assert (camera.width, camera.height, camera.fps) == (160, 120, 60.0)
    assert [f.index for f in frames] == list(range(40))
    assert all(f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in frames)
    assert np.all(np.diff([f.t_capture_ns for f in frames]) > 0)
    assert np.allclose(np.diff([f.t_device_ns for f in frames]), 1e9 / 60, rtol=1e-3)
    assert [bright_cell(f.image) for f in frames] == list(range(40))


def test_video_read_fills_the_given_buffer(video: Path) -> None:
    camera = OpenCVCamera(video)
    camera.open()
    buffer = np.empty((120, 160, 3), np.uint8)
    frame = camera.read(buffer)
    camera.close()
    assert frame is not None and frame.image is buffer


def test_shared_video_reads_like_a_camera(openfield: Path) -> None:
    camera = OpenCVCamera(openfield / "videos" / "m3v1mp4.mp4")
    camera.open()
    frames = [camera.read() for _ in range(20)]
    camera.close()
    assert (camera.width, camera.height) == (640, 480) and camera.frame_count > 1000
    assert [f.index for f in frames] == list(range(20))
    assert np.all(np.diff([f.t_capture_ns for f in frames]) > 0)


def test_paced_playback_takes_n_over_fps(video: Path) -> None:
    start = time.perf_counter()
    frames = read_all(OpenCVCamera(video, paced=True))
    elapsed = time.perf_counter() - start
    assert len(frames) == 40
    assert 39 / 60 * 0.95 < elapsed < 39 / 60 + 0.3
    gaps = np.diff([f.t_capture_ns for f in frames]) / 1e6
    assert np.median(gaps) == pytest.approx(1000 / 60, abs=2)


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


def test_synthetic_frames_match_the_scene() -> None:
    frames = read_all(SyntheticCamera(160, 120, fps=25, paced=False, seed=3, frames=6))
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


class CountingCamera:
    """Produces `n` frames as fast as possible (optionally blocking after `block_after`)."""

    def __init__(self, n: int, block_after: int | None = None, fail_after: int | None = None):
        self.n, self.block_after, self.fail_after = n, block_after, fail_after
        self.release = threading.Event()
        self.produced = 0
        self.closed = False

    def __repr__(self) -> str:
        return "CountingCamera()"

    def open(self) -> None:
        self.produced = 0

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
    with GrabThread(camera, timeout_s=2.0) as grab:
        wait_until(lambda: grab.grabbed == 500)
        frame = grab.get()
        assert frame is not None and frame.index == 499 and frame.image[0, 0, 0] == 499 % 256
        assert grab.dropped == 499
        assert grab.get() is None  # end of stream
    assert camera.closed


def test_grab_thread_slow_consumer_sees_increasing_frames_and_few_buffers() -> None:
    grab = GrabThread(SyntheticCamera(96, 64, paced=False, frames=300)).start()
    indices, buffers = [], set()
    while (frame := grab.get()) is not None:
        indices.append(frame.index)
        buffers.add(frame.image.ctypes.data)
        assert frame.image.shape == (64, 96, 3)
        time.sleep(0.003)
    grab.stop()
    assert np.all(np.diff(indices) > 0)
    assert grab.dropped > 0 and grab.delivered == len(indices)
    assert grab.grabbed == 300 == grab.delivered + grab.dropped
    assert len(buffers) <= 3  # the pool cycles three images


def test_grab_thread_video_eof_ends_stream(video: Path) -> None:
    with GrabThread(OpenCVCamera(video)) as grab:
        frames = 0
        while grab.get() is not None:
            frames += 1
        assert frames == grab.delivered and frames + grab.dropped == 40


def test_stalled_camera_raises_after_timeout() -> None:
    camera = CountingCamera(100, block_after=3)
    grab = GrabThread(camera, timeout_s=0.2).start()
    wait_until(lambda: grab.grabbed == 3)
    assert grab.get().index == 2
    start = time.monotonic()
    with pytest.raises(CameraError, match=r"CountingCamera\(\).*0.2 s after frame 2"):
        grab.get()
    assert 0.18 < time.monotonic() - start < 1.0
    camera.release.set()
    grab.stop()
    assert camera.closed


def test_camera_error_reaches_the_consumer() -> None:
    grab = GrabThread(CountingCamera(100, fail_after=5)).start()
    with pytest.raises(CameraError, match="cable pulled"):
        for _ in range(10):
            grab.get()
    grab.stop()


def test_make_camera_from_config(video: Path) -> None:
    camera = make_camera({"kind": "synthetic", "width": 96, "height": 64, "frames": 2})
    assert isinstance(camera, SyntheticCamera) and camera.paced
    assert len(read_all(camera)) == 2
    camera = make_camera({"kind": "opencv", "source": str(video), "paced": True})
    assert isinstance(camera, OpenCVCamera) and camera.is_file and camera.paced
    assert isinstance(make_camera({"kind": "basler", "exposure_us": 500}), BaslerCamera)


def test_make_camera_rejects_unknown_keys_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="exposure"):
        make_camera({"kind": "synthetic", "exposure": 3}, source="rig.yaml")
    with pytest.raises(ConfigError, match="rig.yaml.*fps"):
        make_camera({"kind": "opencv", "fps": -1}, source="rig.yaml")
    with pytest.raises(ConfigError, match="kind"):
        make_camera({"kind": "webcam"})


def test_basler_without_pypylon_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypylon", None)
    with pytest.raises(CameraError, match="pip install pypylon"):
        BaslerCamera().open()


@pytest.mark.skipif(importlib.util.find_spec("pypylon") is None,
                    reason="pypylon not installed (pip install pypylon); optional Basler support")
@pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning")
def test_basler_emulated_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYLON_CAMEMU", "1")
    camera = BaslerCamera(width=320, height=240, fps=200, exposure_us=1000)
    with GrabThread(camera, timeout_s=2.0) as grab:
        frames = [grab.get() for _ in range(3)]
        assert (camera.width, camera.height) == (320, 240)
        assert camera.fps == pytest.approx(200) and camera.exposure_us == pytest.approx(1000)
        assert [f.image.shape for f in frames] == [(240, 320, 3)] * 3
        assert np.all(np.diff([f.index for f in frames]) > 0)
        assert all(f.t_device_ns is not None for f in frames)
    with pytest.raises(CameraError, match="no-such-serial.*not found"):
        BaslerCamera(serial="no-such-serial").open()
