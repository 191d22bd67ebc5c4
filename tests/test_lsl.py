"""Lab Streaming Layer sink: real outlets here, a real pylsl inlet in another process.

Nothing leaves this machine: the sink's default network (``machine``) gives liblsl
``LOOPBACK_CONFIG``, and the inlet process uses the same configuration, so discovery goes
to 127.0.0.1 only and the data connection is made over loopback.

:class:`LslInlet` is the helper for engine-level tests: start it (it resolves the streams
as soon as they exist), wait until it is ``ready``, run, then ``finish`` with the expected
counts to get every sample, time stamp and channel label it received.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pylsl
import pytest
from pydantic import ValidationError

from poseloop.errors import ConfigError
from poseloop.realtime.sinks import SINKS
from poseloop.realtime.types import ActionRecord, CameraInfo, Pose, Session
from poseloop.stream import lsl
from poseloop.stream.lsl import LOOPBACK_CONFIG, LslConfig, LslSink, channel_labels

SESSION = Session(
    bodyparts=("snout", "leftear", "tailbase"),
    individuals=("mouse1", "mouse2"),
    unique_bodyparts=("top",),
    skeleton=(("snout", "leftear"),),
    multi_animal=True,
    model="ma.onnx",
    cameras=(CameraInfo(320, 240, 50.0),),
)

_INLET = """
import json, sys
import pylsl

config, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
pylsl.set_config_content(config)
inlets = {}
for name in names:
    found = pylsl.resolve_byprop("name", name, 1, 60.0)
    if not found:
        sys.exit(f"no LSL stream named {name!r}")
    inlets[name] = pylsl.StreamInlet(found[0], max_buflen=360)
    inlets[name].open_stream(timeout=10)
print("ready", flush=True)
expected = json.loads(sys.stdin.readline())  # the parent says how many samples to expect
result = {}
for name, inlet in inlets.items():
    info = inlet.info(timeout=10)
    channel, labels = info.desc().child("channels").child("channel"), []
    while not channel.empty():
        labels.append(channel.child_value("label"))
        channel = channel.next_sibling()
    samples, stamps = [], []
    while len(samples) < expected.get(name, 0):
        sample, stamp = inlet.pull_sample(timeout=5.0)
        if sample is None:
            break  # nothing for 5 s: report what arrived
        chunk, times = inlet.pull_chunk(timeout=0.0, max_samples=4096)  # and all there is
        samples += [sample, *chunk]
        stamps += [stamp, *times]
    result[name] = {"samples": samples, "timestamps": stamps, "labels": labels,
                    "type": info.type(), "source_id": info.source_id(),
                    "channel_count": info.channel_count(), "srate": info.nominal_srate()}
with open(out, "w") as f:
    json.dump(result, f)
