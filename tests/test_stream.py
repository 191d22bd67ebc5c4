"""ZeroMQ stream: real sockets on 127.0.0.1, random ports.

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

from poseloop.errors import ConfigError
from poseloop.realtime.types import Pose
from poseloop.stream import (
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
from poseloop.stream.listen import listen
from poseloop.stream.wire import decode

DOCS = Path(__file__).resolve().parents[1] / "docs" / "wire-format.md"
LOCAL = "tcp://127.0.0.1:0"
META = Meta(
    bodyparts=["snout", "leftear", "rightear", "tailbase"],
    skeleton=[("snout", "leftear"), ("snout", "rightear")],
    model="test.onnx",
    image_size=(640, 480),
)


def make_pose(frame: int, k: int = 4) -> Pose:
    rng = np.random.default_rng(frame)
    data = (rng.random((k, 3)) * [640, 480, 1]).astype(np.float32)
    t = time.perf_counter_ns()
    timings = {"grab": t + 1_000, "infer": t + 3_000_000, "decode": t + 3_010_000}
    return Pose(data, frame, t, timings)


def raw_sub(endpoint: str, rcvhwm: int = 1000, rcvbuf: int = -1) -> zmq.Socket:
    """A plain SUB socket to everything (no poseloop.stream code involved)."""
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.rcvhwm = rcvhwm
    sock.rcvbuf = rcvbuf
    sock.subscribe(b"")
    sock.connect(endpoint)
    return sock


def connect(pub: PosePublisher, poll: Callable[[float], object]) -> None:
    """Resend meta until ``poll(seconds)`` sees a message: the subscriber is connected."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pub.set_meta(META)
        if poll(0.05):
            return
    raise AssertionError("subscriber never connected")


@contextmanager
def pub_sub(**kwargs) -> Iterator[tuple[PosePublisher, PoseSubscriber]]:
    """A connected publisher and subscriber (meta already seen); the publisher closes first."""
    pub = PosePublisher(META, endpoint=LOCAL, **kwargs)
    sub = PoseSubscriber(pub.endpoint)
    try:
        connect(pub, sub.recv)
        yield pub, sub
    finally:
        pub.close()
        sub.close()


def test_poses_and_headers_arrive_intact() -> None:
    with pub_sub() as (pub, sub):
        poses = [make_pose(i, k=4 + i % 3) for i in range(50)]
        before = time.monotonic_ns()
        for pose in poses:
            pub.send(pose)
        after = time.monotonic_ns()
        got = [m for m in iter(lambda: sub.recv(0.3), None) if isinstance(m, PoseMessage)]
    assert [m.frame for m in got] == list(range(50))
    for pose, m in zip(poses, got, strict=True):
        assert m.data.dtype == np.float32 and np.array_equal(m.data, pose.data)
        assert m.t_capture_ns == from_perf_ns(pose.t_capture_ns)
        assert before <= m.t_publish_ns <= after
        assert m.latency_ns == {k: v - pose.t_capture_ns for k, v in pose.timings.items()}
    assert pub.sent["pose"] == 50 and pub.dropped["pose"] == 0
    assert sub.meta == META


def test_second_language_check_plain_zmq_json_numpy() -> None:
    """Decode with only the documented rules: no poseloop.stream code on the reading side."""
    pub = PosePublisher(META, endpoint=LOCAL)
    sock = raw_sub(pub.endpoint)
    try:
        connect(pub, lambda timeout: sock.poll(timeout * 1000))
        pose = make_pose(7, k=5)
        pub.send(pose)
        pub.send_event(7, "in_zone", "ON 3")
        received = {}
        while len(received) < 3 and sock.poll(1000):
            frames = sock.recv_multipart()
            received.setdefault(frames[0], frames)
    finally:
        pub.close()
        sock.close()
    _, header, payload = received[b"pose"]
    h = json.loads(header.decode("utf-8"))
    assert set(h) == {"v", "frame", "t_capture_ns", "t_publish_ns", "latency_ns", "shape", "dtype"}
    assert (h["v"], h["frame"], h["shape"], h["dtype"]) == (1, 7, [5, 3], "float32")
    assert payload == pose.data.astype("<f4").tobytes()  # little-endian, row-major
    assert np.array_equal(np.frombuffer(payload, "<f4").reshape(h["shape"]), pose.data)
    assert 0 <= h["t_publish_ns"] - h["t_capture_ns"] < 10**9  # one shared clock
    assert h["latency_ns"]["infer"] == 3_000_000
    event = json.loads(received[b"event"][1])
    assert 0 <= event.pop("t_ns") - h["t_publish_ns"] < 10**9
    assert event == {"v": 1, "frame": 7, "rule": "in_zone", "action": "ON 3"}
    _, header = received[b"meta"]
    assert json.loads(header) == {
        "v": 1,
        "bodyparts": ["snout", "leftear", "rightear", "tailbase"],
        "skeleton": [["snout", "leftear"], ["snout", "rightear"]],
        "model": "test.onnx",
        "image_size": [640, 480],
    }


