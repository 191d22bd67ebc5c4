"""A serial device on a real pseudo-terminal, for tests and benchmarks without hardware.

``DeviceEmulator`` opens a pty pair, holds the master side and speaks the line protocol
there exactly as the reference firmware does (``PONG``, ``OK <command>``, ``ERR <reason>``),
or, in raw mode, only records bytes. Each received command is kept with the
``perf_counter_ns()`` of its arrival, for latency measurements. Its ``port`` is a symlink
in a temporary folder that ``reappear()`` re-points to a fresh pty, so unplugging and
replugging a USB device can be replayed on one stable path.

Run ``python -m poseloop.hardware.emulator`` to get one in its own process: it prints the
port path, runs until Ctrl-C, SIGTERM or the end of standard input, and can write its
arrival log to a file (``--log``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from poseloop.hardware import protocol
from poseloop.hardware.protocol import Reply


@dataclass(frozen=True)
class Received:
    """What arrived and when (``perf_counter_ns`` right after the read returned)."""

    t_ns: int
    data: bytes  # one line without its newline (line protocol), or one read's bytes (raw)


class DeviceEmulator:
    """A line-protocol (or raw-bytes) device behind a pseudo-terminal path."""

    def __init__(
        self,
        protocol: Literal["line", "raw"] = "line",
        channels: int = 8,
        link: str | Path | None = None,
    ) -> None:
        self.protocol = protocol
        self.channels = channels
        self._tmpdir: str | None = None
        if link is None:
            self._tmpdir = tempfile.mkdtemp(prefix="poseloop-emu-")
            link = os.path.join(self._tmpdir, "tty")
        self.port = str(link)
        self.slave_path = ""
        self._cond = threading.Condition()
        self._received: list[Received] = []
        self._on = [False] * channels
        self._pulse_end_ns = [0] * channels
        self._watchdog_ns = 0  # WATCHDOG ms: silence after which every output goes off
        self._last_rx_ns = 0
        self._tripped = False
        #: How often the watchdog turned the outputs off.
        self.watchdog_trips = 0
        self._timing = False  # TIMING 1: stamp outputs, report strobes (as the firmware)
        self._strobes = 0
        self._master = -1
        self._write_lock = threading.Lock()
        self._fds: tuple[int, ...] = ()
        self._thread: threading.Thread | None = None
        self._linger_s = 0.0  # at stop: keep serving until the line is quiet this long

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> DeviceEmulator:
        """Open the pty and point ``port`` at it."""
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line editing before a host configures the port
        os.set_blocking(master, False)
        stop_r, stop_w = os.pipe()
        self.slave_path = os.ttyname(slave)
        tmp = self.port + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(self.slave_path, tmp)
        os.replace(tmp, self.port)  # atomic: a host never sees a half-made link
        with self._cond:
            self._on = [False] * self.channels  # a re-powered device starts with all off
            self._pulse_end_ns = [0] * self.channels
        # Holding the slave open keeps the master readable when the host closes its port.
        self._fds = (master, slave, stop_r, stop_w)
        self._master = master
        self._timing = False
        self._thread = threading.Thread(
            target=self._serve, args=(master, stop_r), name="device-emulator", daemon=True
        )
        self._thread.start()
        return self

    def disappear(self, linger_s: float = 0.0) -> None:
        """Close the pty and remove the port path, as when a USB cable is pulled.

        linger_s: first handle what still arrives until the line has been quiet this long
        (bytes a host wrote just before may still be on their way through the pty)."""
        if self._thread is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port)  # first, so a host cannot reopen the dying pty
        self._linger_s = linger_s
        os.write(self._fds[3], b"x")
        self._thread.join()
        self._thread = None
        with self._write_lock:
            self._master = -1
        for fd in self._fds:
            os.close(fd)
        self._fds = ()

    def reappear(self) -> None:
        """Plug back in: a new pty (a new /dev/pts path) behind the same ``port`` symlink."""
        self.start()

    def stop(self, linger_s: float = 0.02) -> None:
        """Disappear for good, once what the host sent has been handled (see
        :meth:`disappear`), and remove the temporary folder."""
        self.disappear(linger_s)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> DeviceEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the device saw -------------------------------------------------------------
    @property
    def received(self) -> list[Received]:
        """Everything received so far, in order."""
        with self._cond:
            return list(self._received)

    @property
    def outputs(self) -> dict[int, bool]:
        """Current state of each output (a running PULSE counts as on)."""
        now = time.perf_counter_ns()
        with self._cond:
            return {
                ch: on or now < end
                for ch, (on, end) in enumerate(zip(self._on, self._pulse_end_ns, strict=True))
            }

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` items were received; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._received) >= count, timeout)

    # -- the device ----------------------------------------------------------------------
    def _serve(self, master: int, stop_r: int) -> None:
        line = bytearray()
        overflow = False
        stopping = False
        while True:
            if stopping:  # the line must stay quiet for linger_s
                ready, _, _ = select.select([master], [], [], self._linger_s)
                if not ready:
                    return
            else:
                ready, _, _ = select.select([master, stop_r], [], [], self._watchdog_wait())
                if not ready:
                    self._trip()
                    continue
            try:
                chunk = os.read(master, 4096)
            except BlockingIOError:
                if stop_r in ready:  # only after what had arrived is handled
                    if self._linger_s <= 0:
                        return
                    stopping = True
                continue
            t_ns = time.perf_counter_ns()
            self._last_rx_ns, self._tripped = t_ns, False
            if self.protocol == "raw":
                self._log(t_ns, chunk)
                continue
            for byte in chunk:  # byte by byte, as the firmware does
                if byte != 0x0A:
                    if len(line) < protocol.MAX_LINE:
                        line.append(byte)
                    else:
                        overflow = True
                    continue
                text = bytes(line[:-1] if line.endswith(b"\r") else line)
                self._log(t_ns, text)
                reply = Reply("ERR", "line too long") if overflow else self._execute(text, t_ns)
                self._send(master, reply)
                line.clear()
                overflow = False

    def _send(self, master: int, reply: Reply) -> None:
        with self._write_lock, contextlib.suppress(OSError):  # nobody reading: dropped
            os.write(master, reply.encode())

    def strobe(self) -> int:
        """A rising edge on the camera-strobe input, now (call it when a frame is exposed):
        reported as ``S <n> <us>`` with trigger timing on, as the firmware does. Returns its
        stamp on this device's clock (us)."""
        t_us = _clock_us(time.perf_counter_ns())
        if self._timing:
            with self._write_lock, contextlib.suppress(OSError):
                if self._master >= 0:
                    os.write(self._master, Reply("S", n=self._strobes, us=t_us).encode())
            self._strobes += 1
        return t_us

    def reset(self) -> None:
        """Reboot the board in place (as opening an Arduino's port does): every output off,
        watchdog off; the port stays open."""
        with self._cond:
            self._on = [False] * self.channels
            self._pulse_end_ns = [0] * self.channels
            self._watchdog_ns = 0
            self._timing = False

    @property
    def watchdog_ms(self) -> int:
        """The watchdog time the host set (0 = off)."""
        return self._watchdog_ns // 1_000_000

    def _watchdog_wait(self) -> float | None:
        """Seconds until the watchdog would trip; None when it is off or already tripped."""
        if not self._watchdog_ns or self._tripped:
            return None
        return max(0.0, (self._last_rx_ns + self._watchdog_ns - time.perf_counter_ns()) / 1e9)

    def _trip(self) -> None:
        """The host went silent for the watchdog time: every output off, as the firmware."""
        if self._watchdog_wait() != 0.0:
            return
        with self._cond:
            self._on = [False] * self.channels
            self._pulse_end_ns = [0] * self.channels
            self._tripped = True
            self.watchdog_trips += 1
            self._cond.notify_all()

    def _log(self, t_ns: int, data: bytes) -> None:
        with self._cond:
            self._received.append(Received(t_ns, data))
            self._cond.notify_all()

    def _execute(self, text: bytes, t_ns: int) -> Reply:
        try:
            cmd = protocol.parse_command(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return Reply("ERR", "bad command")
        if cmd.verb == "PING":
            return Reply("PONG")
        if cmd.verb == "TIME":
            return Reply("TIME", us=_clock_us(time.perf_counter_ns()))
        if cmd.verb == "TIMING":
            self._timing, self._strobes = cmd.ms == 1, 0
            return Reply("OK", text.decode("ascii"))
        if cmd.verb == "WATCHDOG":
            self._watchdog_ns = (cmd.ms or 0) * 1_000_000
            return Reply("OK", text.decode("ascii"))
        ch = cmd.channel
        assert ch is not None
        if ch >= self.channels:
            return Reply("ERR", "channel out of range")
        with self._cond:
            self._on[ch] = cmd.verb == "ON"
            self._pulse_end_ns[ch] = t_ns + cmd.ms * 1_000_000 if cmd.ms else 0
        stamp = _clock_us(time.perf_counter_ns()) if self._timing else None
        return Reply("OK", text.decode("ascii"), us=stamp)


def _clock_us(t_ns: int) -> int:
    """The emulated board's microsecond clock: perf_counter, wrapping at 2^32 us."""
    return (t_ns // 1000) & 0xFFFFFFFF


def main(argv: list[str] | None = None) -> None:
    """Run an emulator in this process and print its port path."""
    parser = argparse.ArgumentParser(prog="python -m poseloop.hardware.emulator")
    parser.add_argument("--raw", action="store_true", help="record bytes, never reply")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--link", help="port symlink to create (default: in a temp folder)")
    parser.add_argument("--log", help="write 't_ns hex-bytes' per received item here at exit")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    emu = DeviceEmulator("raw" if args.raw else "line", args.channels, args.link).start()
    print(emu.port, flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
        if args.log:
            Path(args.log).write_text("".join(f"{r.t_ns} {r.data.hex()}\n" for r in emu.received))


if __name__ == "__main__":
    main()
