"""Faults during a live run (issue 6): each stops the run cleanly or is survived as the config
says, and what was recorded before stays intact and readable. Real parts throughout: ONNX
Runtime, ZeroMQ on 127.0.0.1, serial devices on pseudo-terminals, files on disk.

Elsewhere: a serial device vanishing and returning (test_closed_loop, test_hardware), a
subscriber that stops reading (test_stream), SIGINT/SIGTERM (test_closed_loop), a recorder
whose files become unwritable or whose disk fills up (test_recorder).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from poseloop.closed_loop import ANY_PORT, bound_endpoint
from poseloop.hardware.emulator import DeviceEmulator
from poseloop.realtime.cameras import SyntheticCamera
from poseloop.realtime.engine import Engine
from poseloop.realtime.types import Frame
from poseloop.stream.subscriber import PoseSubscriber
from poseloop.stream.wire import PoseMessage

ALWAYS = {"type": "likelihood", "part": "snout", "p": 0.0}


def _config(model: Path, tmp_path: Path, port: str, **extra) -> dict:
    cfg = {
        "model": str(model),
        "camera": {"kind": "synthetic", "fps": 100.0, "width": 160, "height": 120},
        "runner": {"intra_threads": 1},
        "rules": [{"name": "on", "when": ALWAYS, "mode": "edge",
                   "actions": [{"device": "stim", "command": "ON 1"}]}],
        "devices": [{"name": "stim", "port": port, "retry_s": 0.05}],
        "record": {"dir": str(tmp_path / "rec"), "flush_s": 0.2},
    }
    cfg.update(extra)
    return cfg


def _recorded(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rec = tmp_path / "rec"
    poses = pd.read_hdf(next(rec.glob("*.h5")))
    timing = pd.read_csv(next(rec.glob("*_timing.csv")))
    return poses, timing


class StallingCamera(SyntheticCamera):
    """Delivers ``good`` frames, then blocks in ``read`` like a camera whose cable came out."""

    def __init__(self, good: int) -> None:
        super().__init__(160, 120, fps=100.0)
        self.good = good
        self._closed = threading.Event()

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        if self._index >= self.good:
            self._closed.wait(30)
            return None
        return super().read(out)

    def close(self) -> None:
        self._closed.set()
        super().close()


def test_camera_stall_stops_cleanly_with_everything_recorded(synthetic_onnx: Path,
                                                             tmp_path: Path) -> None:
    with DeviceEmulator() as emulator:
        cfg = _config(synthetic_onnx, tmp_path, emulator.port, camera_timeout_s=0.5)
        engine = Engine.from_config(cfg, camera=StallingCamera(good=40))
        with engine:
            stats = engine.run()
        assert emulator.wait_for(2, timeout=2.0)
        assert emulator.received[-1].data == b"OFF 1" and emulator.outputs[1] is False
    assert stats.stopped_by == "camera error"
    assert "SyntheticCamera" in stats.errors[0] and "no frame for 0.5 s after frame 39" \
        in stats.errors[0]
    poses, timing = _recorded(tmp_path)
    assert len(poses) == len(timing) == stats.frames > 0
    assert poses.index[-1] == 39 and stats.frames + stats.camera_dropped == 40


def test_camera_end_of_file_stops_cleanly_with_everything_recorded(synthetic_onnx: Path,
                                                                   tmp_path: Path) -> None:
    with DeviceEmulator() as emulator:
        cfg = _config(synthetic_onnx, tmp_path, emulator.port)
        cfg["camera"]["frames"] = 50
        with Engine.from_config(cfg) as engine:
            stats = engine.run()
        assert emulator.wait_for(2, timeout=2.0) and emulator.outputs[1] is False
    assert stats.stopped_by == "end of stream" and not stats.errors
    assert stats.frames + stats.camera_dropped == stats.captured == 50
    poses, timing = _recorded(tmp_path)
    assert poses.index.tolist() == timing["frame"].tolist() and len(poses) == stats.frames
    assert timing["dropped"].sum() == stats.camera_dropped


_SUBSCRIBER = """
import sys
from poseloop.stream.subscriber import PoseSubscriber
sub = PoseSubscriber(sys.argv[1], topics=("pose",))
while True:
    msg = sub.recv()
    print(msg.frame, flush=True)