def test_documented_example_runs_in_another_process() -> None:
    """The Python example in docs/wire-format.md, run as written, reads the stream."""
    code = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)[-1]
    pub = PosePublisher(META, endpoint=LOCAL)
    assert code.count("tcp://127.0.0.1:5555") == 1 and code.count("while True:") == 1
    code = code.replace("tcp://127.0.0.1:5555", pub.endpoint)
    code = code.replace("while True:", "for _ in range(100):")
    code += "import sys\nassert not [m for m in sys.modules if m.startswith('poseloop')]\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    sent = {}
    try:
        frame, deadline = 0, time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            sent[frame] = make_pose(frame)
            pub.send(sent[frame])
            if frame % 10 == 5:
                pub.set_meta(META)
                pub.send_event(frame, "in_zone", "ON 3")
            frame += 1
            time.sleep(0.002)
    finally:
        pub.close()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    poses = re.findall(r"^(\d+) ([\d.]+) ms (\{.*\})$", out, re.M)
    assert poses and "event" in out
    for frame, latency_ms, values in poses:
        assert 0 < float(latency_ms) < 1000
        rows = ast.literal_eval(values)
        assert list(rows.values()) == sent[int(frame)].data.tolist()
    assert list(ast.literal_eval(poses[-1][2])) == META.bodyparts  # named once meta arrived


def test_stalled_subscriber_never_blocks_the_publisher() -> None:
    pub = PosePublisher(META, endpoint=LOCAL, hwm=10)
    stalled = raw_sub(pub.endpoint, rcvhwm=10, rcvbuf=4096)  # connected, never reads
    try:
        time.sleep(0.3)
        pose = make_pose(0, k=20)
        slowest, start = 0, time.perf_counter()
        for _ in range(20_000):
            t = time.perf_counter()
            pub.send(pose)
            slowest = max(slowest, time.perf_counter() - t)
        total = time.perf_counter() - start
    finally:
        pub.close()
        stalled.close()
    assert pub.dropped["pose"] > 0
    assert pub.sent["pose"] == 20_000  # skip_subscriber: still handed to ZeroMQ for the others
    assert slowest < 0.1 and total < 15, (slowest, total)


@pytest.mark.parametrize("mode", ["skip_subscriber", "drop_message"])
def test_full_queue_policy(mode: str) -> None:
    """skip_subscriber: a reader gets every pose beside a stalled subscriber.
    drop_message: nobody gets a dropped message, and every loss is counted."""
    pub = PosePublisher(META, endpoint=LOCAL, hwm=20, on_full_queue=mode)
    stalled = raw_sub(pub.endpoint, rcvhwm=10, rcvbuf=4096)
    reader = raw_sub(pub.endpoint)
    reader.setsockopt(zmq.UNSUBSCRIBE, b"")
    reader.subscribe(b"pose")
    frames: list[int] = []
    try:
        time.sleep(0.3)
        for i in range(1000):
            pub.send(make_pose(i, k=500))  # big messages fill the stalled socket buffers soon
            while reader.poll(0 if i % 10 else 5):
                frames.append(json.loads(reader.recv_multipart()[1])["frame"])
        while reader.poll(200):
            frames.append(json.loads(reader.recv_multipart()[1])["frame"])
    finally:
        pub.close()
        stalled.close()
        reader.close()
    assert pub.dropped["pose"] > 0
    if mode == "skip_subscriber":
        assert frames == list(range(1000))
    else:
        assert len(frames) == 1000 - pub.dropped["pose"] == pub.sent["pose"]


def test_late_subscriber_gets_meta_within_a_second() -> None:
    pub = PosePublisher(META, endpoint=LOCAL)
    try:
        for i in range(30):  # a running loop nobody listens to yet
            pub.send(make_pose(i))
            time.sleep(0.01)
        sub = PoseSubscriber(pub.endpoint, topics=("meta",))
        start, got, i = time.monotonic(), None, 30
        while got is None and time.monotonic() - start < 3:
            pub.send(make_pose(i))
            i += 1
            got = sub.recv(0.005)
        waited = time.monotonic() - start
    finally:
        pub.close()
        sub.close()
    assert got == META and waited < 1.2
    assert sub.bodyparts(4) == META.bodyparts and sub.bodyparts(2) == ["bp0", "bp1"]


def test_events() -> None:
    with pub_sub() as (pub, sub):
        t = time.perf_counter_ns()
        pub.send_event(12, "in_zone", "PULSE 3 5", t_ns=t)
        pub.send_event(13, "left_zone", "OFF 3")
        events = [m for m in iter(lambda: sub.recv(0.3), None) if isinstance(m, EventMessage)]
    assert events[0] == EventMessage(12, "in_zone", "PULSE 3 5", from_perf_ns(t))
    assert (events[1].frame, events[1].rule, events[1].action) == (13, "left_zone", "OFF 3")
    assert pub.sent["event"] == 2


