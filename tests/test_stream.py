"""ZeroMQ stream: real sockets on 127.0.0.1, ports chosen by the system (``:*``).

Publishers are closed before their subscribers: libzmq (4.3.5) can abort when a publisher
closes at the very moment a subscriber it is still writing to disconnects.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth
from pydantic import ValidationError

from poseloop.errors import ConfigError
from poseloop.realtime.sinks import SINKS
from poseloop.realtime.types import ActionRecord, CameraInfo, Pose, Session, Sink
from poseloop.stream import (
    CameraMeta,
    CurveClient,
    CurveConfig,
    EventMessage,
    Meta,
    PoseMessage,
    PosePublisher,
    PoseSubscriber,
    StreamConfig,
    WireError,
)
from poseloop.stream.clock import from_perf_ns
from poseloop.stream.config import is_loopback
from poseloop.stream.listen import format_meta, format_pose, listen
from poseloop.stream.wire import decode

DOCS = Path(__file__).resolve().parents[1] / "docs" / "wire-format.md"
LOCAL = "tcp://127.0.0.1:*"
SESSION = Session(
    bodyparts=("snout", "leftear", "rightear", "tailbase"),
    skeleton=(("snout", "leftear"), ("snout", "rightear")),
    model="test.onnx",
    cameras=(CameraInfo(640, 480, 30.0),),
)
META = Meta.from_session(SESSION)
MULTI = Session(
    bodyparts=("snout", "tailbase"),
    individuals=("mouse1", "mouse2", "mouse3"),
    unique_bodyparts=("top", "bottom"),
    multi_animal=True,
    model="ma.onnx",
    cameras=(CameraInfo(320, 240, 60.0),),
)


def make_pose(frame: int, k: int = 4, n: int = 1, u: int | None = None, camera: int = 0) -> Pose:
    rng = np.random.default_rng(frame)
    points = (rng.random((n, k, 3)) * [640, 480, 1]).astype(np.float32)
    unique = None if u is None else (rng.random((u, 3)) * [640, 480, 1]).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) * 2 - 1  # -1, 1, 3, ...
    t = time.perf_counter_ns()
    timings = {"grab": t + 1_000, "infer": t + 3_000_000, "decode": t + 3_010_000}
    return Pose(points, frame, t, timings, ids=ids, unique=unique, camera=camera)


def publisher(session: Session = SESSION, **options) -> PosePublisher:
    """An open publisher on a port the system chose."""
    pub = PosePublisher(StreamConfig(endpoint=LOCAL, **options))
    pub.open(session)
    return pub


def raw_sub(endpoint: str, rcvhwm: int = 1000, rcvbuf: int = -1) -> zmq.Socket:
    """A plain SUB socket to everything (no poseloop.stream code involved)."""
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.rcvhwm = rcvhwm
    sock.rcvbuf = rcvbuf
    sock.subscribe(b"")
    sock.connect(endpoint)
    return sock


def connect(pub: PosePublisher, poll: Callable[[float], object], meta: Meta = META) -> None:
    """Resend meta until ``poll(seconds)`` sees a message: the subscriber is connected."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pub.set_meta(meta)
        if poll(0.05):
            return
    raise AssertionError("subscriber never connected")


@contextmanager
def pub_sub(session: Session = SESSION, **options) -> Iterator[tuple[PosePublisher,
                                                                     PoseSubscriber]]:
    """A connected publisher and subscriber (meta already seen); the publisher closes first."""
    pub = publisher(session, **options)
    sub = PoseSubscriber(pub.endpoint)
    try:
        connect(pub, sub.recv, Meta.from_session(session))
        yield pub, sub
    finally:
        pub.close()
        sub.close()


def test_the_publisher_is_a_sink_built_from_its_section_and_binds_at_open() -> None:
    pub = SINKS["stream"].factory(StreamConfig(endpoint=LOCAL))
    try:
        assert isinstance(pub, PosePublisher) and isinstance(pub, Sink)
        assert pub.name == "stream" and pub.endpoint == LOCAL  # not bound yet
        pub.open(MULTI)
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", pub.endpoint)
        assert pub.fatal is None and pub.dropped == 0 and pub.sent["meta"] == 1
        with pytest.raises(RuntimeError, match="already open"):
            pub.open(MULTI)
    finally:
        pub.close()
    pub.close()  # idempotent
    PosePublisher(StreamConfig(endpoint=LOCAL)).close()  # never opened


