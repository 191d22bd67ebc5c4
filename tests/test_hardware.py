"""Serial devices over real pseudo-terminals: protocol, emulator, disconnects, firmware."""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import serial

from poseloop.config import validate
from poseloop.errors import ConfigError
from poseloop.hardware import protocol
from poseloop.hardware.actuators import EMULATOR, EmulatedDevice, make_actuators
from poseloop.hardware.config import DeviceConfig, OutputConfig
from poseloop.hardware.emulator import DeviceEmulator
from poseloop.hardware.protocol import Reply
from poseloop.hardware.serial_device import SerialDevice
from poseloop.hardware.simavr import (
    Simulation,
    build_firmware,
    measure_trigger_latency,
    wait_until,
)
from poseloop.realtime.types import Actuator

SEND_LIMIT_S = 0.005  # no send() may take longer, not counting waits for a CPU


def run_delays() -> dict[str, int]:
    """Per thread of this process: nanoseconds spent runnable but waiting for a CPU."""
    delays: dict[str, int] = {}
    tasks = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat", "rb") as f:
                delays[task] = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass  # the thread just ended, or no schedstat here
    return delays


class SendTimer:
    """Times send() calls less the time this process's threads waited for a CPU: on a loaded
    machine the scheduler can hold the calling thread, or a thread holding the GIL, for
    milliseconds, which says nothing about send() itself."""

    def __init__(self) -> None:
        self.walls: list[int] = []
        self.times: list[int] = []

    def send(self, device: SerialDevice, command: str) -> None:
        before = run_delays()
        t = time.perf_counter_ns()
        device.send(command)
        wall = time.perf_counter_ns() - t
        after = run_delays()
        waited = sum(after[task] - before[task] for task in before.keys() & after.keys())
        self.walls.append(wall)
        self.times.append(wall - waited)

    def check(self) -> None:
        slowest = max(self.times)
        assert slowest < SEND_LIMIT_S * 1e9, (
            f"slowest send {slowest / 1e6:.2f} ms, not counting waits for a CPU"
        )
        assert max(self.walls) < 0.25e9, f"slowest send {max(self.walls) / 1e6:.1f} ms wall time"


@pytest.fixture
def emulator() -> Iterator[DeviceEmulator]:
    with DeviceEmulator() as emu:
        yield emu


@pytest.fixture
def open_device() -> Iterator[Callable[..., SerialDevice]]:
    opened: list[SerialDevice] = []

    def make(*args: object, **kwargs: object) -> SerialDevice:
        opened.append(SerialDevice(*args, **kwargs).open())  # type: ignore[arg-type]
        return opened[-1]

    yield make
    for device in opened:
        device.close()


# -- protocol ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("ON 3", b"ON 3\n"),
        ("OFF 0", b"OFF 0\n"),
        ("PULSE 3 5", b"PULSE 3 5\n"),
        ("PULSE 255 60000", b"PULSE 255 60000\n"),
        ("PING", b"PING\n"),
        ("0x4C", b"L"),
        ("0x4c 0x01 0xFF", b"L\x01\xff"),
    ],
)
def test_encode(text: str, wire: bytes) -> None:
    assert protocol.encode(text) == wire


@pytest.mark.parametrize(
    "text",
    [
        "on 3",
        "ON  3",
        "ON 3 ",
        "ON",
        "ON -1",
        "ON 256",
        "PULSE 3",
        "PULSE 3 0",
        "PULSE 3 60001",
        "WATCHDOG",
        "WATCHDOG 60001",
        "WATCHDOG -5",
        "BLINK 3",
        "",
        "0x4",
        "0x4C0x01",
        "0xZZ",
    ],
)
def test_invalid_commands(text: str) -> None:
    with pytest.raises(ValueError):
        protocol.encode(text)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"PONG\n", Reply("PONG")),
        (b"OK ON 3\r\n", Reply("OK", "ON 3")),
        (b"ERR bad command\n", Reply("ERR", "bad command")),
    ],
)
def test_parse_reply(line: bytes, reply: Reply) -> None:
    assert protocol.parse_reply(line) == reply
    assert protocol.parse_reply(reply.encode()) == reply


