"""3D poses on the ZeroMQ stream: real sockets on 127.0.0.1, and 2D messages unchanged byte
for byte (docs/wire-format.md, "3D poses")."""

from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import pytest

from poseloop.realtime.types import COORDS_3D, ActionRecord, CameraInfo, Pose, Session
from poseloop.stream import CameraMeta, Meta, PoseMessage, PosePublisher, StreamConfig, WireError
from poseloop.stream.clock import PERF_OFFSET_NS
from poseloop.stream.listen import format_meta, format_pose, listen
from poseloop.stream.subscriber import PoseSubscriber
from poseloop.stream.wire import PoseEncoder, decode, encode_event, encode_meta

LOCAL = "tcp://127.0.0.1:*"
RIG = Session(
    bodyparts=("snout", "tailbase"),
    individuals=("mouse1", "mouse2"),
    unique_bodyparts=("top",),
    multi_animal=True,
    model="rig.onnx",
    cameras=(CameraInfo(640, 480, 100.0, name="left"), CameraInfo(800, 600, 100.0,
                                                                   name="right")),
    dims=3,
)


def pose3d(frame: int, unique: bool = True, triangulation: bool = True) -> Pose:
    """A 2 x 2 x 4 pose in mm (one point unseen: NaN), with its triangulation."""
    rng = np.random.default_rng(frame)
    points = (rng.random((2, 2, 4)) * [300, 200, 100, 1] - [150, 100, 0, 0]).astype(np.float32)
    points[1, 1, :3] = np.nan
    tri = np.stack([rng.random((2, 2)) * 3, np.full((2, 2), 2.0)], axis=-1).astype(np.float32)
    tri[1, 1] = (np.nan, 1.0)
    t = time.perf_counter_ns()
    return Pose(points, frame, t, {"grab": t + 1_000, "triangulate": t + 4_000_000},
                ids=np.array([0, -1], np.int64),
                unique=(rng.random((1, 4)) * 100).astype(np.float32) if unique else None,
                triangulation=tri if triangulation else None)


def frames_of(pose: Pose, t_publish_ns: int = 5) -> list[bytes]:
    return [f if isinstance(f, bytes) else f.tobytes()
            for f in PoseEncoder().encode(pose, t_publish_ns)]


def test_3d_poses_meta_and_triangulation_arrive_exactly() -> None:
    pub = PosePublisher(StreamConfig(endpoint=LOCAL))
    pub.open(RIG)
    sub = PoseSubscriber(pub.endpoint)
    try:
        deadline = time.monotonic() + 5
        while sub.meta is None and time.monotonic() < deadline:
            pub.set_meta(Meta.from_session(RIG))
            sub.recv(0.05)
        poses = [pose3d(i, unique=i % 3 != 0, triangulation=i % 4 != 0) for i in range(30)]
        for pose in poses:
            pub.pose(pose)
        got = [m for m in iter(lambda: sub.recv(0.3), None) if isinstance(m, PoseMessage)]
    finally:
        pub.close()
        sub.close()
    assert sub.meta is not None and sub.meta.dims == 3 and sub.meta.coords == COORDS_3D
    assert sub.meta.cameras == (CameraMeta("left", 640, 480, 100.0),
                                CameraMeta("right", 800, 600, 100.0))
    assert sub.meta.image_size == (640, 480)
    assert [m.frame for m in got] == list(range(30))
    for pose, m in zip(poses, got, strict=True):
        assert m.points.shape == (2, 2, 4) and m.points.dtype == np.float32
        assert np.array_equal(m.points, pose.points, equal_nan=True)
        assert m.ids == (0, -1) and m.latency_ns["triangulate"] == 4_000_000
        if pose.unique is None:
            assert m.unique is None
        else:
            assert m.unique is not None and np.array_equal(m.unique, pose.unique)
        if pose.triangulation is None:
            assert m.triangulation is None
        else:
            assert m.triangulation is not None and m.triangulation.shape == (2, 2, 2)
            assert np.array_equal(m.triangulation, pose.triangulation, equal_nan=True)
            assert not m.triangulation.flags.writeable


def test_3d_frame_order_and_header_as_documented() -> None:
    pose = pose3d(3)
    frames = frames_of(pose)
    assert len(frames) == 5
    topic, header, points, unique, tri = frames
    h = json.loads(header)
    assert topic == b"pose" and h["v"] == 2
    assert (h["shape"], h["unique_shape"], h["triangulation_shape"]) == ([2, 2, 4], [1, 4],
                                                                        [2, 2, 2])
    assert points == pose.points.astype("<f4").tobytes() and len(points) == 2 * 2 * 16
    assert pose.unique is not None and unique == pose.unique.astype("<f4").tobytes()
    assert pose.triangulation is not None
    assert tri == pose.triangulation.astype("<f4").tobytes()
    no_unique = frames_of(pose3d(3, unique=False))
    assert len(no_unique) == 4 and no_unique[3] == tri  # the triangulation comes next