"""


@dataclass
class Received:
    """What an inlet got from one stream."""

    samples: list
    timestamps: np.ndarray
    labels: list[str]
    type: str
    source_id: str
    channel_count: int
    srate: float


class LslInlet:
    """pylsl inlets for the named streams, in another process (loopback-only LSL).

    The process resolves each stream (waiting for it to appear), connects, then buffers
    everything pushed from then on; :meth:`finish` returns what arrived per stream.
    """

    def __init__(self, *names: str, workdir: Path, config: str = LOOPBACK_CONFIG) -> None:
        self.out = workdir / f"inlet-{os.getpid()}-{time.monotonic_ns()}.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _INLET, config, str(self.out), *names],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until every stream is resolved and connected."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while not line and time.monotonic() < deadline and self.proc.poll() is None:
            line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"the inlet process did not connect: {line!r}"

    def finish(self, expected: dict[str, int], timeout: float = 60) -> dict[str, Received]:
        """Tell the inlet how many samples each stream sent; what it received, per stream."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(expected) + "\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout) == 0, "the inlet process failed"
        data = json.loads(self.out.read_text())
        return {name: Received(**{**got, "timestamps": np.array(got["timestamps"])})
                for name, got in data.items()}

    def close(self) -> None:
        """Kill the process if it is still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> LslInlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_pose(i: int, session: Session = SESSION) -> Pose:
    rng = np.random.default_rng(i)
    n, k, _ = session.shape
    points = (rng.random((n, k, 3)) * [320, 240, 1]).astype(np.float32)
    unique = (rng.random((len(session.unique_bodyparts), 3)) * [320, 240, 1]).astype(np.float32)
    return Pose(points, i, time.perf_counter_ns(), ids=np.arange(n, dtype=np.int64),
                unique=unique)


def test_an_inlet_in_another_process_receives_every_sample(tmp_path: Path) -> None:
    sink = SINKS["lsl"].factory(LslConfig(name="poseloop-test"))
    assert isinstance(sink, LslSink)
    sink.open(SESSION)
    inlet = LslInlet("poseloop-test", "poseloop-test_markers", workdir=tmp_path)
    try:
        inlet.wait_ready()
        assert sink.wait_for_consumers(10)
        poses, events, slowest = [], [], 0.0
        for i in range(500):  # the inlet does not read yet: a stalled consumer
            poses.append(make_pose(i))
            t = time.perf_counter()
            sink.pose(poses[-1])
            slowest = max(slowest, time.perf_counter() - t)
            if i % 100 == 50:
                events.append(ActionRecord(i, "in_zone", "stim:PULSE 1 5", time.perf_counter_ns()))
                sink.event(events[-1])
        got = inlet.finish({"poseloop-test": 500, "poseloop-test_markers": len(events)})
    finally:
        sink.close()
        inlet.close()
    stream = got["poseloop-test"]
    assert len(stream.samples) == sink.sent["pose"] == 500
    assert (stream.type, stream.source_id, stream.srate) == ("MoCap", "poseloop:poseloop-test",
                                                             50.0)
    assert stream.channel_count == 2 * 3 * 3 + 3 == len(stream.labels)
    assert stream.labels[:4] == ["mouse1_snout_x", "mouse1_snout_y", "mouse1_snout_likelihood",
                                 "mouse1_leftear_x"]
    assert stream.labels[9] == "mouse2_snout_x"
    assert stream.labels[-3:] == ["single_top_x", "single_top_y", "single_top_likelihood"]
    expected = np.array([np.concatenate([p.points.ravel(), p.unique.ravel()]) for p in poses
                         if p.unique is not None])
    assert np.array_equal(np.array(stream.samples, np.float32), expected)  # x, y, p exact
    stamps = np.array([(p.t_capture_ns + sink.offset_ns) / 1e9 for p in poses])
    assert np.array_equal(stream.timestamps, stamps)  # the capture time, on LSL's clock
    assert slowest < 0.05, slowest
    markers = got["poseloop-test_markers"]
    assert [json.loads(s[0]) for s in markers.samples] == [
        {"frame": e.frame, "rule": e.rule, "action": e.action, "animals": []} for e in events]
    assert np.array_equal(markers.timestamps, [(e.t_ns + sink.offset_ns) / 1e9 for e in events])
    assert sink.sent["event"] == len(events) and sink.dropped == 0 and sink.fatal is None


def test_open_waits_for_a_recorder_that_was_started_first(tmp_path: Path) -> None:
    """``wait_for_consumers_s``: an inlet started before the run gets the first frame."""
    session = Session(bodyparts=("snout",), cameras=(CameraInfo(64, 48, 10.0),))
    with LslInlet("poseloop-wait", workdir=tmp_path) as inlet:
        sink = LslSink(LslConfig(name="poseloop-wait", markers=False, wait_for_consumers_s=60))
        sink.open(session)  # returns once the inlet is connected
        try:
            poses = [make_pose(i, session) for i in range(3)]
            for pose in poses:
                sink.pose(pose)
            got = inlet.finish({"poseloop-wait": 3})["poseloop-wait"]
        finally:
            sink.close()
    assert got.labels == ["snout_x", "snout_y", "snout_likelihood"] and got.srate == 10.0
    assert np.array_equal(np.array(got.samples, np.float32), [p.points.ravel() for p in poses])


def test_capture_times_are_on_lsl_clock() -> None:
    """perf_counter and liblsl's clock are one clock here (Linux CLOCK_MONOTONIC)."""
    measured = lsl.measure_offset_ns(pylsl.local_clock)
    assert abs(measured) < 1_000_000, measured  # < 1 ms: the same clock
    if sys.platform.startswith("linux"):
        assert lsl._same_clock()
    t = time.perf_counter_ns()
    assert abs(pylsl.local_clock() - (t + measured) / 1e9) < 0.01


