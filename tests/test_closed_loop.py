"""Rules -> devices, stream and recorder through the real engine: real ptys, real sockets."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from poseloop.errors import ConfigError
from poseloop.hardware.emulator import DeviceEmulator
from poseloop.realtime.engine import Engine
from poseloop.stream.subscriber import PoseSubscriber
from poseloop.stream.wire import EventMessage

ALWAYS = {"type": "likelihood", "part": "snout", "p": 0.0}


def _cfg(model: Path, tmp_path: Path, port: str, frames: int, fps: float = 200.0,
         **extra) -> dict:
    cfg = {
        "model": str(model),
        "camera": {"kind": "synthetic", "fps": fps, "frames": frames},
        "runner": {"intra_threads": 1},
        "rules": [{"name": "always", "when": ALWAYS, "mode": "level",
                   "actions": [{"device": "stim", "command": "PULSE 1 5"}]}],
        "devices": [{"name": "stim", "port": port, "retry_s": 0.05}],
        "record": {"dir": str(tmp_path / "rec")},
    }
    cfg.update(extra)
    return cfg


def test_trigger_reaches_device_stream_and_recorder(synthetic_onnx: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    events: list[EventMessage] = []
    stop = threading.Event()

    def listen() -> None:
        sub = PoseSubscriber(endpoint, topics=("event",))
        while not stop.is_set():
            msg = sub.recv(timeout=0.05)
            if isinstance(msg, EventMessage):
                events.append(msg)
        sub.close()

    with DeviceEmulator() as emulator:
        cfg = _cfg(synthetic_onnx, tmp_path, emulator.port, frames=40,
                   stream={"endpoint": endpoint})
        engine = Engine.from_config(cfg)
        thread = threading.Thread(target=listen, daemon=True)
        with engine:
            thread.start()
            time.sleep(0.5)
            stats = engine.run()
        assert emulator.wait_for(stats.events, timeout=2.0)
        pulses = [r for r in emulator.received if r.data == b"PULSE 1 5"]
        stop.set()
        thread.join(2)
    assert stats.events == stats.frames > 0
    assert len(pulses) == stats.events
    assert len(events) >= stats.events - 5 and events[0].action == "stim:PULSE 1 5"
    log = pd.read_csv(next((tmp_path / "rec").glob("*_events.csv")))
    assert len(log) == stats.events and set(log["rule"]) == {"always"}


def test_device_vanishes_and_returns_without_stopping_the_loop(synthetic_onnx: Path,
                                                               tmp_path: Path) -> None:
    with DeviceEmulator() as emulator:
        engine = Engine.from_config(_cfg(synthetic_onnx, tmp_path, emulator.port, frames=150,
                                         fps=50.0))
        seen = []

        def unplug(pose, frame) -> None:
            seen.append(frame.index)
            if len(seen) == 10:
                emulator.disappear()
            if len(seen) == 25:
                emulator.reappear()

        with engine:
            stats = engine.run(on_pose=unplug)
            device = engine.actuators["stim"]
            assert emulator.wait_for(1, timeout=2.0)
        after = len(emulator.received)
    assert stats.stopped_by == "end of stream"
    assert stats.frames + stats.camera_dropped == 150
    assert device.counters.reconnects >= 1 and device.counters.dropped > 0
    assert after > 0  # commands arrived after the device came back
    poses = pd.read_hdf(next((tmp_path / "rec").glob("*.h5")))
    assert len(poses) == stats.frames  # no pose record lost while the device was away


def test_invalid_rule_names_the_field(synthetic_onnx: Path, tmp_path: Path) -> None:
    cfg = _cfg(synthetic_onnx, tmp_path, "/dev/null", frames=1)
    cfg["rules"][0]["when"] = {"type": "zone", "part": "nose", "circle": {"cx": 1, "cy": 1, "r": 2}}
    with pytest.raises(ConfigError, match=r"rules\[0\]\.when\.part: 'nose' is not a bodypart"):
        Engine.from_config(cfg)
    cfg["rules"][0]["when"] = {"type": "zone", "part": "snout",
                               "circle": {"cx": 1, "cy": 1, "r": -2}}
    with pytest.raises(ConfigError, match="r"):
        Engine.from_config(cfg)
    cfg["rules"][0]["when"] = ALWAYS
    cfg["rules"][0]["actions"] = [{"device": "laser", "command": "ON 1"}]
    with pytest.raises(ConfigError, match="laser"):
        Engine.from_config(cfg)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_signal_flushes_recording_and_turns_outputs_off(synthetic_onnx: Path, tmp_path: Path,
                                                        signame: str) -> None:
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    import yaml

    with DeviceEmulator() as emulator:
        cfg = _cfg(synthetic_onnx, tmp_path, emulator.port, frames=100_000, fps=30.0)
        cfg["rules"][0]["actions"] = [{"device": "stim", "command": "ON 1"}]
        cfg["devices"][0]["outputs"] = {"laser": {"channel": 1}}
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.Popen([sys.executable, "-m", "poseloop.cli", "run", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert emulator.wait_for(3, timeout=60.0), proc.communicate(timeout=5)
        os.kill(proc.pid, getattr(signal, signame))
        time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):  # impatient: a second one while closing
            os.kill(proc.pid, getattr(signal, signame))
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped by interrupted" in out
        assert emulator.wait_for(len(emulator.received), timeout=1.0)
        assert any(r.data == b"OFF 1" for r in emulator.received)
        assert emulator.outputs[1] is False
    poses = pd.read_hdf(next((tmp_path / "rec").glob("*.h5")))
    timing = pd.read_csv(next((tmp_path / "rec").glob("*_timing.csv")))
    frames = int(out.split(" frames in")[0].split()[-1])
    assert len(poses) == len(timing) == frames > 0  # every processed frame, flushed