def test_meta_comes_from_the_session() -> None:
    meta = Meta.from_session(MULTI)
    assert meta == Meta(bodyparts=("snout", "tailbase"), skeleton=(), model="ma.onnx",
                        image_size=(320, 240), individuals=("mouse1", "mouse2", "mouse3"),
                        unique_bodyparts=("top", "bottom"), multi_animal=True, fps=60.0,
                        coords=("x", "y", "likelihood"),
                        cameras=(CameraMeta("camera", 320, 240, 60.0),))
    assert META.individuals == ("animal",) and not META.multi_animal


def test_poses_and_headers_arrive_intact() -> None:
    with pub_sub() as (pub, sub):
        poses = [make_pose(i, k=4 + i % 3) for i in range(50)]
        before = time.monotonic_ns()
        for pose in poses:
            pub.pose(pose)
        after = time.monotonic_ns()
        got = [m for m in iter(lambda: sub.recv(0.3), None) if isinstance(m, PoseMessage)]
    assert [m.frame for m in got] == list(range(50))
    for pose, m in zip(poses, got, strict=True):
        assert m.points.dtype == np.float32 and np.array_equal(m.points, pose.points)
        assert m.points.shape == (1, pose.points.shape[1], 3) and not m.points.flags.writeable
        assert m.ids == (-1,) and m.unique is None and m.camera == 0
        assert m.t_capture_ns == from_perf_ns(pose.t_capture_ns)
        assert before <= m.t_publish_ns <= after
        assert m.latency_ns == {k: v - pose.t_capture_ns for k, v in pose.timings.items()}
    assert pub.sent["pose"] == 50 and pub.dropped_by_topic["pose"] == 0 == pub.dropped
    assert sub.meta == META


def test_many_animals_ids_unique_bodyparts_and_camera_arrive() -> None:
    with pub_sub(MULTI) as (pub, sub):
        poses = [make_pose(i, k=2, n=3, u=2, camera=i % 2) for i in range(20)]
        poses.append(make_pose(20, k=2, n=3))  # a frame without unique bodyparts
        for pose in poses:
            pub.pose(pose)
        got = [m for m in iter(lambda: sub.recv(0.3), None) if isinstance(m, PoseMessage)]
    assert len(got) == 21 and sub.meta == Meta.from_session(MULTI)
    for pose, m in zip(poses, got, strict=True):
        assert m.points.shape == (3, 2, 3) and np.array_equal(m.points, pose.points)
        assert m.ids == (-1, 1, 3) and m.camera == pose.camera
        if pose.unique is None:
            assert m.unique is None
        else:
            assert m.unique is not None and np.array_equal(m.unique, pose.unique)
    assert sub.individuals(3) == ["mouse1", "mouse2", "mouse3"]
    assert sub.unique_bodyparts(2) == ["top", "bottom"] and sub.bodyparts(2) == ["snout",
                                                                                "tailbase"]


def test_second_language_check_plain_zmq_json_numpy() -> None:
    """Decode with only the documented rules: no poseloop.stream code on the reading side."""
    pub = publisher(MULTI)
    sock = raw_sub(pub.endpoint)
    try:
        connect(pub, lambda timeout: sock.poll(int(timeout * 1000)), Meta.from_session(MULTI))
        pose = make_pose(7, k=2, n=3, u=2, camera=1)
        pub.pose(pose)
        pub.event(ActionRecord(7, "in_zone", "stim:ON 3", time.perf_counter_ns()))
        received = {}
        while len(received) < 3 and sock.poll(1000):
            frames = sock.recv_multipart()
            received.setdefault(frames[0], frames)
    finally:
        pub.close()
        sock.close()
    _, header, points, unique = received[b"pose"]
    h = json.loads(header.decode("utf-8"))
    assert set(h) == {"v", "frame", "camera", "t_capture_ns", "t_publish_ns", "latency_ns",
                      "shape", "dtype", "ids", "unique_shape"}
    assert (h["v"], h["frame"], h["camera"], h["shape"], h["dtype"], h["ids"],
            h["unique_shape"]) == (2, 7, 1, [3, 2, 3], "float32", [-1, 1, 3], [2, 3])
    assert points == pose.points.astype("<f4").tobytes()  # little-endian, row-major
    assert np.array_equal(np.frombuffer(points, "<f4").reshape(h["shape"]), pose.points)
    assert pose.unique is not None and unique == pose.unique.astype("<f4").tobytes()
    assert 0 <= h["t_publish_ns"] - h["t_capture_ns"] < 10**9  # one shared clock
    assert h["latency_ns"]["infer"] == 3_000_000
    event = json.loads(received[b"event"][1])
    assert 0 <= event.pop("t_ns") - h["t_publish_ns"] < 10**9
    assert event == {"v": 2, "frame": 7, "rule": "in_zone", "action": "stim:ON 3",
                     "animals": []}
    _, header = received[b"meta"]
    assert json.loads(header) == {
        "v": 2,
        "bodyparts": ["snout", "tailbase"],
        "individuals": ["mouse1", "mouse2", "mouse3"],
        "unique_bodyparts": ["top", "bottom"],
        "multi_animal": True,
        "skeleton": [],
        "model": "ma.onnx",
        "image_size": [320, 240],
        "fps": 60.0,
        "coords": ["x", "y", "likelihood"],
        "cameras": [{"name": "camera", "width": 320, "height": 240, "fps": 60.0}],
    }