def test_2d_messages_are_byte_identical_to_before() -> None:
    """The exact bytes wire version 2 sent before 3D existed."""
    points = np.array([[[1.5, 2.25, 0.5], [3.0, 4.0, 1.0]]], np.float32)
    pose = Pose(points, 7, 1_000, {"grab": 1_100, "infer": 3_000}, ids=np.array([-1]))
    t_capture = 1_000 + PERF_OFFSET_NS
    assert frames_of(pose, 2_000) == [
        b"pose",
        b'{"v":2,"frame":7,"camera":0,"t_capture_ns":%d,"t_publish_ns":2000,'
        b'"latency_ns":{"grab":100,"infer":2000},"shape":[1,2,3],"dtype":"float32",'
        b'"ids":[-1]}' % t_capture,
        b"\x00\x00\xc0?\x00\x00\x10@\x00\x00\x00?\x00\x00@@\x00\x00\x80@\x00\x00\x80?",
    ]
    unique = np.array([[5.0, 6.0, 0.25]], np.float32)
    two = Pose(np.zeros((2, 1, 3), np.float32), 8, 1_000, ids=np.array([3, -1]),
               unique=unique, camera=1)
    assert frames_of(two, 2_000) == [
        b"pose",
        b'{"v":2,"frame":8,"camera":1,"t_capture_ns":%d,"t_publish_ns":2000,'
        b'"latency_ns":{},"shape":[2,1,3],"dtype":"float32","ids":[3,-1],'
        b'"unique_shape":[1,3]}' % t_capture,
        bytes(24),
        b"\x00\x00\xa0@\x00\x00\xc0@\x00\x00\x80>",
    ]
    assert encode_event(7, "in_zone", "stim:ON 3", 99) == [
        b"event", b'{"v":2,"frame":7,"rule":"in_zone","action":"stim:ON 3","t_ns":99,'
                  b'"animals":[]}']


def test_meta_names_the_coords_and_cameras() -> None:
    frames = encode_meta(Meta.from_session(RIG))
    header = json.loads(frames[1])
    assert header["coords"] == ["x", "y", "z", "likelihood"]
    assert header["cameras"] == [{"name": "left", "width": 640, "height": 480, "fps": 100.0},
                                 {"name": "right", "width": 800, "height": 600, "fps": 100.0}]
    assert decode(frames) == Meta.from_session(RIG)
    two_d = Session(bodyparts=("snout",), cameras=(CameraInfo(320, 240, 30.0),))
    header = json.loads(encode_meta(Meta.from_session(two_d))[1])
    assert header["coords"] == ["x", "y", "likelihood"] and len(header["cameras"]) == 1
    # a meta from a publisher before 3D: 2D coords, no camera list
    del header["coords"], header["cameras"]
    old = decode([b"meta", json.dumps(header).encode()])
    assert isinstance(old, Meta) and old.dims == 2 and old.cameras == ()


POSE = b'{"v":2,"frame":1,"camera":0,"t_capture_ns":1,"t_publish_ns":2,"latency_ns":{},'


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([b"pose", POSE + b'"shape":[1,1,5],"dtype":"float32","ids":[0]}', bytes(20)],
         "\\[N, K, 3\\] \\(x, y, likelihood\\) or \\[N, K, 4\\]"),
        ([b"pose", POSE + b'"shape":[1,1,3],"dtype":"float32","ids":[0],'
          b'"triangulation_shape":[1,1,2]}', bytes(12), bytes(8)],
         "triangulation_shape must be \\[N, K, 2\\] with 3D points"),
        ([b"pose", POSE + b'"shape":[1,2,4],"dtype":"float32","ids":[0],'
          b'"triangulation_shape":[1,1,2]}', bytes(32), bytes(8)],
         "triangulation_shape must be .* got \\[1, 1, 2\\] with shape \\[1, 2, 4\\]"),
        ([b"pose", POSE + b'"shape":[1,1,4],"dtype":"float32","ids":[0],'
          b'"triangulation_shape":[1,1,2]}', bytes(16)],
         "must have 4 frames \\(with 'triangulation_shape'\\)"),
        ([b"pose", POSE + b'"shape":[1,1,4],"dtype":"float32","ids":[0],"unique_shape":[1,4],'
          b'"triangulation_shape":[1,1,2]}', bytes(16), bytes(16)],
         "must have 5 frames \\(with 'unique_shape', with 'triangulation_shape'\\)"),
        ([b"pose", POSE + b'"shape":[1,1,4],"dtype":"float32","ids":[0],'
          b'"triangulation_shape":[1,1,2]}', bytes(16), bytes(4)],
         "triangulation payload has 4 bytes"),
        ([b"pose", POSE + b'"shape":[1,1,4],"dtype":"float32","ids":[0],"unique_shape":[1,3]}',
          bytes(16), bytes(12)], "unique_shape must be \\[U, 4\\]"),
        ([b"meta", b'{"v":2,"bodyparts":["a"],"individuals":["x"],"unique_bodyparts":[],'
          b'"multi_animal":false,"skeleton":[],"model":"m","image_size":[1,2],"fps":30,'
          b'"coords":["x","y","z","likelihood"],"cameras":[{"name":"c","width":"1"}]}'],
         "meta cameras must be"),
        ([b"meta", b'{"v":2,"bodyparts":["a"],"individuals":["x"],"unique_bodyparts":[],'
          b'"multi_animal":false,"skeleton":[],"model":"m","image_size":[1,2],"fps":30,'
          b'"coords":"xyz"}'], "'coords'"),
    ],
)
def test_malformed_3d_messages_name_the_problem(frames: list[bytes], error: str) -> None:
    with pytest.raises(WireError, match=error):
        decode(frames)


