"""Serial output latency over a pseudo-terminal: the cost of send() and send-to-arrival.

For every command: how long ``SerialDevice.send()`` took, and the time from the call to
the command's arrival in the device emulator (``perf_counter_ns`` on both sides; it is
CLOCK_MONOTONIC, so the stamps compare across processes), with the emulator in a process
of its own (as a real device is) and in a thread of this process; then PING to PONG round
trips. A bare ``os.write`` on the same kind of port is the baseline that shows what the
pty itself costs on this machine. A pty has no baud rate: a real board adds its USB polling
(1 ms at full speed, 125 µs at high speed) and ~87 µs per byte on a 115200 baud UART.
Prints one table.

    python benchmarks/serial_latency.py [-n 5000] [--gap-us 200] [--spin]
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from poseloop.hardware.emulator import DeviceEmulator
from poseloop.hardware.serial_device import SerialDevice

WIRE = (b"ON 1\n", b"OFF 1\n")
Rows = dict[str, np.ndarray]


def pause(seconds: float, spin: bool) -> None:
    """Sleep (the GIL is free, as while ONNX Runtime runs) or spin (a loop busy in Python)."""
    if not spin:
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def timed_sends(
    send: Callable[[bytes], object], n: int, gap: Callable[[], None]
) -> tuple[list, list]:
    """Send n commands; return each call's start and duration in ns."""
    starts, costs = [], []
    for i in range(n):
        t0 = time.perf_counter_ns()
        send(WIRE[i % 2])
        costs.append(time.perf_counter_ns() - t0)
        starts.append(t0)
        gap()
    return starts, costs


@contextmanager
def emulator_process() -> Iterator[tuple[str, Callable[[], list[tuple[int, bytes]]]]]:
    """An emulator in its own process: its port, and a function that stops it and returns
    its arrivals (t_ns, data)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "arrivals.txt"
        proc = subprocess.Popen(
            [sys.executable, "-m", "poseloop.hardware.emulator", "--log", str(log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        def stop() -> list[tuple[int, bytes]]:
            proc.stdin.close()
            proc.wait(timeout=10)
            items = [line.split() for line in log.read_text().splitlines()]
            return [(int(t), bytes.fromhex(data)) for t, data in items]

        try:
            yield proc.stdout.readline().strip(), stop
        finally:
            if proc.poll() is None:
                proc.kill()


def rows(name: str, starts: list, costs: list, arrivals: list[tuple[int, bytes]]) -> Rows:
    """Pair each command with its arrival, in order (anything sent later comes after)."""
    n = len(starts)
    if [data + b"\n" for _, data in arrivals[:n]] != [WIRE[i % 2] for i in range(n)]:
        raise SystemExit(f"{name}: the emulator did not receive the {n} commands in order")
    latency = np.array([t for t, _ in arrivals[:n]]) - np.array(starts)
    return {f"{name} call": np.array(costs), f"{name} -> arrival": latency}


def baseline(n: int, gap: Callable[[], None]) -> Rows:
    """os.write on the port, no SerialDevice: what the pty itself costs here."""
    with emulator_process() as (port, stop):
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        starts, costs = timed_sends(lambda data: os.write(fd, data), n, gap)
        time.sleep(0.2)
        os.close(fd)
        return rows("os.write, process", starts, costs, stop())


def in_process(n: int, gap: Callable[[], None]) -> Rows:
    with emulator_process() as (port, stop):
        device = SerialDevice("bench", port).open()
        starts, costs = timed_sends(device.send, n, gap)
        time.sleep(0.2)  # the last commands arrive before the PINGs
        rtts = [device.ping(timeout=1.0) for _ in range(n // 5)]
        device.close()
        return {**rows("send(), process", starts, costs, stop()), **ping_row("process", rtts)}


def in_thread(n: int, gap: Callable[[], None]) -> Rows:
    with DeviceEmulator() as emu:
        device = SerialDevice("bench", emu.port).open()
        starts, costs = timed_sends(device.send, n, gap)
        emu.wait_for(n, timeout=5)
        rtts = [device.ping(timeout=1.0) for _ in range(n // 5)]
        device.close()
        arrivals = [(r.t_ns, r.data) for r in emu.received]
    return {**rows("send(), thread", starts, costs, arrivals), **ping_row("thread", rtts)}


def ping_row(where: str, rtts: list[float | None]) -> Rows:
    if None in rtts:
        raise SystemExit(f"{where}: a PING got no PONG within 1 s")
    return {f"PING -> PONG, {where}": np.array(rtts) * 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000, help="commands per setup (>= 5000 for p99)")
    ap.add_argument("--gap-us", type=float, default=200.0, help="pause between commands")
    ap.add_argument("--spin", action="store_true", help="hold the GIL during the pause")
    args = ap.parse_args()
    gap = functools.partial(pause, args.gap_us / 1e6, args.spin)
    table = {**baseline(args.n, gap), **in_process(args.n, gap), **in_thread(args.n, gap)}

    print(
        f"serial over a pty, µs; emulator in its own process or in a thread "
        f"({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"{args.n} commands {args.gap_us:g} µs apart, {'spinning' if args.spin else 'sleeping'})"
    )
    print(f"{'measure':<30}{'n':>6}{'median':>9}{'p95':>9}{'p99':>9}{'max':>10}")
    for name, ns in table.items():
        us = ns / 1e3
        p50, p95, p99 = np.percentile(us, [50, 95, 99])
        print(f"{name:<30}{len(us):>6}{p50:>9.1f}{p95:>9.1f}{p99:>9.1f}{us.max():>10.1f}")


if __name__ == "__main__":
    main()