def _documented_example() -> str:
    section = DOCS.read_text().split("## A plain subscriber", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


@pytest.mark.parametrize("session", [SESSION, MULTI], ids=["one animal", "three animals"])
def test_documented_example_runs_in_another_process(session: Session) -> None:
    """The Python example in docs/wire-format.md, run as written, reads the stream."""
    code = _documented_example()
    pub = publisher(session)
    assert code.count("tcp://127.0.0.1:5555") == 1 and code.count("while True:") == 1
    code = code.replace("tcp://127.0.0.1:5555", pub.endpoint)
    code = code.replace("while True:", "for _ in range(100):")
    code += "import sys\nassert not [m for m in sys.modules if m.startswith('poseloop')]\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    n, k, _ = session.shape
    u = len(session.unique_bodyparts) or None
    sent = {}
    try:
        frame, deadline = 0, time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            sent[frame] = make_pose(frame, k=k, n=n, u=u)
            pub.pose(sent[frame])
            if frame % 10 == 5:
                pub.set_meta(Meta.from_session(session))
                pub.event(ActionRecord(frame, "in_zone", "stim:ON 3", time.perf_counter_ns()))
            frame += 1
            time.sleep(0.002)
    finally:
        pub.close()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    lines = re.findall(r"^(\d+) ([\d.]+) ms (\S+) (-?\d+) (\{.*\})$", out, re.M)
    assert lines and "event" in out
    for frame, latency_ms, name, track, values in lines:
        assert 0 < float(latency_ms) < 1000
        i = session.individuals.index(name)
        pose = sent[int(frame)]
        assert int(track) == pose.ids[i]
        rows = ast.literal_eval(values)
        assert list(rows) == list(session.bodyparts)  # named from meta
        assert list(rows.values()) == pose.points[i].tolist()
    assert {name for _, _, name, _, _ in lines} == set(session.individuals)


def test_stalled_subscriber_never_blocks_the_publisher() -> None:
    pub = publisher(hwm=10)
    stalled = raw_sub(pub.endpoint, rcvhwm=10, rcvbuf=4096)  # connected, never reads
    try:
        time.sleep(0.3)
        pose = make_pose(0, k=20)
        slowest, start = 0, time.perf_counter()
        for _ in range(20_000):
            t = time.perf_counter()
            pub.pose(pose)
            slowest = max(slowest, time.perf_counter() - t)
        total = time.perf_counter() - start
    finally:
        pub.close()
        stalled.close()
    assert pub.dropped_by_topic["pose"] > 0 and pub.dropped == sum(pub.dropped_by_topic.values())
    assert pub.sent["pose"] == 20_000  # skip_subscriber: still handed to ZeroMQ for the others
    assert slowest < 0.1 and total < 15, (slowest, total)


@pytest.mark.parametrize("mode", ["skip_subscriber", "drop_message"])
def test_full_queue_policy(mode: str) -> None:
    """skip_subscriber: a reader gets every pose beside a stalled subscriber.
    drop_message: nobody gets a dropped message, and every loss is counted."""
    pub = publisher(hwm=20, on_full_queue=mode)
    stalled = raw_sub(pub.endpoint, rcvhwm=10, rcvbuf=4096)
    reader = raw_sub(pub.endpoint)
    reader.setsockopt(zmq.UNSUBSCRIBE, b"")
    reader.subscribe(b"pose")
    frames: list[int] = []
    try:
        time.sleep(0.3)
        for i in range(1000):
            pub.pose(make_pose(i, k=500))  # big messages fill the stalled socket buffers soon
            while reader.poll(0 if i % 10 else 5):
                frames.append(json.loads(reader.recv_multipart()[1])["frame"])
        while reader.poll(200):
            frames.append(json.loads(reader.recv_multipart()[1])["frame"])
    finally:
        pub.close()
        stalled.close()
        reader.close()
    assert pub.dropped_by_topic["pose"] > 0
    if mode == "skip_subscriber":
        assert frames == list(range(1000))
    else:
        assert len(frames) == 1000 - pub.dropped_by_topic["pose"] == pub.sent["pose"]


def test_late_subscriber_gets_meta_within_a_second() -> None:
    pub = publisher()
    try:
        for i in range(30):  # a running loop nobody listens to yet
            pub.pose(make_pose(i))
            time.sleep(0.01)
        sub = PoseSubscriber(pub.endpoint, topics=("meta",))
        start, got, i = time.monotonic(), None, 30
        while got is None and time.monotonic() - start < 3:
            pub.pose(make_pose(i))
            i += 1
            got = sub.recv(0.005)
        waited = time.monotonic() - start
    finally:
        pub.close()
        sub.close()
    assert got == META and waited < 1.2
    assert sub.bodyparts(4) == list(META.bodyparts) and sub.bodyparts(2) == ["bp0", "bp1"]
    assert sub.individuals(1) == ["animal"] and sub.individuals(2) == ["ind0", "ind1"]


def test_events() -> None:
    with pub_sub() as (pub, sub):
        t = time.perf_counter_ns()
        pub.event(ActionRecord(12, "in_zone", "stim:PULSE 3 5", t))
        pub.event(ActionRecord(13, "left_zone", "stim:OFF 3", time.perf_counter_ns()))
        events = [m for m in iter(lambda: sub.recv(0.3), None) if isinstance(m, EventMessage)]
    assert events[0] == EventMessage(12, "in_zone", "stim:PULSE 3 5", from_perf_ns(t))
    assert (events[1].frame, events[1].rule, events[1].action) == (13, "left_zone",
                                                                   "stim:OFF 3")
    assert pub.sent["event"] == 2


def test_subscriber_topics_filter_and_still_track_meta() -> None:
    pub = publisher()
    sub = PoseSubscriber(pub.endpoint, topics=("event",))
    try:
        connect(pub, lambda timeout: sub.meta is not None or sub.recv(timeout) is not None)
        pub.pose(make_pose(1))
        pub.event(ActionRecord(1, "r", "a", time.perf_counter_ns()))
        got = list(iter(lambda: sub.recv(0.3), None))
    finally:
        pub.close()
        sub.close()
    assert [type(m) for m in got] == [EventMessage] and sub.meta == META


V1_POSE = [b"pose", b'{"v":1,"frame":1,"t_capture_ns":1,"t_publish_ns":2,"latency_ns":{},'
           b'"shape":[1,3],"dtype":"float32"}', b"\0" * 12]


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        (V1_POSE, "wire version 1, this poseloop reads version 2: version 2 sends N x K x 3 "
                  "poses.*'ids'.*individuals.*upgrade poseloop on the publishing side"),
        ([b"meta", b'{"v":3}'], "wire version 3.*upgrade poseloop on this \\(the subscribing"),
        ([b"event", b'{"frame":1}'], "wire version None.*is the publisher poseloop"),
    ],
)
def test_other_wire_version_is_a_clear_error(frames: list[bytes], error: str) -> None:
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.linger = 0
    sock.bind(LOCAL)
    sub = PoseSubscriber(sock.last_endpoint.decode())
    try:
        with pytest.raises(WireError, match=error):
            for _ in range(100):
                sock.send_multipart(frames)
                sub.recv(0.05)
    finally:
        sock.close()
        sub.close()