def test_subscriber_topics_filter_and_still_track_meta() -> None:
    pub = PosePublisher(META, endpoint=LOCAL)
    sub = PoseSubscriber(pub.endpoint, topics=("event",))
    try:
        connect(pub, lambda timeout: sub.meta is not None or sub.recv(timeout) is not None)
        pub.send(make_pose(1))
        pub.send_event(1, "r", "a")
        got = list(iter(lambda: sub.recv(0.3), None))
    finally:
        pub.close()
        sub.close()
    assert [type(m) for m in got] == [EventMessage] and sub.meta == META


def test_other_wire_version_is_a_clear_error() -> None:
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sub = PoseSubscriber(f"tcp://127.0.0.1:{port}")
    try:
        with pytest.raises(WireError, match="wire version 2"):
            for _ in range(100):
                sock.send_multipart([b"meta", b'{"v":2}'])
                sub.recv(0.05)
    finally:
        sock.close()
        sub.close()


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([b"pose"], "expected \\[topic, header"),
        ([b"pos", b"{}"], "unknown topic"),
        ([b"pose", b'{"v":1}'], "must have 3 frames"),
        ([b"event", b"not json"], "not JSON"),
        ([b"event", b'{"v":1,"frame":1,"rule":"r","t_ns":5}'], "no 'action'"),
        ([b"event", b'{"v":1,"frame":"1","rule":"r","action":"a","t_ns":5}'], "'frame'"),
        ([b"pose", b'{"v":1,"shape":[2,3],"dtype":"float32"}', b"\0" * 23], "24"),
        ([b"pose", b'{"v":1,"shape":[2,2],"dtype":"float32"}', b""], "\\[K, 3\\]"),
        ([b"pose", b'{"v":1,"shape":[1,3],"dtype":"float64"}', b"\0" * 24], "float32"),
        ([b"meta", b'{"v":1,"bodyparts":[],"skeleton":[["a"]],"model":"m","image_size":[1,2]}'],
         "skeleton"),
    ],
)
def test_malformed_messages_name_the_problem(frames: list[bytes], error: str) -> None:
    with pytest.raises(WireError, match=error):
        decode(frames)


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("tcp://127.0.0.1:5555", True),
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
    with pytest.raises(ConfigError, match="field 'curve'.*allow_insecure"):
        PosePublisher(META, endpoint="tcp://0.0.0.0:0")
    config = StreamConfig(endpoint="tcp://0.0.0.0:0", allow_insecure=True)
    PosePublisher.from_config(config, META).close()


def test_bad_keys_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'curve.client_public_keys'.*neither"):
        PosePublisher(META, curve=CurveConfig(client_public_keys=["nope"]))
    zmq.auth.create_certificates(tmp_path, "client")
    config = CurveConfig(
        server_secret_key=str(tmp_path / "client.key"), client_public_keys=[str(tmp_path)]
    )
    with pytest.raises(ConfigError, match="'curve.server_secret_key'.*no secret key"):
        PosePublisher(META, curve=config)


def test_curve_admits_only_listed_clients(tmp_path: Path) -> None:
    for folder, name in (("server", "server"), ("clients", "rig")):
        (tmp_path / folder).mkdir()
        zmq.auth.create_certificates(tmp_path / folder, name)
    curve = CurveConfig(
        server_secret_key=str(tmp_path / "server" / "server.key_secret"),
        client_public_keys=[str(tmp_path / "clients")],
    )
    pub = PosePublisher(META, endpoint="tcp://0.0.0.0:0", curve=curve)
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
            pub.send(make_pose(i))
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
    pub = PosePublisher(META, endpoint=LOCAL)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(listen(pub.endpoint, count=20)))
    thread.start()
    try:
        i, deadline = 0, time.monotonic() + 10
        while thread.is_alive() and time.monotonic() < deadline:
            if i % 10 == 0:
                pub.set_meta(META)
                pub.send_event(i, "in_zone", "ON 3")
            pub.send(make_pose(i))
            i += 1
            time.sleep(0.005)
    finally:
        pub.close()
        thread.join(5)
    out = capsys.readouterr().out
    assert result == [20]
    assert "meta model test.onnx  image 640x480  bodyparts snout, leftear" in out
    pose_lines = [line for line in out.splitlines() if line.startswith("frame")]
    assert len(pose_lines) == 20 and "event frame" in out
    named = r"frame \d+  latency [\d.]+ ms  snout [\d.]+ [\d.]+ [\d.]+  leftear"
    assert re.match(named, pose_lines[-1])
