"""The reference firmware in simavr: a board on a pseudo-terminal, without a board.

:func:`build_firmware` builds the plain AVR C firmware and the simulation harness
(``firmware/sim/uart_pty_sim.c``; needs gcc-avr, avr-libc and libsimavr-dev);
:class:`Simulation` runs it with its UART on a pty and collects, on the simulation's clock,
every output pin change and, with a strobe period, every rising edge of a simulated camera
strobe on A0 — the truth :func:`measure_trigger_latency` holds the firmware's own exposure
-> output stamps against. Tests and ``benchmarks/trigger_latency.py`` use it.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poseloop.hardware.serial_device import SerialDevice
from poseloop.realtime.types import ActionRecord

FIRMWARE = Path(__file__).parent / "firmware"


def build_firmware(build: Path, *targets: str) -> None:
    """``make`` the firmware's ``targets`` (all, sim, sketch) into ``build``; RuntimeError
    with make's output if it fails."""
    result = subprocess.run(["make", "-C", str(FIRMWARE), f"BUILD={build}", *targets],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"building the firmware failed:\n{result.stdout}{result.stderr}")


class Simulation:
    """The firmware running in simavr, its UART on a pty (``port``), its pin changes
    collected in ``pins``; with ``strobe_us``, a simulated camera strobe on A0 every
    ``strobe_us`` and its rising edges in ``strobes`` (n -> simulated ms)."""

    def __init__(self, harness: Path, elf: Path, strobe_us: int = 0) -> None:
        self.proc = subprocess.Popen(
            [str(harness), str(elf), *([str(strobe_us)] if strobe_us else [])],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.pins: list[tuple[int, int, float]] = []  # channel, level, simulated ms
        self.strobes: dict[int, float] = {}  # strobe edge n -> simulated ms
        self.port = ""
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, *rest = line.split() or [""]
            if word == "PTY":
                self.port = rest[0]
                self._ready.set()
            elif word == "OUT":
                self.pins.append((int(rest[0]), int(rest[1]), float(rest[2])))
            elif word == "STROBE":
                self.strobes[int(rest[0])] = float(rest[1])

    def __enter__(self) -> Simulation:
        if not self._ready.wait(10):
            self.__exit__()
            raise RuntimeError("the simavr harness printed no PTY line")
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()

    def level(self, channel: int) -> int:
        return next((lv for ch, lv, _ in reversed(self.pins) if ch == channel), 0)

    def pulse_ms(self, channel: int) -> float | None:
        """Simulated length of the channel's first high period, if it has ended."""
        edges = [(lv, ms) for ch, lv, ms in self.pins if ch == channel]
        rise = next((i for i, (lv, _) in enumerate(edges) if lv == 1), None)
        if rise is None or rise + 1 >= len(edges):
            return None
        return edges[rise + 1][1] - edges[rise][1]


@dataclass
class TriggerCheck:
    """Each traced trigger: the firmware's exposure -> output latency, the simulation's truth
    (strobe edge -> pin edge, simulated time) and the strobe edge it was matched to."""

    measured_us: np.ndarray
    truth_us: np.ndarray
    matched: list[int]
    later_strobes: list[int]  # strobe edges between the matched one and the output

    @property
    def error_us(self) -> np.ndarray:
        return self.measured_us - self.truth_us


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` every 2 ms until it holds (True) or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def measure_trigger_latency(build: Path, triggers: int = 8, strobe_us: int = 20_000,
                            seed: int = 0) -> TriggerCheck:
    """Run the firmware in simavr with a strobe; a SerialDevice with ``timing`` fires
    ``triggers`` traced ``PULSE 1 2`` at random phases of the strobe, each for the frame
    'captured' just before; returns what the firmware measured against the truth."""
    rng = np.random.default_rng(seed)
    with Simulation(build / "uart_pty_sim", build / "poseloop_device.elf", strobe_us) as sim:
        device = SerialDevice("sim", sim.port, timing=True, sync_s=0.05).open()
        timer = device.timer
        assert timer is not None
        timed: list[ActionRecord] = []
        try:
            # simavr's clock runs faster than the host's: let the map fit that rate
            if not wait_until(lambda: timer.clock.span_us > 500_000, 10):
                raise RuntimeError("no clock samples from the simulated board")
            for i in range(triggers):
                time.sleep(rng.uniform(0.005, 0.005 + 2 * strobe_us / 1e6))
                record = ActionRecord(i, "rule", "sim:PULSE 1 2", time.perf_counter_ns())
                device.send("PULSE 1 2", trace=(record, time.perf_counter_ns()))
                wait_until(lambda: timer.pending == 0, 5)
                timed += device.timed()
        finally:
            device.close()
        strobe_n = {us: n for n, us in timer.recent_strobes()}
        rises = [ms for ch, level, ms in sim.pins if ch == 1 and level == 1]
        truth, matched, later = [], [], []
        for record, rise_ms in zip(timed, rises, strict=True):
            n = strobe_n[int(record.t_exposure_us)]
            matched.append(n)
            truth.append((rise_ms - sim.strobes[n]) * 1000)
            later.append(sum(1 for m, ms in sim.strobes.items() if m > n and ms < rise_ms))
    return TriggerCheck(np.array([r.latency_us for r in timed]), np.array(truth), matched,
                        later)