POSE = b'{"v":2,"frame":1,"camera":0,"t_capture_ns":1,"t_publish_ns":2,"latency_ns":{},'


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([b"pose"], "expected \\[topic, header"),
        ([b"pos", b"{}"], "unknown topic"),
        ([b"pose", POSE + b'"shape":[1,1,3],"dtype":"float32","ids":[0]}'],
         "must have 3 frames"),
        ([b"pose", POSE + b'"shape":[1,1,3],"dtype":"float32","ids":[0],"unique_shape":[1,3]}',
          b"\0" * 12], "must have 4 frames \\(with 'unique_shape'\\)"),
        ([b"event", b"not json"], "not JSON"),
        ([b"event", b'{"v":2,"frame":1,"rule":"r","t_ns":5}'], "no 'action'"),
        ([b"event", b'{"v":2,"frame":"1","rule":"r","action":"a","t_ns":5}'], "'frame'"),
        ([b"event", b'{"v":2,"frame":1,"rule":"r","action":"a","t_ns":5}', b""],
         "must have 2 frames"),
        ([b"pose", POSE + b'"shape":[2,1,3],"dtype":"float32","ids":[0,1]}', b"\0" * 23],
         "23 bytes.*needs 24"),
        ([b"pose", POSE + b'"shape":[2,3],"dtype":"float32","ids":[0,1]}', b"\0" * 24],
         "\\[N, K, 3\\]"),
        ([b"pose", POSE + b'"shape":[1,1,3],"dtype":"float64","ids":[0]}', b"\0" * 12],
         "float32"),
        ([b"pose", POSE + b'"shape":[2,1,3],"dtype":"float32","ids":[0]}', b"\0" * 24],
         "ids must be 2 integers"),
        ([b"pose", POSE + b'"shape":[1,1,3],"dtype":"float32","ids":[0],"unique_shape":[2]}',
          b"\0" * 12, b""], "unique_shape must be \\[U, 3\\]"),
        ([b"pose", POSE + b'"shape":[1,1,3],"dtype":"float32","ids":[0],"unique_shape":[1,3]}',
          b"\0" * 12, b"\0" * 8], "unique payload has 8 bytes"),
        ([b"meta", b'{"v":2,"bodyparts":[],"skeleton":[["a"]],"model":"m","image_size":[1,2]}'],
         "skeleton"),
        ([b"meta", b'{"v":2,"bodyparts":["a"],"individuals":[1],"unique_bodyparts":[],'
          b'"multi_animal":false,"skeleton":[],"model":"m","image_size":[1,2],"fps":30}'],
         "'individuals' must be a list of strings"),
        ([b"meta", b'{"v":2,"bodyparts":["a"],"individuals":["x"],"unique_bodyparts":[],'
          b'"multi_animal":0,"skeleton":[],"model":"m","image_size":[1,2],"fps":30}'],
         "'multi_animal'"),
    ],
)
def test_malformed_messages_name_the_problem(frames: list[bytes], error: str) -> None:
    with pytest.raises(WireError, match=error):
        decode(frames)


