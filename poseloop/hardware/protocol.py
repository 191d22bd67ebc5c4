"""The reference serial line protocol, and verbatim byte commands for other firmware.

Host to device, one ASCII line each, ending in ``\\n``: ``ON n`` and ``OFF n`` set output n
high or low, ``PULSE n ms`` sets it high for ms milliseconds (timed on the device, so the
host never waits), ``PING`` asks for ``PONG``, ``WATCHDOG ms`` (0 = off) makes the device
turn every output off by itself when no byte has come from the host for ms milliseconds
(the host died, the cable came out), ``TIMING 1`` (0 = off, the power-up state) turns on
trigger timing and ``TIME`` asks for the device's microsecond clock. The device answers
every line with ``PONG``, ``OK <the command>``, ``TIME <us>`` or ``ERR <reason>``; with
timing on, ON/OFF/PULSE replies end with `` @<us>`` (when the pin was written) and each
rising edge of the camera's exposure strobe is reported unasked as ``S <n> <us>``.
Firmware that speaks something else (for example DeepLabCut-Live's single-byte Teensy
commands) is driven by commands written as hex bytes, ``0x4C`` or ``0x4C 0x01``, which are
sent verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

MAX_CHANNEL = 255
MAX_PULSE_MS = 60_000
MAX_WATCHDOG_MS = 60_000
MAX_LINE = 32  # bytes, newline excluded; the firmware's receive buffer

PING = b"PING\n"

_LINE = re.compile(
    r"(ON|OFF) (\d{1,3})|PULSE (\d{1,3}) (\d{1,5})|PING|WATCHDOG (\d{1,5})|TIMING ([01])|TIME"
)
_HEX = re.compile(r"0x[0-9a-fA-F]{2}( 0x[0-9a-fA-F]{2})*")

Verb = Literal["ON", "OFF", "PULSE", "PING", "WATCHDOG", "TIMING", "TIME"]


@dataclass(frozen=True)
class Command:
    """One parsed line-protocol command."""

    verb: Verb
    channel: int | None = None
    ms: int | None = None

    def encode(self) -> bytes:
        """The bytes on the wire, newline included."""
        if self.verb in ("PING", "TIME"):
            return f"{self.verb}\n".encode("ascii")
        if self.verb == "TIMING":
            return f"TIMING {self.ms}\n".encode("ascii")
        if self.verb == "PULSE":
            return f"PULSE {self.channel} {self.ms}\n".encode("ascii")
        if self.verb == "WATCHDOG":
            return f"WATCHDOG {self.ms}\n".encode("ascii")
        return f"{self.verb} {self.channel}\n".encode("ascii")


def parse_command(text: str) -> Command:
    """Parse one line-protocol command (no newline); ValueError says what is wrong."""
    m = _LINE.fullmatch(text)
    if m is None:
        raise ValueError(
            f"{text!r} is not a command: expected 'ON n', 'OFF n', 'PULSE n ms', 'PING', "
            "'WATCHDOG ms', 'TIMING 0|1' or 'TIME' "
            "(upper case, single spaces), or hex bytes like '0x4C'"
        )
    if m.group(1):
        return Command(m.group(1), _check_channel(int(m.group(2))))  # type: ignore[arg-type]
    if m.group(3):
        return Command("PULSE", _check_channel(int(m.group(3))), _check_ms(int(m.group(4))))
    if m.group(5):
        ms = int(m.group(5))
        if ms > MAX_WATCHDOG_MS:
            raise ValueError(f"watchdog must be 0..{MAX_WATCHDOG_MS} ms (0 = off), got {ms}")
        return Command("WATCHDOG", ms=ms)
    if m.group(6):
        return Command("TIMING", ms=int(m.group(6)))
    return Command("TIME" if text == "TIME" else "PING")


def is_hex(text: str) -> bool:
    """True when ``text`` is written as hex bytes (``0x4C 0x01``), i.e. sent verbatim."""
    return _HEX.fullmatch(text) is not None


def encode(text: str) -> bytes:
    """Encode a command string: hex bytes verbatim, anything else as a checked line."""
    if is_hex(text):
        return bytes(int(tok, 16) for tok in text.split())
    return parse_command(text).encode()


@dataclass(frozen=True)
class Reply:
    """One line from a line-protocol device.

    kind ``OK``: text is the command, ``us`` its output stamp (trigger timing) or None;
    ``TIME``: ``us`` is the device clock; ``S``: strobe edge number ``n`` at ``us``.
    """

    kind: Literal["PONG", "OK", "ERR", "TIME", "S"]
    text: str = ""
    us: int | None = None
    n: int | None = None

    def encode(self) -> bytes:
        """The bytes on the wire, newline included."""
        if self.kind == "TIME":
            return f"TIME {self.us}\n".encode("ascii")
        if self.kind == "S":
            return f"S {self.n} {self.us}\n".encode("ascii")
        text = f"{self.kind} {self.text}" if self.text else self.kind
        if self.us is not None:
            text += f" @{self.us}"
        return text.encode("ascii") + b"\n"


def parse_reply(line: bytes) -> Reply:
    """Parse one reply line (newline and a trailing CR optional); ValueError if unknown."""
    text = line.rstrip(b"\r\n").decode("ascii", errors="replace")
    kind, _, rest = text.partition(" ")
    if kind == "PONG" and not rest:
        return Reply("PONG")
    if kind == "OK":
        command, at, stamp = rest.partition(" @")
        if at and stamp.isdigit():
            return Reply("OK", command, us=int(stamp))
        return Reply("OK", rest)
    if kind == "ERR":
        return Reply("ERR", rest)
    if kind == "TIME" and rest.isdigit():
        return Reply("TIME", us=int(rest))
    if kind == "S":
        n, _, us = rest.partition(" ")
        if n.isdigit() and us.isdigit():
            return Reply("S", n=int(n), us=int(us))
    raise ValueError(f"not a reply: {text!r}")


def _check_channel(channel: int) -> int:
    if not 0 <= channel <= MAX_CHANNEL:
        raise ValueError(f"channel must be 0..{MAX_CHANNEL}, got {channel}")
    return channel


def _check_ms(ms: int) -> int:
    if not 1 <= ms <= MAX_PULSE_MS:
        raise ValueError(f"pulse length must be 1..{MAX_PULSE_MS} ms, got {ms}")
    return ms