@pytest.mark.parametrize("line", [b"PONGX\n", b"hello\n", b"\n"])
def test_parse_reply_rejects_noise(line: bytes) -> None:
    with pytest.raises(ValueError):
        protocol.parse_reply(line)


# -- config -----------------------------------------------------------------------------


def test_config_fills_channel_commands() -> None:
    cfg = validate(
        DeviceConfig, {"name": "stim", "port": "/dev/ttyACM0", "outputs": {"laser": {"channel": 3}}}
    )
    assert (cfg.outputs["laser"].on, cfg.outputs["laser"].off) == ("ON 3", "OFF 3")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"outputs": {"laser": {"on": "BLINK 3", "off": "OFF 3"}}}, "field 'outputs.laser.on'"),
        ({"outputs": {"laser": {"channel": 3, "off": "OFF 300"}}}, "field 'outputs.laser.off'"),
        ({"outputs": {"laser": {"on": "ON 3"}}}, "field 'outputs.laser'"),
        ({"all_off": ["OFF 1", "off 2"]}, "field 'all_off.1'"),
        ({"protocol": "raw", "outputs": {"laser": {"on": "ON 3", "off": "0x4F"}}}, "laser.on"),
        ({"protocol": "raw", "outputs": {"laser": {"channel": 3}}}, "laser: protocol 'raw'"),
        ({"protocol": "serial"}, "field 'protocol'"),
        ({"retry_s": 0}, "field 'retry_s'"),
        ({"protocol": "raw", "ping_s": 1}, "ping_s needs protocol 'line'"),
    ],
)
def test_invalid_config_names_the_field(extra: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        validate(DeviceConfig, {"name": "stim", "port": "/dev/ttyACM0", **extra}, "exp.yaml")
    assert str(info.value).startswith("exp.yaml: ")


# -- device and emulator ------------------------------------------------------------------


def test_commands_reach_the_emulator(emulator: DeviceEmulator, open_device) -> None:
    device = open_device("stim", emulator.port, outputs={"laser": OutputConfig(channel=4)})
    assert device.connected, device.status
    assert device.send("ON 1") and device.send("PULSE 2 5000") and device.switch("laser", True)
    assert device.send(b"OFF 1\n")
    assert emulator.wait_for(4, timeout=5)
    assert [r.data for r in emulator.received] == [b"ON 1", b"PULSE 2 5000", b"ON 4", b"OFF 1"]
    states = emulator.outputs
    assert (states[1], states[2], states[4]) == (False, True, True)
    assert device.counters.sent == 4 and device.counters.dropped == 0


def test_err_replies_are_counted(emulator: DeviceEmulator, open_device) -> None:
    device = open_device("stim", emulator.port)
    device.send(b"HELLO\n")
    device.send("ON 9")  # the emulator has 8 channels
    assert wait_until(lambda: device.counters.rejected == 2)
    assert device.last_reply_error == "channel out of range"


def test_ping_round_trip(emulator: DeviceEmulator, open_device) -> None:
    device = open_device("stim", emulator.port)
    rtt = device.ping(timeout=5)
    assert rtt is not None and 0 < rtt < 1
    assert [r.data for r in emulator.received] == [b"PING"]


def test_background_ping(emulator: DeviceEmulator, open_device) -> None:
    device = open_device("stim", emulator.port, ping_s=0.02)
    assert emulator.wait_for(3, timeout=5)
    assert {r.data for r in emulator.received} == {b"PING"}
    assert wait_until(lambda: device.rtt_ns is not None)


def test_watchdog_turns_outputs_off_when_the_loop_stops(emulator: DeviceEmulator,
                                                        open_device) -> None:
    device = open_device("stim", emulator.port, watchdog_ms=150)
    assert emulator.wait_for(1, timeout=5)
    assert emulator.received[0].data == b"WATCHDOG 150"  # armed at open
    device.send("ON 1")
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # a loop running at 50 FPS
        device.keepalive()
        time.sleep(0.02)
    assert emulator.outputs[1] is True and emulator.watchdog_trips == 0
    beats = [r for r in emulator.received if r.data == b"WATCHDOG 150"]
    assert len(beats) >= 7  # fed (and re-armed) ~3 times per period while the loop runs
    assert device.counters.sent == 1  # heartbeats are counted apart from commands
    assert 0 < len(beats) <= device.counters.heartbeats <= len(beats) + 1  # one in flight
    emulator.reset()  # the board reboots behind the open port and forgets its watchdog
    assert emulator.watchdog_ms == 0
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        device.keepalive()
        time.sleep(0.02)
    assert emulator.watchdog_ms == 150  # re-armed by the next heartbeat
    before = len(emulator.received)
    device.send("ON 1")
    assert emulator.wait_for(before + 1, timeout=2) and emulator.outputs[1] is True
    # The loop hangs: no keepalive, the heartbeat stops, the device switches off alone.
    assert wait_until(lambda: emulator.outputs[1] is False, timeout=2)
    assert emulator.watchdog_trips == 1
    before = len(emulator.received)
    device.close()
    assert emulator.wait_for(before + 2, timeout=2)
    assert [r.data for r in emulator.received][-2:] == [b"OFF 1", b"WATCHDOG 0"]


def test_watchdog_needs_the_line_protocol() -> None:
    with pytest.raises(ConfigError, match="watchdog_ms needs protocol 'line'"):
        validate(DeviceConfig, {"name": "d", "port": "/dev/null", "protocol": "raw",
                                "watchdog_ms": 500})
    with pytest.raises(ConfigError, match="field 'watchdog_ms'"):
        validate(DeviceConfig, {"name": "d", "port": "/dev/null", "watchdog_ms": 5})


def test_raw_bytes_mode() -> None:
    # DeepLabCut-Live's Teensy laser: 'O' + uint16 frequency, width, duration; 'X' stops
    on, off = "0x4F 0x32 0x00 0x05 0x00 0x00 0x00", "0x58"
    with DeviceEmulator(protocol="raw") as emu:
        cfg = validate(
            DeviceConfig,
            {
                "name": "teensy",
                "port": emu.port,
                "protocol": "raw",
                "outputs": {"laser": {"on": on, "off": off}},
            },
        )

        def received() -> bytes:
            return b"".join(r.data for r in emu.received)

        with SerialDevice.from_config(cfg) as device:
            device.switch("laser", True)
            device.send("0x01")
            assert wait_until(lambda: received() == b"O" + struct.pack("<HHH", 50, 5, 0) + b"\x01")
            with pytest.raises(ValueError, match="hex"):
                device.send("ON 1")
        assert wait_until(lambda: received().endswith(b"\x01X"))  # close() stopped the laser


def test_device_survives_unplug_and_replug(
    emulator: DeviceEmulator, open_device, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="poseloop.hardware")
    device = open_device("stim", emulator.port, retry_s=0.05)
    device.send("ON 1")
    assert emulator.wait_for(1, timeout=5)

    emulator.disappear()
    timer = SendTimer()
    for _ in range(200):  # ~0.2 s of a 1 kHz loop while the device is gone
        timer.send(device, "PULSE 5 1")
        time.sleep(0.001)
    assert wait_until(lambda: not device.connected)
    assert "disconnected" in device.status and emulator.port in device.status
    assert device.counters.errors == 1 and device.counters.dropped > 0

    emulator.reappear()  # a new /dev/pts behind the same symlink
    deadline = time.monotonic() + 5
    while not device.connected and time.monotonic() < deadline:  # the loop keeps going
        timer.send(device, "ON 2")
        time.sleep(0.001)
    assert device.connected, device.status
    device.send("ON 3")
    assert wait_until(lambda: b"ON 3" in [r.data for r in emulator.received])
    assert b"PULSE 5 1" not in [r.data for r in emulator.received]  # nothing stale re-sent
    assert device.counters.reconnects == 1
    timer.check()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("disconnected" in m for m in messages) == 1, messages
    assert sum("reconnected" in m for m in messages) == 1, messages


def test_missing_port_at_startup(tmp_path: Path, open_device) -> None:
    port = str(tmp_path / "ttyACM9")
    t = time.perf_counter()
    device = open_device("stim", port, retry_s=0.05)
    assert time.perf_counter() - t < 1
    assert not device.connected
    assert device.status.startswith(f"stim: disconnected from {port} (cannot open")
    assert "retrying every 0.05 s" in device.status
    timer = SendTimer()
    timer.send(device, "ON 1")
    timer.check()
    assert device.counters.dropped == 1

    with DeviceEmulator(link=port) as emu:  # the device is plugged in later
        assert wait_until(lambda: device.connected), device.status
        device.send("ON 2")
        assert emu.wait_for(1, timeout=5)
        assert [r.data for r in emu.received] == [b"ON 2"]


def test_close_turns_every_output_off(emulator: DeviceEmulator, open_device) -> None:
    device = open_device("stim", emulator.port)
    for command in ("ON 1", "ON 3", "PULSE 5 5000", "OFF 3"):
        device.send(command)
    assert emulator.wait_for(4, timeout=5)
    assert [ch for ch, on in emulator.outputs.items() if on] == [1, 5]
    device.close()
    assert device.status.startswith("stim: closed")
    assert emulator.wait_for(6, timeout=5)
    assert [r.data for r in emulator.received[4:]] == [b"OFF 1", b"OFF 5"]
    assert not any(emulator.outputs.values())


def test_close_sends_configured_all_off(emulator: DeviceEmulator, open_device) -> None:
    device = open_device("stim", emulator.port, all_off=["OFF 0", "OFF 7"])
    device.send("ON 7")
    device.close()
    assert emulator.wait_for(3, timeout=5)
    assert [r.data for r in emulator.received] == [b"ON 7", b"OFF 0", b"OFF 7"]


def test_full_os_buffer_drops_instead_of_waiting(open_device) -> None:
    master, slave = os.openpty()  # a device that stops reading
    try:
        device = open_device("stim", os.ttyname(slave))
        timer = SendTimer()
        for _ in range(4000):
            timer.send(device, "PULSE 1 100")
        timer.check()
        assert device.counters.dropped > 0
        assert device.counters.sent + device.counters.dropped == 4000

        data = bytearray()  # the device reads again: the pending remainder is completed
        expected = device.counters.sent * len(b"PULSE 1 100\n")
        deadline = time.monotonic() + 5
        while len(data) < expected and time.monotonic() < deadline:
            data += os.read(master, 65536)
        assert data == b"PULSE 1 100\n" * device.counters.sent  # no command torn
    finally:
        os.close(master)
        os.close(slave)


def test_emulator_in_its_own_process(tmp_path: Path, open_device) -> None:
    log = tmp_path / "arrivals.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "poseloop.hardware.emulator", "--log", str(log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = proc.stdout.readline().strip()
        device = open_device("stim", port)
        assert device.ping(timeout=5) is not None
        device.send("ON 2")
        device.close()
    finally:
        proc.stdin.close()  # end of input stops it
        assert proc.wait(timeout=10) == 0
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [bytes.fromhex(data) for _, data in lines] == [b"PING", b"ON 2", b"OFF 2"]
    assert all(int(t) > 0 for t, _ in lines)


# -- actuators from config ------------------------------------------------------------------


def test_port_emulator_is_a_device_with_its_own_emulator() -> None:
    configs = [validate(DeviceConfig, {"name": "stim", "port": EMULATOR,
                                       "outputs": {"laser": {"channel": 2}}}),
               validate(DeviceConfig, {"name": "board", "port": "/dev/ttyACM9"})]
    stim, board = make_actuators(configs)
    assert isinstance(stim, Actuator) and isinstance(board, Actuator)
    assert isinstance(stim, EmulatedDevice) and type(board) is SerialDevice
    with pytest.raises(RuntimeError, match="emulator starts when the device is opened"):
        _ = stim.emulator  # building opens nothing
    board.close()  # never opened: nothing to release
    stim.open()
    try:
        emulator = stim.emulator
        assert stim.port == emulator.port and os.path.realpath(emulator.port).startswith("/dev/")
        assert stim.connected, stim.status
        assert stim.send("PULSE 2 5000")
        assert emulator.wait_for(1, timeout=5)
        assert [r.data for r in emulator.received] == [b"PULSE 2 5000"]
        assert emulator.outputs[2] is True
        assert stim.ping(timeout=5) is not None  # the emulator's replies come back
        stim.keepalive()
    finally:
        stim.close()
    assert [r.data for r in emulator.received] == [b"PULSE 2 5000", b"PING", b"OFF 2"]
    assert not any(emulator.outputs.values())  # off after close, and still readable
    assert not os.path.exists(emulator.port)  # the emulator is stopped
    assert stim.dropped == 0 and stim.counters.sent == 2  # PULSE and PING
    stim.close()  # twice is harmless


def test_emulated_raw_device_speaks_raw() -> None:
    (device,) = make_actuators([validate(DeviceConfig, {
        "name": "teensy", "port": EMULATOR, "protocol": "raw",
        "outputs": {"laser": {"on": "0x4F 0x01", "off": "0x58"}}})])
    assert isinstance(device, EmulatedDevice)
    with device:
        device.switch("laser", True)
        assert device.emulator.protocol == "raw"
    assert b"".join(r.data for r in device.emulator.received) == b"O\x01X"


def test_dropped_counts_undelivered_commands(tmp_path: Path, open_device) -> None:
    device = open_device("stim", str(tmp_path / "ttyACM9"), retry_s=10)
    assert not device.send("ON 1") and not device.send("ON 2")
    assert device.dropped == device.counters.dropped == 2
    assert isinstance(device, Actuator)


# -- firmware -------------------------------------------------------------------------------

needs_avr_gcc = pytest.mark.skipif(
    shutil.which("avr-gcc") is None or shutil.which("make") is None,
    reason="avr-gcc not installed (apt-get install gcc-avr avr-libc)",
)
SIMAVR_LIB = Path("/usr/include/simavr/parts/uart_pty.h")
needs_simavr = pytest.mark.skipif(
    not SIMAVR_LIB.is_file() or shutil.which("cc") is None,
    reason="simavr library not installed (apt-get install libsimavr-dev libsimavrparts1)",
)
needs_arduino_mk = pytest.mark.skipif(
    not Path("/usr/share/arduino/Arduino.mk").is_file(),
    reason="arduino-mk not installed (apt-get install arduino-mk arduino-core-avr)",
)

# What the firmware must answer, line for line, exactly as the emulator does.
EXCHANGE = [
    b"PING",
    b"WATCHDOG 0",
    b"WATCHDOG 60001",
    b"ON 1",
    b"PULSE 2 20",
    b"OFF 1\r",
    b"ON 9",
    b"ON 256",
    b"PULSE 2 0",
    b"on 1",
    b"X" * 40,
    b"PING",
]


def exchange(port: str, lines: list[bytes]) -> list[bytes]:
    with serial.Serial(port, 115200, timeout=5) as link:
        link.reset_input_buffer()
        replies = []
        for line in lines:
            link.write(line + b"\n")
            replies.append(link.readline())
    return replies


@pytest.fixture(scope="module")
def avr_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plain AVR C firmware and, where simavr's library is here, the harness."""
    build = tmp_path_factory.mktemp("firmware")
    build_firmware(build, "all", *(["sim"] if SIMAVR_LIB.is_file() else []))
    return build


@pytest.fixture(scope="module")
def sketch_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Arduino sketch built with arduino-mk and the Arduino AVR core."""
    build = tmp_path_factory.mktemp("sketch")
    build_firmware(build, "sketch")
    return build / "sketch"


@needs_avr_gcc
def test_firmware_builds_as_plain_avr_c(avr_build: Path) -> None:
    assert (avr_build / "poseloop_device.hex").stat().st_size > 0


@needs_avr_gcc
@needs_arduino_mk
def test_sketch_builds_with_the_arduino_core(sketch_build: Path) -> None:
    assert next(sketch_build.glob("*.hex")).stat().st_size > 0


@needs_avr_gcc
@needs_simavr
@pytest.mark.parametrize("build", ["avr", pytest.param("sketch", marks=needs_arduino_mk)])
def test_firmware_in_simavr(request: pytest.FixtureRequest, avr_build: Path, build: str) -> None:
    """The firmware answers exactly as the emulator does, times PULSE itself, and a
    SerialDevice drives it: PING round trip, ON, and OFF at close."""
    if build == "sketch":
        elf = next(request.getfixturevalue("sketch_build").glob("*.elf"))
    else:
        elf = avr_build / "poseloop_device.elf"
    with Simulation(avr_build / "uart_pty_sim", elf) as sim:
        replies = exchange(sim.port, EXCHANGE)
        assert replies[:5] == [b"PONG\n", b"OK WATCHDOG 0\n", b"ERR bad command\n",
                               b"OK ON 1\n", b"OK PULSE 2 20\n"]
        assert wait_until(lambda: sim.pulse_ms(2) is not None), sim.pins
        # timed on the device to within its clock's tick (Arduino's millis() steps by
        # 1.024 ms and now and then skips a value)
        assert 18.5 <= sim.pulse_ms(2) <= 21.5

        device = SerialDevice("sim", sim.port).open()
        assert device.ping(timeout=5) is not None
        device.send("ON 3")
        assert wait_until(lambda: sim.level(3) == 1)
        device.close()
        assert wait_until(lambda: sim.level(3) == 0)

        # The watchdog: after WATCHDOG 30 and ON 4, 30 ms of silence turn output 4 off.
        time.sleep(0.3)  # the reply to close()'s OFF 3 comes and goes first
        assert exchange(sim.port, [b"WATCHDOG 30", b"ON 4"]) == [b"OK WATCHDOG 30\n",
                                                                 b"OK ON 4\n"]
        assert wait_until(lambda: sim.pulse_ms(4) is not None), sim.pins
        assert 28.0 <= sim.pulse_ms(4) <= 32.0  # to within a tick of the ms clock
    with DeviceEmulator() as emu:
        assert replies == exchange(emu.port, EXCHANGE)


@needs_avr_gcc
@needs_simavr
def test_firmware_times_exposure_to_output_in_simavr(avr_build: Path) -> None:
    """Trigger timing against the simulation's truth: a simulated camera strobes A0 every
    20 ms; PULSE commands are traced as a rule's would be, each for the frame 'captured'
    just before; the firmware's exposure -> output latency must equal the simulated strobe
    -> pin edge time."""
    check = measure_trigger_latency(avr_build, triggers=8)
    assert len(check.measured_us) == 8
    # the strobe interrupt and the stamp after the pin write: a few us on a 16 MHz AVR
    assert np.abs(check.error_us).max() < 20, check.error_us
    # The matched exposure is the last strobe before the command was sent, or (the
    # simulation's clock rate wanders with the host's load, so mapping host times to it is
    # only good to a few ms) the one before; the emulator test checks the matching exactly.
    assert max(check.later_strobes) <= 1, check


def test_a_long_start_before_the_loop_does_not_trip_the_watchdog(
        emulator: DeviceEmulator, open_device) -> None:
    """Between open and the loop's first keepalive (a run's warm-up: seconds, minutes for a
    TensorRT build) the device is kept fed; once the loop has run and stops, it trips."""
    device = open_device("stim", emulator.port, watchdog_ms=100)
    time.sleep(0.6)  # six watchdog periods of warm-up
    assert emulator.watchdog_ms == 100 and emulator.watchdog_trips == 0
    device.keepalive()  # the loop's first frame ... and its last
    assert wait_until(lambda: emulator.watchdog_trips == 1, timeout=2)