def test_encoder_refuses_inconsistent_3d_poses() -> None:
    encoder = PoseEncoder()
    with pytest.raises(ValueError, match="N x K x 3 .* or N x K x 4"):
        encoder.encode(Pose(np.zeros((1, 2, 5), np.float32), 0, 0), 0)
    with pytest.raises(ValueError, match="unique must be U x 4"):
        encoder.encode(Pose(np.zeros((1, 2, 4), np.float32), 0, 0,
                            unique=np.zeros((1, 3), np.float32)), 0)
    with pytest.raises(ValueError, match="triangulation must be N x K x 2 with N x K x 4"):
        encoder.encode(Pose(np.zeros((1, 2, 3), np.float32), 0, 0,
                            triangulation=np.zeros((1, 2, 2), np.float32)), 0)
    with pytest.raises(ValueError, match="got shape \\(1, 3, 2\\)"):
        encoder.encode(Pose(np.zeros((1, 2, 4), np.float32), 0, 0,
                            triangulation=np.zeros((1, 3, 2), np.float32)), 0)


def test_listen_prints_3d_poses() -> None:
    meta = Meta.from_session(RIG)
    message = PoseMessage(
        frame=5, t_capture_ns=0, t_publish_ns=0, latency_ns={},
        points=np.array([[[1, 2, 3, 0.5], [4, 5, 6, 1]],
                         [[7, 8, 9, 0.25], [np.nan, np.nan, np.nan, 0.1]]], np.float32),
        ids=(0, -1), triangulation=np.array([[[0.5, 2], [1.25, 3]], [[2, 2], [np.nan, 1]]],
                                            np.float32),
    )
    line = format_pose(message, meta.bodyparts, None, meta.individuals)
    assert line == (
        "frame 5  mouse1 (id 0):  snout 1.0 2.0 3.0 0.50 (2 cams 0.50 px)  "
        "tailbase 4.0 5.0 6.0 1.00 (3 cams 1.25 px)  mouse2:  "
        "snout 7.0 8.0 9.0 0.25 (2 cams 2.00 px)  tailbase nan nan nan 0.10 (1 cams nan px)"
    )
    plain = PoseMessage(5, 0, 0, {}, message.points[:1], (-1,))
    assert format_pose(plain, meta.bodyparts, None) == (
        "frame 5  snout 1.0 2.0 3.0 0.50  tailbase 4.0 5.0 6.0 1.00")
    assert format_meta(meta) == (
        "meta model rig.onnx  image 640x480  bodyparts snout, tailbase  individuals mouse1, "
        "mouse2  unique top  3D x, y, z, likelihood (world units)  cameras left 640x480, "
        "right 800x600")


def test_listen_reads_a_3d_stream(capsys: pytest.CaptureFixture[str]) -> None:
    pub = PosePublisher(StreamConfig(endpoint=LOCAL))
    pub.open(RIG)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(listen(pub.endpoint, count=5)))
    thread.start()
    try:
        i, deadline = 0, time.monotonic() + 10
        while thread.is_alive() and time.monotonic() < deadline:
            pub.set_meta(Meta.from_session(RIG))  # before every pose: the poses are named
            if i % 10 == 0:
                pub.event(ActionRecord(i, "reach", "stim:ON", time.perf_counter_ns()))
            pub.pose(pose3d(i))
            i += 1
            time.sleep(0.005)
    finally:
        pub.close()
        thread.join(5)
    out = capsys.readouterr().out
    assert result == [5] and "3D x, y, z, likelihood" in out
    lines = [line for line in out.splitlines() if line.startswith("frame")]
    assert len(lines) == 5
    assert re.search(r"mouse1 \(id 0\):  snout -?[\d.]+ -?[\d.]+ [\d.]+ [\d.]+ \(2 cams",
                     lines[-1])
    assert "unique:  top " in lines[-1]