def test_single_animal_channel_labels() -> None:
    session = Session(bodyparts=("snout", "tail"))
    labels = [label for label, *_ in channel_labels(session)]
    assert labels == ["snout_x", "snout_y", "snout_likelihood",
                      "tail_x", "tail_y", "tail_likelihood"]
    kinds = {kind for _, _, _, kind, _ in channel_labels(session)}
    assert kinds == {"PositionX", "PositionY", "Confidence"}


RIG_3D = Session(
    bodyparts=("snout", "tail"),
    unique_bodyparts=("top",),
    cameras=(CameraInfo(64, 48, 25.0, name="left"), CameraInfo(64, 48, 25.0, name="right")),
    dims=3,
)


def test_3d_channels_are_x_y_z_likelihood_in_mm() -> None:
    labels = channel_labels(RIG_3D)
    assert [label for label, *_ in labels] == [
        "snout_x", "snout_y", "snout_z", "snout_likelihood",
        "tail_x", "tail_y", "tail_z", "tail_likelihood",
        "single_top_x", "single_top_y", "single_top_z", "single_top_likelihood"]
    assert [(kind, unit) for _, _, _, kind, unit in labels[:4]] == [
        ("PositionX", "mm"), ("PositionY", "mm"), ("PositionZ", "mm"),
        ("Confidence", "probability")]
    assert {unit for *_, unit in channel_labels(Session(bodyparts=("a",)))} == {
        "pixels", "probability"}


def test_an_inlet_receives_3d_samples(tmp_path: Path) -> None:
    sink = LslSink(LslConfig(name="poseloop-3d", markers=False))
    sink.open(RIG_3D)
    inlet = LslInlet("poseloop-3d", workdir=tmp_path)
    try:
        inlet.wait_ready()
        assert sink.wait_for_consumers(10)
        poses = []
        for i in range(5):
            points = np.array([[[i, 2.5, -3.0, 0.9], [np.nan, np.nan, np.nan, 0.2]]],
                              np.float32)
            poses.append(Pose(points, i, time.perf_counter_ns(),
                              unique=np.array([[10, 20, 30, 1]], np.float32),
                              triangulation=np.zeros((1, 2, 2), np.float32)))
            sink.pose(poses[-1])
        with pytest.raises(ValueError, match=r"unique bodyparts of frame 5 have shape \(1, 3\)"):
            sink.pose(Pose(points, 5, 0, unique=np.zeros((1, 3), np.float32)))
        got = inlet.finish({"poseloop-3d": 5})["poseloop-3d"]
    finally:
        sink.close()
        inlet.close()
    assert got.channel_count == 12 and got.labels[:4] == ["snout_x", "snout_y", "snout_z",
                                                          "snout_likelihood"]
    expected = [np.concatenate([p.points.ravel(), p.unique.ravel()]) for p in poses
                if p.unique is not None]
    assert np.array_equal(np.array(got.samples, np.float32), expected, equal_nan=True)


def _own_sockets() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _bound(table: str, inodes: set[str]) -> list[tuple[str, int]]:
    """(hex address, port) of this process's sockets in /proc/net/<table>."""
    rows = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
    found = []
    for row in rows:
        fields = row.split()
        if fields[9] in inodes:
            address, port = fields[1].rsplit(":", 1)
            found.append((address, int(port, 16)))
    return found