"""


def test_subscriber_crash_is_survived_and_a_new_one_is_served(synthetic_onnx: Path,
                                                              tmp_path: Path) -> None:
    with DeviceEmulator() as emulator:
        cfg = _config(synthetic_onnx, tmp_path, emulator.port, stream={"endpoint": ANY_PORT})
        cfg["camera"]["frames"] = 500
        engine = Engine.from_config(cfg)
        with engine:
            endpoint = bound_endpoint(engine)
            result = {}
            loop = threading.Thread(target=lambda: result.update(stats=engine.run()))
            crashing = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, endpoint],
                                        stdout=subprocess.PIPE, text=True)
            loop.start()
            for _ in range(20):  # it receives poses ...
                assert crashing.stdout.readline(), "the subscriber got nothing"
            crashing.kill()  # ... and dies without closing its socket
            crashing.wait(5)
            got = []
            with PoseSubscriber(endpoint, topics=("pose",)) as second:
                while loop.is_alive() or got == []:
                    msg = second.recv(timeout=0.5)
                    if isinstance(msg, PoseMessage):
                        got.append(msg.frame)
                    elif not loop.is_alive():
                        break
            loop.join(30)
    stats = result["stats"]
    assert stats.stopped_by == "end of stream" and not stats.errors
    assert len(got) > 10 and got == sorted(got)  # the new subscriber is served
    assert engine.sink("stream").sent["pose"] == stats.frames  # every pose was published
    poses, _ = _recorded(tmp_path)
    assert len(poses) == stats.frames


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("on_error", ["stop", "continue"])
def test_recorder_write_error_stops_or_continues_as_configured(
        synthetic_onnx: Path, tmp_path: Path, on_error: str) -> None:
    """The disk "fills up" (a file-size limit: writes fail with EFBIG) during a real run."""
    with DeviceEmulator() as emulator:
        cfg = _config(synthetic_onnx, tmp_path, emulator.port)
        cfg["camera"].update(fps=200.0, frames=1600)
        cfg["record"]["on_error"] = on_error
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(cfg))
        done = subprocess.run([sys.executable, "-m", "poseloop.cli", "run", str(path)],
                              capture_output=True, text=True, timeout=120,
                              preexec_fn=_limit_file_size(60_000))
        assert emulator.wait_for(2, timeout=2.0) and emulator.outputs[1] is False
    rec = tmp_path / "rec"
    assert "File too large" in done.stderr and str(rec) in done.stderr
    if on_error == "stop":
        assert done.returncode == 1, done.stderr
        assert "stopped by recorder error" in done.stdout
    else:
        assert done.returncode == 0, done.stderr
        assert "stopped by end of stream" in done.stdout
    processed = int(done.stdout.split("frames in")[0].split()[-1])
    poses_csv = [p for p in rec.glob("*.csv") if not p.stem.endswith(("_timing", "_events"))]
    poses = pd.read_csv(poses_csv[0], header=[0, 1, 2], index_col=0)
    timing = pd.read_csv(next(rec.glob("*_timing.csv")))
    for table in (poses, timing):  # whole rows, in order, as far as the disk allowed
        frames = table.index if table is poses else timing["frame"]
        assert 0 < len(table) <= processed
        assert frames.is_monotonic_increasing and frames.is_unique
    assert len(poses) < processed  # the poses file is the one that hit the limit
    assert not poses.isna().any().any() and not timing["publish"].isna().any()
    assert os.path.getsize(next(rec.glob("*_timing.csv"))) <= 60_000
    if on_error == "continue":
        assert processed > 1000  # the run went on
    else:
        assert processed < 1000  # the run stopped at the error


def test_a_killed_run_leaves_whole_csv_rows_and_recover_writes_the_h5(
        synthetic_onnx: Path, tmp_path: Path) -> None:
    """SIGKILL (or a power cut) cannot be caught: the fsync-ed .csv files are the record, and
    the device's watchdog turns the output off by itself."""
    from poseloop.cli import main

    with DeviceEmulator() as emulator:
        cfg = _config(synthetic_onnx, tmp_path, emulator.port)
        cfg["devices"][0]["watchdog_ms"] = 300
        cfg["record"]["video"] = True
        cfg["camera"].update(width=320, height=240)
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.Popen([sys.executable, "-m", "poseloop.cli", "run", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        rec = tmp_path / "rec"
        deadline = time.monotonic() + 60
        video = rec / "session.mkv"
        try:
            while not list(rec.glob("*_timing.csv")) or \
                    len(pd.read_csv(next(rec.glob("*_timing.csv")))) < 100 or \
                    not video.exists() or video.stat().st_size < 600_000:  # FFmpeg flushed
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)
            assert emulator.outputs[1] is True and emulator.watchdog_trips == 0
        finally:  # a failed check must not leave the run going (it would load the machine)
            proc.kill()
            proc.wait(10)
        deadline = time.monotonic() + 3
        while emulator.outputs[1] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert emulator.outputs[1] is False and emulator.watchdog_trips == 1
    assert not list(rec.glob("*.h5"))  # the .h5 is written at the end, which never came
    poses_csv = [p for p in rec.glob("*.csv") if not p.stem.endswith(("_timing", "_events"))][0]
    poses = pd.read_csv(poses_csv, header=[0, 1, 2], index_col=0)
    assert len(poses) >= 100 and poses.index.is_monotonic_increasing and poses.index.is_unique
    assert not poses.isna().any().any()  # whole rows only
    import cv2

    capture = cv2.VideoCapture(str(video))  # Matroska plays without its end
    frames = 0
    while capture.grab():
        frames += 1
    capture.release()
    assert frames > 0
    assert main(["recover", str(rec)]) == 0
    h5 = pd.read_hdf(poses_csv.with_suffix(".h5"))
    assert list(h5.columns.names) == ["scorer", "bodyparts", "coords"]
    np.testing.assert_allclose(h5.to_numpy(), poses.to_numpy())
    assert main(["recover", str(rec)]) == 0  # again: kept, not rewritten
    assert main(["recover", str(tmp_path / "nothing")]) == 2


class Exploding:
    """A DeepLabCut-Live style processor with a bug that shows at frame 20."""

    def __init__(self) -> None:
        self.calls = 0

    def process(self, pose, **kwargs):
        self.calls += 1
        if self.calls == 20:
            raise ZeroDivisionError("bug in a user processor")
        return pose


def test_a_bug_in_user_code_still_closes_everything(synthetic_onnx: Path, tmp_path: Path) -> None:
    with DeviceEmulator() as emulator:
        cfg = _config(synthetic_onnx, tmp_path, emulator.port,
                      processors=[{"type": "python", "target": f"{__name__}:Exploding"}])
        engine = Engine.from_config(cfg)
        with pytest.raises(ZeroDivisionError), engine:
            engine.run()
        assert emulator.wait_for(2, timeout=2.0) and emulator.outputs[1] is False
    poses, timing = _recorded(tmp_path)
    assert len(poses) == len(timing) == 19  # the frames before the bug, flushed at close


def test_stop_from_another_thread_ends_the_run_after_the_frame_in_hand(
        synthetic_onnx: Path, tmp_path: Path) -> None:
    """Engine.stop() is what the CLI's signal handlers call: no exception lands in a stage,
    so the last frame is processed, recorded and counted exactly once. It also wakes a
    loop that is waiting for a frame from a slow camera."""
    with DeviceEmulator() as emulator:
        cfg = _config(synthetic_onnx, tmp_path, emulator.port)
        cfg["camera"]["fps"] = 2.0  # the loop spends its time waiting for frames
        engine = Engine.from_config(cfg)
        with engine:
            timer = threading.Timer(1.25, engine.stop)  # between frames 2 (1.0 s) and 3
            timer.start()
            stats = engine.run()
        assert emulator.wait_for(2, timeout=2.0) and emulator.outputs[1] is False
    assert stats.stopped_by == "interrupted" and not stats.errors
    assert stats.frames == 3  # woken while waiting: frame 3 (1.5 s) was never processed
    poses, timing = _recorded(tmp_path)
    assert poses.index.tolist() == timing["frame"].tolist() == [0, 1, 2]
