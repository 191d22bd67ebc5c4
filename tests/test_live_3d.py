"""The display window and the live page with triangulated 3D poses: camera 0's 2D view is
drawn on camera 0's frame, and the page lists the 3D coordinates."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from poseloop.realtime.display import Display, DisplayConfig, draw_pose, image_points
from poseloop.realtime.types import CameraInfo, Frame, Pose, Session
from poseloop.web.live import LiveView, WebConfig

RIG = Session(
    bodyparts=("snout", "tail"),
    skeleton=(("snout", "tail"),),
    cameras=(CameraInfo(160, 120, 30.0, name="left"), CameraInfo(160, 120, 30.0, name="right")),
    dims=3,
)


def pose3d(frame: int = 0) -> Pose:
    """One animal in mm (its tail unseen) and its two cameras' 2D views (pixels)."""
    points = np.array([[[12.5, -40.0, 300.25, 0.9], [np.nan, np.nan, np.nan, 0.3]]], np.float32)
    views = np.array([[[[40, 30, 0.9], [120, 90, 0.9]]],  # left: both seen
                      [[[10, 10, 0.9], [np.nan, np.nan, 0.0]]]], np.float32)  # right
    t = time.perf_counter_ns()
    timings = {"decode": t + 1_000_000, "triangulate": t + 1_300_000, "process": t + 1_310_000}
    return Pose(points, frame, t, timings, views=views,
                triangulation=np.array([[[0.5, 2], [np.nan, 1]]], np.float32))


def frames() -> tuple[Frame, Frame]:
    left = Frame(np.zeros((120, 160, 3), np.uint8), 0, 0)
    right = Frame(np.zeros((120, 160, 3), np.uint8), 0, 0, camera=1)
    left.views = [left, right]
    return left, right


def test_image_points_are_camera_0s_view_in_3d_and_the_points_in_2d() -> None:
    pose = pose3d()
    assert pose.views is not None
    left, right = image_points(pose), image_points(pose, 1)
    assert left is not None and np.array_equal(left, pose.views[0])
    assert right is not None and np.array_equal(right, pose.views[1], equal_nan=True)
    assert image_points(Pose(pose.points, 0, 0)) is None  # 3D without views: nothing to draw
    flat = Pose(np.zeros((1, 2, 3), np.float32), 0, 0)
    assert image_points(flat) is flat.points
    with pytest.raises(ValueError, match=r"draws 2D points .* \(image_points\)"):
        draw_pose(np.zeros((120, 160, 3), np.uint8), pose.points, RIG)


def test_display_draws_the_view_on_camera_0s_frame() -> None:
    display = Display(DisplayConfig())  # not opened: no window, the loop's side only
    left, _ = frames()
    display.pose(pose3d(), left)
    assert display._slot is not None
    image, points = display._slot
    assert points is not None and points.shape == (1, 2, 3)
    draw_pose(image, points, RIG)
    assert image[30, 40].any() and image[90, 120].any()  # both bodyparts of the left view
    assert image[60, 80].any()  # the skeleton line between them
    assert not image[10, 10].any()  # the right camera's point is not on the left frame


def test_live_page_gets_the_drawn_view_and_3d_text() -> None:
    from websockets.sync.client import connect

    view = LiveView(WebConfig(port=0, max_fps=100), log=lambda *a: None)
    view.open(RIG)
    try:
        with connect(f"ws://127.0.0.1:{view.server.port}/ws") as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
            jpeg, status = None, None
            deadline = time.monotonic() + 15
            frame = 0
            while (jpeg is None or status is None) and time.monotonic() < deadline:
                view.pose(pose3d(frame), frames()[0])
                frame += 1
                try:
                    message = ws.recv(timeout=0.05)
                except TimeoutError:
                    continue
                if isinstance(message, bytes):
                    jpeg = message
                else:
                    status = json.loads(message, parse_constant=_no_nan)
    finally:
        view.close()
    assert jpeg is not None and status is not None
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (120, 160, 3) and image[30, 40].max() > 60
    counts = status["histogram"]["counts"]
    assert list(counts) == ["preprocess", "infer", "decode", "triangulate", "process", "rules",
                            "publish"]
    assert counts["triangulate"][3] > 0 and counts["process"][0] > 0  # 300 µs, then 10 µs
    assert status["points3d"] == [["animal", "snout", 12.5, -40.0, 300.2, 0.9],
                                  ["animal", "tail", None, None, None, 0.3]]


def _no_nan(name: str) -> float:
    raise AssertionError(f"the page cannot parse {name}")


def test_2d_status_has_no_3d_points() -> None:
    view = LiveView(WebConfig())
    view._session = Session(bodyparts=("snout",))
    view._latest = Pose(np.zeros((1, 1, 3), np.float32), 0, 0)
    assert view.points3d() is None