def test_encoder_refuses_poses_of_the_wrong_shape() -> None:
    pub = publisher()
    try:
        with pytest.raises(ValueError, match="N x K x 3"):
            pub.pose(Pose(np.zeros((4, 3), np.float32), 0, 0))
        with pytest.raises(ValueError, match="2 individuals but 1 ids"):
            pub.pose(Pose(np.zeros((2, 4, 3), np.float32), 0, 0))
    finally:
        pub.close()


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.0.0.1:*", True),
        ("tcp://127.3.2.1:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/poseloop", True),
        ("inproc://poses", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://192.168.1.20:5555", False),
        ("tcp://eth0:5555", False),
        ("tcp://rig.lab.org:5555", False),
    ],
)
def test_is_loopback(endpoint: str, local: bool) -> None:
    assert is_loopback(endpoint) is local


def test_network_endpoint_needs_keys_or_explicit_consent() -> None:
    with pytest.raises(ValidationError, match="'curve'.*allow_insecure"):
        StreamConfig(endpoint="tcp://0.0.0.0:*")
    with pytest.raises(ConfigError, match="field 'curve'.*allow_insecure"):  # built in Python
        PosePublisher(StreamConfig.model_construct(endpoint="tcp://0.0.0.0:*", curve=None,
                                                   allow_insecure=False))
    publisher(allow_insecure=True).close()


def test_bad_keys_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'curve.client_public_keys'.*neither"):
        publisher(curve=CurveConfig(client_public_keys=["nope"]))
    zmq.auth.create_certificates(tmp_path, "client")
    config = CurveConfig(
        server_secret_key=str(tmp_path / "client.key"), client_public_keys=[str(tmp_path)]
    )
    with pytest.raises(ConfigError, match="'curve.server_secret_key'.*no secret key"):
        publisher(curve=config)