@pytest.mark.skipif(not Path("/proc/net/udp").exists(), reason="needs Linux /proc/net")
def test_discovery_listens_on_loopback_only() -> None:
    """By default nothing on the network can discover the streams, and there is no IPv6."""
    sink = LslSink(LslConfig(name="poseloop-scope"))
    sink.open(Session(bodyparts=("snout",)))
    try:
        inodes = _own_sockets()
        udp = _bound("udp", inodes)
        ipv6 = _bound("udp6", inodes) + _bound("tcp6", inodes)
    finally:
        sink.close()
    responders = [address for address, port in udp if port == 16571]  # [ports] MulticastPort
    assert responders and set(responders) == {"0100007F"}  # 127.0.0.1
    assert not [p for _, p in ipv6 if 16571 <= p <= 16604]


def test_network_lab_and_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="needs network: lab"):
        LslConfig(config_file="lsl_api.cfg")
    monkeypatch.setattr(lsl, "_applied", LOOPBACK_CONFIG)  # this process started LSL so
    with pytest.raises(ConfigError, match="once per process"):
        LslSink(LslConfig(network="lab"))
    bad = tmp_path / "lsl_api.cfg"
    bad.write_text("[multicast\nResolveScope = site\n")
    with pytest.raises(ConfigError, match="'config_file'.*lsl_api.cfg"):
        LslSink(LslConfig(network="lab", config_file=str(bad)))
    LslSink(LslConfig()).close()  # the same configuration again is fine


def test_missing_pylsl_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pylsl", None)  # import pylsl raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'poseloop\[lsl\]'"):
        LslSink(LslConfig())


def test_a_pose_of_another_shape_is_named() -> None:
    sink = LslSink(LslConfig(name="poseloop-shape", markers=False))
    sink.open(Session(bodyparts=("snout", "tail")))
    try:
        with pytest.raises(ValueError, match="frame 3 .*\\(1, 2, 3\\)"):
            sink.pose(Pose(np.zeros((1, 3, 3), np.float32), 3, 0))
    finally:
        sink.close()


def test_engine_streams_every_recorded_frame_to_an_inlet(synthetic_onnx: Path,
                                                         tmp_path: Path) -> None:
    """The live engine with the ``lsl:`` section: an inlet in another process receives one
    sample per recorded row, stamped with the frame's capture time on LSL's clock."""
    import pandas as pd

    from poseloop.realtime.engine import Engine

    cfg = {"model": str(synthetic_onnx), "runner": {"intra_threads": 1},
           "camera": {"kind": "synthetic", "fps": 100.0, "paced": True, "frames": 120},
           "record": {"dir": str(tmp_path / "rec")},
           "lsl": {"name": "poseloop-engine", "markers": False, "wait_for_consumers_s": 60}}
    with LslInlet("poseloop-engine", workdir=tmp_path) as inlet:
        with Engine.from_config(cfg) as engine:  # open waits for the inlet to connect
            stats = engine.run()
            got = inlet.finish({"poseloop-engine": stats.frames})["poseloop-engine"]
    paths = engine.sink("recorder").paths
    poses = pd.read_csv(paths["poses_csv"], header=[0, 1, 2], index_col=0)
    timing = pd.read_csv(paths["timing_csv"])
    assert stats.frames > 0 and len(got.samples) == len(poses) == len(timing) == stats.frames
    np.testing.assert_allclose(np.array(got.samples), poses.to_numpy(), rtol=1e-5, atol=1e-3)
    offset = lsl.measure_offset_ns(pylsl.local_clock)
    np.testing.assert_allclose(got.timestamps, (timing["t_capture_ns"] + offset) / 1e9,
                               atol=1e-3)
    assert got.srate == 100.0 and got.labels[:3] == ["snout_x", "snout_y", "snout_likelihood"]
