"""Trigger timing: exposure strobe -> device output, on the device's clock, into the events
table (the firmware in simavr is checked against its simulated truth in test_hardware)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseloop.errors import ConfigError
from poseloop.hardware import protocol
from poseloop.hardware.config import DeviceConfig
from poseloop.hardware.emulator import DeviceEmulator
from poseloop.hardware.serial_device import SerialDevice
from poseloop.hardware.trigger_timing import ClockMap, ClockSample, TriggerTimer, Unwrapper
from poseloop.realtime.builder import build_engine
from poseloop.realtime.cameras.synthetic import SyntheticCamera
from poseloop.realtime.engine_config import EngineConfig
from poseloop.realtime.processors.kalman import KalmanConfig, KalmanPredictor
from poseloop.realtime.types import ActionRecord, CameraInfo, Frame


def wrapped(us: float) -> float:
    """A difference of two stamps of the 32-bit microsecond clock."""
    return (us + 2**31) % 2**32 - 2**31


def record(frame: int, command: str = "PULSE 1 5") -> ActionRecord:
    return ActionRecord(frame, "rule", f"stim:{command}", frame)


def test_unwrapper_follows_the_32_bit_clock_across_its_wrap() -> None:
    unwrap = Unwrapper()
    top = (1 << 32) - 100
    assert [unwrap(v) for v in (top, top + 50, 20, top + 90, 500)] == [
        top, top + 50, (1 << 32) + 20, top + 90, (1 << 32) + 500]


def test_clock_map_fits_offset_and_rate_from_the_quick_round_trips() -> None:
    clock = ClockMap()
    rate, offset = 1000.05, 7e9  # ns per device us: a crystal 50 ppm slow
    rng = np.random.default_rng(0)
    for i in range(30):
        dev = 10_000 + i * 50_000
        mid = offset + rate * dev
        half = 200_000 if i % 3 else 5_000_000  # every third round trip is slow
        skew = rng.uniform(-0.9, 0.9) * half  # where inside it the device read its clock
        clock.add(ClockSample(int(mid - half + skew), int(mid + half + skew), dev))
    for dev in (0, 800_000, 3_000_000):
        assert clock.to_host_ns(dev) == pytest.approx(offset + rate * dev, abs=250_000)
        assert clock.to_device_us(int(offset + rate * dev)) == pytest.approx(dev, abs=250)
    assert clock.uncertainty_us == pytest.approx(200, rel=0.01)


def test_timer_pairs_stamps_with_commands_and_exposures() -> None:
    timer = TriggerTimer()
    # device clock = host clock / 1000 + 5000 us, round trips of 100 us
    for t in (1_000_000, 2_000_000, 3_000_000):
        timer.on_time(t - 50_000, t + 50_000, t // 1000 + 5000)
    for n, host_ns in enumerate((1_000_000, 11_000_000, 21_000_000)):  # strobes every 10 ms
        timer.on_strobe(n, host_ns // 1000 + 5000)
    a, b, c = record(1), record(2, "ON 2"), record(3)
    timer.trace(a, 14_000_000, "PULSE 1 5")  # frame exposed at 11 ms, captured at 14
    timer.trace(b, 15_000_000, "ON 2")  # its reply never comes
    timer.trace(c, 24_000_000, "PULSE 1 5")
    timer.on_stamp("WATCHDOG 300", 99)  # not traced: ignored
    timer.on_stamp("PULSE 1 5", 16_500 + 5000)
    assert timer.pending == 2
    timer.on_stamp("PULSE 1 5", 26_000 + 5000)  # b was skipped: lost on the wire
    done = list(timer.drain())
    assert timer.drain() == () and timer.pending == 0
    assert [d.frame for d in done] == [1, 2, 3]
    assert done[0].t_exposure_us == 11_000 + 5000 and done[0].latency_us == 5500
    assert math.isnan(done[1].latency_us) and math.isnan(done[1].t_output_us)
    assert done[2].t_exposure_us == 21_000 + 5000 and done[2].latency_us == 5000
    timer.on_strobe(7, 50)  # gaps in the strobe count are counted
    assert timer.strobes_missed == 4


def test_timer_without_a_clock_or_strobes_gives_the_output_stamp_only() -> None:
    timer = TriggerTimer()
    timer.trace(record(1), 10, "PULSE 1 5")
    timer.on_stamp("PULSE 1 5", 1234)
    (done,) = timer.drain()
    assert done.t_output_us == 1234 and math.isnan(done.t_exposure_us)
    assert math.isnan(done.latency_us)


def test_protocol_and_emulator_speak_timing_like_the_firmware() -> None:
    assert protocol.parse_reply(b"OK PULSE 1 5 @4294967295\n").us == 4294967295
    assert protocol.parse_reply(b"S 12 345\n") == protocol.Reply("S", n=12, us=345)
    with DeviceEmulator() as emu, SerialDeviceLink(emu.port) as link:
        assert link.ask(b"ON 1") == b"OK ON 1\n"
        assert link.ask(b"TIMING 1") == b"OK TIMING 1\n"
        stamped = protocol.parse_reply(link.ask(b"PULSE 1 5"))
        assert stamped.text == "PULSE 1 5" and stamped.us is not None
        us = emu.strobe()
        assert protocol.parse_reply(link.readline()) == protocol.Reply("S", n=0, us=us)
        now = protocol.parse_reply(link.ask(b"TIME")).us
        assert now is not None and 0 <= now - us < 1_000_000


class SerialDeviceLink:
    """A plain pyserial exchange with a device: one line out, one line back."""

    def __init__(self, port: str) -> None:
        import serial

        self.link = serial.Serial(port, 115200, timeout=2)

    def __enter__(self) -> SerialDeviceLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.close()

    def ask(self, line: bytes) -> bytes:
        self.link.write(line + b"\n")
        return self.link.readline()

    def readline(self) -> bytes:
        return self.link.readline()


def test_timing_needs_the_line_protocol() -> None:
    with pytest.raises(ValueError, match="timing needs protocol 'line'"):
        DeviceConfig(name="x", port="/dev/null", protocol="raw", timing=True)


class StrobedCamera(SyntheticCamera):
    """The synthetic scene, strobing the emulated board as each frame is exposed."""

    device: SerialDevice | None = None
    strobes: dict[int, int] = {}

    def open(self) -> CameraInfo:
        self.strobes = {}
        return super().open()

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        if self.frames is not None and self._index >= self.frames:
            return None
        pacer, self._pacer = self._pacer, None
        if pacer is not None:
            pacer.wait()  # the frame's time comes: exposure starts
        if self.device is not None:
            self.strobes[self._index] = self.device.emulator.strobe()  # type: ignore[attr-defined]
        try:
            return super().read(out)
        finally:
            self._pacer = pacer


def test_events_table_gets_each_triggers_exposure_to_output_latency(tmp_path: Path) -> None:
    """The live engine, a rule firing on every frame, an emulated board with timing: each
    event row carries the device-clock latency from its frame's strobe to its output, which
    matches the strobe the camera gave that frame and the arrival the board logged."""
    from poseloop.synthetic_model import synthetic_model

    cfg = EngineConfig.model_validate({
        "model": str(synthetic_model()),
        "camera": {"kind": "synthetic", "width": 160, "height": 120},
        "rules": [{"name": "always", "mode": "level",
                   "when": {"type": "likelihood", "part": "snout", "p": 0.0},
                   "actions": [{"device": "stim", "command": "PULSE 1 2"}]}],
        "devices": [{"name": "stim", "port": "emulator", "timing": True, "sync_s": 0.05}],
        "processors": [{"type": "kalman", "latency_ms": "measured"}],
        "record": {"dir": str(tmp_path), "name": "timed"},
    })
    camera = StrobedCamera(160, 120, fps=50.0, frames=40)
    engine = build_engine(cfg, camera)
    with engine:
        device = engine.actuators["stim"]
        assert isinstance(device, SerialDevice) and device.timer is not None
        camera.device = device
        deadline = time.monotonic() + 5
        while device.timer.clock.span_us < 200_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = engine.run()
        measured = engine.trigger_latency_ns
    assert stats.frames == 40 and stats.events == 40
    events = pd.read_csv(next(tmp_path.glob("timed*_events.csv")))
    assert list(events.columns[-3:]) == ["t_exposure_us", "t_output_us", "latency_us"]
    timed = events.dropna(subset=["latency_us"])
    assert len(timed) >= 36, events  # the last may close before their stamps came back
    arrivals = [r.t_ns // 1000 for r in device.emulator.received if r.data.startswith(b"PULSE")]
    for row in timed.itertuples():
        assert wrapped(row.t_exposure_us - camera.strobes[row.frame]) == 0
        assert row.latency_us == row.t_output_us - row.t_exposure_us
        assert 0 < row.latency_us < 1_000_000
    # the stamps are the board's arrival times, in order (the emulator stamps on execution)
    out = timed.t_output_us.to_numpy()
    assert np.all(np.diff(out) > 0)
    assert min(abs(wrapped(a - out[0])) for a in arrivals) < 1000
    assert measured is not None
    assert measured == pytest.approx(np.median(timed.latency_us[-100:]) * 1000, rel=0.5)


def test_kalman_takes_its_horizon_from_the_measured_latency() -> None:
    kalman = KalmanPredictor(KalmanConfig(latency_ms="measured", pcutoff=0.5,
                                          measurement_noise=0.01, process_noise=1e-3))
    pose = np.zeros((1, 1, 3), np.float32)
    out = None
    for i in range(60):  # 100 px/s to the right, frames every 10 ms
        pose[0, 0] = (i, 0, 1)
        out = kalman.process(pose, t_capture_ns=i * 10_000_000, latency_ns=0,
                             trigger_latency_ns=50_000_000).copy()
    assert out is not None and out[0, 0, 0] == pytest.approx(59 + 5, abs=0.2)
    with pytest.raises(ConfigError):
        KalmanPredictor(latency_ms=-1, pcutoff=0.5)