def test_curve_admits_only_listed_clients(tmp_path: Path) -> None:
    for folder, name in (("server", "server"), ("clients", "rig")):
        (tmp_path / folder).mkdir()
        zmq.auth.create_certificates(tmp_path / folder, name)
    curve = CurveConfig(
        server_secret_key=str(tmp_path / "server" / "server.key_secret"),
        client_public_keys=[str(tmp_path / "clients")],
    )
    pub = PosePublisher(StreamConfig(endpoint="tcp://0.0.0.0:*", curve=curve))
    pub.open(SESSION)
    assert pub.public_key is not None
    address = "tcp://127.0.0.1:" + pub.endpoint.rsplit(":", 1)[1]
    good = PoseSubscriber(
        address,
        curve=CurveClient.load(
            str(tmp_path / "server" / "server.key"), str(tmp_path / "clients" / "rig.key_secret")
        ),
    )
    no_keys = raw_sub(address)
    unlisted = PoseSubscriber(address, curve=CurveClient(pub.public_key, *zmq.curve_keypair()))
    impostor = CurveClient(zmq.curve_keypair()[0], *zmq.curve_keypair())
    wrong_server = PoseSubscriber(address, curve=impostor)
    others = [no_keys.poll, unlisted.recv, wrong_server.recv]
    try:
        connect(pub, good.recv)
        leaked = []
        for i in range(100):  # ~1 s of poses
            pub.pose(make_pose(i))
            time.sleep(0.01)
            leaked += [i for poll in others if poll(0)]
        got = [m for m in iter(lambda: good.recv(0.3), None) if isinstance(m, PoseMessage)]
    finally:
        pub.close()
        for s in (good, no_keys, unlisted, wrong_server):
            s.close()
    assert pub.public_key == zmq.auth.load_certificate(tmp_path / "server" / "server.key")[0]
    assert len(got) == 100 and not leaked


def test_listen_prints_named_poses_and_latency(capsys: pytest.CaptureFixture[str]) -> None:
    pub = publisher()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(listen(pub.endpoint, count=20)))
    thread.start()
    try:
        i, deadline = 0, time.monotonic() + 10
        while thread.is_alive() and time.monotonic() < deadline:
            if i % 10 == 0:
                pub.set_meta(META)
                pub.event(ActionRecord(i, "in_zone", "stim:ON 3", time.perf_counter_ns()))
            pub.pose(make_pose(i))
            i += 1
            time.sleep(0.005)
    finally:
        pub.close()
        thread.join(5)
    out = capsys.readouterr().out
    assert result == [20]
    assert "meta model test.onnx  image 640x480  bodyparts snout, leftear, rightear, " \
           "tailbase\n" in out  # as before: a single-animal model
    pose_lines = [line for line in out.splitlines() if line.startswith("frame")]
    assert len(pose_lines) == 20 and "event frame" in out
    named = r"frame \d+  latency [\d.]+ ms  snout [\d.]+ [\d.]+ [\d.]+  leftear"
    assert re.match(named, pose_lines[-1]) and "animal" not in pose_lines[-1]


def test_listen_names_individuals_ids_and_unique_bodyparts() -> None:
    meta = Meta.from_session(MULTI)
    message = PoseMessage(
        frame=5, t_capture_ns=0, t_publish_ns=0, latency_ns={},
        points=np.array([[[1, 2, 0.5], [3, 4, 0.25]], [[5, 6, 1], [7, 8, 0]],
                         [[9, 10, 0.5], [11, 12, 0.5]]], np.float32),
        ids=(4, -1, 7), unique=np.array([[13, 14, 1], [15, 16, 0]], np.float32),
    )
    line = format_pose(message, meta.bodyparts, 1_500_000, meta.individuals,
                       meta.unique_bodyparts)
    assert line == (
        "frame 5  latency 1.50 ms  mouse1 (id 4):  snout 1.0 2.0 0.50  tailbase 3.0 4.0 0.25  "
        "mouse2:  snout 5.0 6.0 1.00  tailbase 7.0 8.0 0.00  "
        "mouse3 (id 7):  snout 9.0 10.0 0.50  tailbase 11.0 12.0 0.50  "
        "unique:  top 13.0 14.0 1.00  bottom 15.0 16.0 0.00"
    )
    assert format_meta(meta) == ("meta model ma.onnx  image 320x240  bodyparts snout, tailbase"
                                 "  individuals mouse1, mouse2, mouse3  unique top, bottom")
