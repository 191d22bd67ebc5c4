"""A serial output device that never blocks or stops the loop that drives it.

``send()`` writes straight to the port's non-blocking file descriptor: what the OS takes is
sent, the rest of a partly written command waits in a small pending buffer, and a command
the OS has no room for is dropped and counted, never waited on. (pyserial's own ``write``
with ``write_timeout=0`` spins until the OS buffer has room, so it is used only to open
and configure the port.) A port that fails or vanishes is marked disconnected, reported
once, and reopened by a background thread every ``retry_s``; nothing stale is re-sent.
The same thread reads the device's replies and times PING round trips.

With ``timing`` (reference firmware, line protocol) the device stamps its outputs and the
camera's exposure strobe on its own microsecond clock: the engine traces each fired
action (:meth:`SerialDevice.trace`) and gets it back with its exposure -> output latency
(:meth:`SerialDevice.timed`); see :mod:`poseloop.hardware.trigger_timing`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import serial

from poseloop.hardware import protocol
from poseloop.hardware.config import DeviceConfig, OutputConfig
from poseloop.hardware.trigger_timing import TriggerTimer
from poseloop.realtime.types import ActionRecord

log = logging.getLogger(__name__)

_CACHE_LIMIT = 4096  # distinct commands whose encoding and effect are remembered
_REPLY_POLL_S = 0.01  # how often replies are read (and a silent disconnect noticed)
_PONG_WAIT_NS = 1_000_000_000  # a PONG later than this is not waited for promptly
_TIMING_ON = protocol.Command("TIMING", ms=1).encode()
_TIME = protocol.Command("TIME").encode()


@dataclass
class Counters:
    """What happened to the commands given to ``send()``."""

    sent: int = 0  # handed to the OS (a remainder may still be pending)
    dropped: int = 0  # not delivered: disconnected, OS buffer full, or pending at a disconnect
    reconnects: int = 0  # successful reopenings after a loss
    errors: int = 0  # I/O failures that cost the connection (or a port missing at open)
    rejected: int = 0  # ERR replies from the device
    heartbeats: int = 0  # WATCHDOG keep-alives written (see ``watchdog_ms``)


class SerialDevice:
    """Sends protocol commands to one serial port; never raises into the caller's loop.

    An ``Actuator`` (``poseloop.realtime.types``): the engine opens it, sends the rules'
    commands, calls ``keepalive`` every frame and closes it."""

    def __init__(
        self,
        name: str,
        port: str,
        baudrate: int = 115200,
        protocol: Literal["line", "raw"] = "line",
        retry_s: float = 1.0,
        ping_s: float | None = None,
        watchdog_ms: int | None = None,
        outputs: Mapping[str, OutputConfig] | None = None,
        all_off: Sequence[str] | None = None,
        timing: bool = False,
        sync_s: float = 0.5,
    ) -> None:
        self.name = name
        self.port = port
        self.baudrate = baudrate
        self.protocol: Literal["line", "raw"] = protocol
        self.retry_s = retry_s
        self.ping_s = ping_s
        self.watchdog_ms = watchdog_ms
        # While the loop is alive, "WATCHDOG ms" is sent three times per period: it feeds the
        # device's watchdog and re-arms it after a board reset (an Arduino resets when its
        # port is opened and misses what is sent during its 1-2 s boot).
        self._feed_s = watchdog_ms / 3000 if watchdog_ms else None
        # Fed for ever until the loop's first keepalive(): a run's warm-up (seconds; minutes
        # for a TensorRT build) must not trip the watchdog, and nothing is on before the
        # loop runs. A host that dies meanwhile stops the heartbeat all the same.
        self._fed = math.inf
        self._arm = _watchdog_line(watchdog_ms or 0)
        self.counters = Counters()
        self.rtt_ns: int | None = None  # last PING round trip
        self.last_reply_error = ""
        self._encoded: dict[str, bytes] = {}
        self._effects: dict[bytes, tuple[bytes | None, bytes | None]] = {}
        # OutputConfig validation fills in both commands.
        self._outputs = {
            k: (self._encode(str(o.on)), self._encode(str(o.off)))
            for k, o in (outputs or {}).items()
        }
        self._all_off = [self._encode(c) for c in all_off] if all_off is not None else None
        self._armed: dict[bytes, None] = {}  # OFF commands owed at close, in order
        self._lock = threading.Lock()
        self._serial: serial.Serial | None = None
        self._fd: int | None = None  # set only while connected
        self._pending = bytearray()
        self._reason = "not opened"
        self._reported = False  # the current loss has been logged
        self._ping_t0 = -_PONG_WAIT_NS  # perf_counter_ns of the PING awaiting its PONG
        self._pong = threading.Event()
        self._stop = threading.Event()
        self._wake_r = self._wake_w = -1  # the background thread's wake-up pipe, made at open
        self._thread: threading.Thread | None = None
        #: Trigger timing (``timing=True``): exposure strobes, output stamps, the clock map.
        self.timer: TriggerTimer | None = TriggerTimer() if timing else None
        self.sync_s = sync_s
        self._time_t0 = -_PONG_WAIT_NS  # perf_counter_ns of the TIME awaiting its answer
        self._prefix = f"{name}:"

    @classmethod
    def from_config(cls, cfg: DeviceConfig) -> SerialDevice:
        """Build from a validated ``DeviceConfig``."""
        return cls(**cfg.model_dump(exclude={"outputs"}), outputs=cfg.outputs)

    # -- lifecycle -----------------------------------------------------------------------
    def open(self) -> SerialDevice:
        """Try the port once and start the background thread; a missing port is no error.

        Nothing is held before this (no port, thread or pipe): a device that is built but
        never opened needs no close."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        if self._connect():
            log.info("%s", self.status)
        else:
            self.counters.errors += 1  # reported by the background thread
        self._thread = threading.Thread(target=self._run, name=f"serial-{self.name}", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 1.0) -> None:
        """Turn off what was turned on (or send ``all_off``), then close the port."""
        if self._stop.is_set():
            return
        if self._thread is None:  # never opened: nothing was sent, nothing is held
            return
        if self.timer is not None:  # the last traced actions' stamps are on their way
            deadline = time.monotonic() + 0.2
            while self.timer.pending and self._fd is not None and time.monotonic() < deadline:
                time.sleep(_REPLY_POLL_S)
        self._stop.set()
        self._wake()
        self._thread.join()
        if self.timer is not None:
            self.timer.flush()
        with self._lock:
            offs = self._all_off if self._all_off is not None else list(self._armed)
            if self.watchdog_ms:  # disarm it, or the next program would be cut off
                offs = [*offs, _watchdog_line(0)]
            fd = self._fd
            if offs and fd is None:
                log.warning(
                    "%s: cannot send %d OFF command(s): disconnected from %s (%s)",
                    self.name,
                    len(offs),
                    self.port,
                    self._reason,
                )
            elif offs and fd is not None:
                self._drain(fd, bytes(self._pending) + b"".join(offs), timeout)
            self._armed.clear()
            self._fd = None
            self._release()
            # Safe: with no port, nothing calls _wake() any more (it is only called, under
            # the lock, for an open port).
            os.close(self._wake_r)
            os.close(self._wake_w)

    def __enter__(self) -> SerialDevice:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop's side -----------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Commands not delivered (``counters.dropped``; the ``Actuator`` protocol's count)."""
        return self.counters.dropped

    @property
    def connected(self) -> bool:
        """True while the port is open and writable."""
        return self._fd is not None

    @property
    def status(self) -> str:
        """One line for humans, naming the port and what is wrong with it."""
        if self._fd is not None:
            return f"{self.name}: connected to {self.port}"
        if self._stop.is_set():
            return f"{self.name}: closed ({self.port})"
        return (
            f"{self.name}: disconnected from {self.port} ({self._reason}); "
            f"retrying every {self.retry_s:g} s"
        )

    def send(self, command: str | bytes,
             trace: tuple[ActionRecord, int] | None = None) -> bool:
        """Write a command without waiting; False when it was dropped (and counted).

        ``command`` is a protocol string (``"ON 3"``, ``"0x4C"``) or the exact bytes.
        trace: (the fired action, its frame's capture time ns) to time, with ``timing``: it
        comes back from :meth:`timed` with its exposure -> output latency."""
        data = command if isinstance(command, bytes) else self._encode(command)
        with self._lock:
            arm, disarm = self._effect(data)
            if arm is not None:
                self._armed[arm] = None
            if disarm is not None:
                self._armed.pop(disarm, None)
            timer = self.timer
            if trace is None or timer is None:
                return self._write(data)
            record, t_capture_ns = trace
            # registered before the write: the reply may be read before write() returns
            timer.trace(record, t_capture_ns, record.action.removeprefix(self._prefix))
            sent = self._write(data)
            if not sent:
                timer.untrace(record)
            return sent

    def keepalive(self) -> None:
        """The loop is alive: keep the device's watchdog fed (see ``watchdog_ms``).

        The engine calls this every frame; when the loop stops calling it (hung, killed),
        the heartbeat stops and the device turns its outputs off by itself. Heartbeats are
        not commands: they count in ``counters.heartbeats``, not in ``sent``."""
        self._fed = time.monotonic()

    @property
    def timing(self) -> bool:
        """True when this device stamps its outputs and the camera strobe."""
        return self.timer is not None

    def timed(self) -> Sequence[ActionRecord]:
        """Traced actions resolved since the last call, timing filled in (NaN: unknown)."""
        return self.timer.drain() if self.timer is not None else ()

    def switch(self, output: str, on: bool) -> bool:
        """Send a named output's on or off command (see ``DeviceConfig.outputs``)."""
        return self.send(self._outputs[output][0 if on else 1])

    def ping(self, timeout: float = 0.0) -> float | None:
        """Send PING; with a timeout, wait for PONG and return the round trip in seconds."""
        if self.protocol != "line":
            raise ValueError(f"{self.name}: PING needs the line protocol")
        self._pong.clear()
        with self._lock:
            self._ping_t0 = time.perf_counter_ns()
            sent = self._write(protocol.PING)
            if sent:
                self._wake()  # the background thread now watches for the PONG
        if not sent or timeout <= 0 or not self._pong.wait(timeout):
            return None
        return self.rtt_ns / 1e9 if self.rtt_ns is not None else None

    # -- writing (lock held) -------------------------------------------------------------
    def _write(self, data: bytes, counted: bool = True) -> bool:
        """Write without waiting; ``counted``: a command (sent/dropped), else a heartbeat."""
        fd = self._fd
        if fd is None:
            self.counters.dropped += counted
            return False
        try:
            if self._pending:
                del self._pending[: os.write(fd, self._pending)]
                if self._pending:
                    self.counters.dropped += counted
                    return False
            n = os.write(fd, data)
        except BlockingIOError:
            self.counters.dropped += counted
            return False
        except OSError as e:
            self._lost(e)
            self.counters.dropped += counted
            return False
        if n < len(data):
            self._pending += data[n:]
            self._wake()  # the background thread finishes it when the port has room
        if counted:
            self.counters.sent += 1
        else:
            self.counters.heartbeats += 1
        return True

    def _drain(self, fd: int, data: bytes, timeout: float) -> None:
        """Blocking write with a deadline, for close() only."""
        deadline = time.monotonic() + timeout
        while data and time.monotonic() < deadline:
            try:
                select.select([], [fd], [], max(0.0, deadline - time.monotonic()))
                data = data[os.write(fd, data) :]
            except BlockingIOError:
                continue
            except OSError as e:
                self._lost(e)
                break
        if data:
            log.warning("%s: %d byte(s) of OFF commands not sent at close", self.name, len(data))

    def _lost(self, error: BaseException) -> None:
        """Mark the port lost; the background thread closes, reports and reopens it."""
        self.counters.errors += 1
        if self._pending:
            self.counters.dropped += 1  # the half-sent command is stale by now
            self._pending.clear()
        self._fd = None
        self._reason = str(error)
        self._reported = False
        self._wake()

    def _release(self) -> None:
        """Close the pyserial port; only the background thread (or close()) does this, so
        a file descriptor is never closed under a select() that is watching it."""
        if self._serial is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                self._serial.close()
            self._serial = None

    # -- commands --------------------------------------------------------------------------
    def _encode(self, command: str) -> bytes:
        data = self._encoded.get(command)
        if data is None:
            if self.protocol == "raw" and not protocol.is_hex(command):
                raise ValueError(f"{self.name}: protocol 'raw' takes hex commands like '0x4C'")
            data = protocol.encode(command)
            if len(self._encoded) < _CACHE_LIMIT:
                self._encoded[command] = data
        return data

    def _effect(self, data: bytes) -> tuple[bytes | None, bytes | None]:
        """(OFF command this one owes at close, OFF command it settles), both may be None."""
        effect = self._effects.get(data)
        if effect is None:
            effect = self._derive_effect(data)
            if len(self._effects) < _CACHE_LIMIT:
                self._effects[data] = effect
        return effect

    def _derive_effect(self, data: bytes) -> tuple[bytes | None, bytes | None]:
        for on, off in self._outputs.values():
            if data == on:
                return off, None
            if data == off:
                return None, off
        if self.protocol != "line":
            return None, None
        try:
            cmd = protocol.parse_command(data.decode("ascii").rstrip("\n"))
        except (UnicodeDecodeError, ValueError):
            return None, None
        if cmd.verb in ("ON", "PULSE"):
            return protocol.Command("OFF", cmd.channel).encode(), None
        if cmd.verb == "OFF":
            return None, data
        return None, None

    # -- background thread -------------------------------------------------------------------
    def _connect(self) -> bool:
        """Open the port (without the lock: opening may take a while); True on success."""
        try:
            ser = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=0)
            ser.reset_input_buffer()  # nothing stale from before a reconnection
        except (OSError, serial.SerialException) as e:
            self._reason = f"cannot open: {getattr(e, 'strerror', None) or e}"
            return False
        with self._lock:
            self._serial, self._fd = ser, ser.fileno()
            if self.watchdog_ms:  # arm the device's watchdog on every (re)connection
                self._write(self._arm, counted=False)
            if self.timer is not None:
                self._write(_TIMING_ON, counted=False)
        return True

    def _run(self) -> None:
        replies = bytearray()
        next_ping = time.monotonic() + (self.ping_s or 0)
        next_feed = time.monotonic() + (self._feed_s or 0)
        next_sync = time.monotonic()
        while not self._stop.is_set():
            if self._fd is None:
                self._reconnect()
                replies.clear()
                continue
            with self._lock:
                fd, want_write = self._fd, bool(self._pending)
            if fd is None:
                continue
            wait = _REPLY_POLL_S
            if self.ping_s:
                wait = min(wait, max(0.0, next_ping - time.monotonic()))
            if self._feed_s:
                wait = min(wait, max(0.0, next_feed - time.monotonic()))
            if self.timer is not None:
                wait = min(wait, max(0.0, next_sync - time.monotonic()))
            # Replies are read every _REPLY_POLL_S, not as each arrives: a wake-up per reply
            # would take the GIL from the loop thread about once per command. Only a PONG
            # or a TIME is awaited promptly, so that its round trip is measured right.
            now_ns = time.perf_counter_ns()
            awaiting = (now_ns - self._ping_t0 < _PONG_WAIT_NS
                        or now_ns - self._time_t0 < _PONG_WAIT_NS)
            readable, writable, _ = select.select(
                [fd, self._wake_r] if awaiting else [self._wake_r],
                [fd] if want_write else [],
                [],
                wait,
            )
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            if writable:
                self._flush_pending()
            self._read_replies(fd, replies)
            if self.ping_s and time.monotonic() >= next_ping:
                next_ping = time.monotonic() + self.ping_s
                self.ping()
            if self.timer is not None and time.monotonic() >= next_sync:
                next_sync = time.monotonic() + self.sync_s
                with self._lock:
                    self._time_t0 = time.perf_counter_ns()
                    self._write(_TIME, counted=False)
            if self._feed_s and time.monotonic() >= next_feed:
                next_feed = time.monotonic() + self._feed_s
                if time.monotonic() - self._fed < 3 * self._feed_s:  # the loop is alive
                    with self._lock:
                        self._write(self._arm, counted=False)

    def _reconnect(self) -> None:
        with self._lock:
            self._release()
        if not self._reported:
            self._reported = True
            log.warning("%s", self.status)
        if self._stop.wait(self.retry_s):
            return
        if self._connect():
            self.counters.reconnects += 1
            log.warning("%s (reconnected)", self.status)
        else:
            log.debug("%s", self.status)

    def _flush_pending(self) -> None:
        with self._lock:
            if self._fd is None or not self._pending:
                return
            try:
                del self._pending[: os.write(self._fd, self._pending)]
            except BlockingIOError:
                pass
            except OSError as e:
                self._lost(e)

    def _read_replies(self, fd: int, replies: bytearray) -> None:
        # A tty read with VMIN=0 returns b"" when nothing is there: ask select() first,
        # after which b"" means the device hung up.
        if not select.select([fd], [], [], 0)[0]:
            return
        try:
            chunk = os.read(fd, 4096)
            t_ns = time.perf_counter_ns()
        except BlockingIOError:
            return
        except OSError as e:
            chunk, error = b"", e
        else:
            error = OSError("port closed by the device")
        if not chunk:
            with self._lock:
                if self._fd == fd:
                    self._lost(error)
            return
        if self.protocol != "line":
            return
        replies += chunk
        while (i := replies.find(b"\n")) >= 0:
            line = bytes(replies[: i + 1])
            del replies[: i + 1]
            self._on_reply(line, t_ns)
        if len(replies) > 4 * protocol.MAX_LINE:
            replies.clear()  # noise without newlines, e.g. a wrong baud rate

    def _on_reply(self, line: bytes, t_ns: int) -> None:
        try:
            reply = protocol.parse_reply(line)
        except ValueError:
            log.debug("%s: ignoring %r", self.name, line)
            return
        timer = self.timer
        if reply.kind == "PONG" and t_ns - self._ping_t0 < _PONG_WAIT_NS:
            self.rtt_ns = t_ns - self._ping_t0
            self._ping_t0 = -_PONG_WAIT_NS
            self._pong.set()
        elif reply.kind == "ERR":
            self.counters.rejected += 1
            if not self.last_reply_error:
                log.warning("%s: device replied ERR %s", self.name, reply.text)
            self.last_reply_error = reply.text
        elif timer is None or reply.us is None:
            return
        elif reply.kind == "S" and reply.n is not None:
            timer.on_strobe(reply.n, reply.us)
        elif reply.kind == "OK":
            timer.on_stamp(reply.text, reply.us)
        elif reply.kind == "TIME" and t_ns - self._time_t0 < _PONG_WAIT_NS:
            timer.on_time(self._time_t0, t_ns, reply.us)
            self._time_t0 = -_PONG_WAIT_NS

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")


def _watchdog_line(ms: int) -> bytes:
    return protocol.Command("WATCHDOG", ms=ms).encode()
