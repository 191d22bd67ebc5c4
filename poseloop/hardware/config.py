"""Validated configuration of serial devices: every command string is checked at load time."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from poseloop.config import Strict
from poseloop.hardware import protocol
from poseloop.hardware.protocol import MAX_WATCHDOG_MS


def _valid_command(text: str) -> str:
    protocol.encode(text)  # raises ValueError naming what is wrong
    return text


CommandText = Annotated[str, AfterValidator(_valid_command)]


class OutputConfig(Strict):
    """A named output: a channel of the reference protocol, or explicit on/off commands."""

    channel: int | None = Field(
        default=None, ge=0, le=protocol.MAX_CHANNEL,
        description="line protocol: on = 'ON n', off = 'OFF n'",
    )
    on: CommandText | None = Field(default=None, description="command that turns the output on")
    off: CommandText | None = Field(default=None, description="command that turns the output off")

    @model_validator(mode="after")
    def _commands_known(self) -> OutputConfig:
        if self.channel is not None:
            # Assigning through the validated model would recurse into this validator.
            if self.on is None:
                vars(self)["on"] = f"ON {self.channel}"
            if self.off is None:
                vars(self)["off"] = f"OFF {self.channel}"
        elif self.on is None or self.off is None:
            raise ValueError("give 'channel', or both 'on' and 'off' commands")
        return self


class DeviceConfig(Strict):
    """One serial device: where it is, how it speaks, and its named outputs."""

    name: str = Field(min_length=1, description="used in status messages and logs")
    port: str = Field(
        min_length=1, description="e.g. /dev/ttyACM0, COM3, an emulator's path, or 'emulator' "
        "for an in-process emulated board (poseloop.hardware.actuators)"
    )
    baudrate: int = Field(default=115200, gt=0)
    protocol: Literal["line", "raw"] = Field(
        default="line", description="'line': the reference protocol; 'raw': hex byte commands only"
    )
    retry_s: float = Field(
        default=1.0, gt=0, le=60, description="seconds between reconnection tries"
    )
    ping_s: float | None = Field(
        default=None, gt=0,
        description="line protocol: seconds between background PINGs; None = off",
    )
    watchdog_ms: int | None = Field(
        default=None, ge=10, le=MAX_WATCHDOG_MS,
        description="line protocol: the device turns every output off by itself after this "
        "long without a byte from the host (host died, cable out, loop hung); the host keeps "
        "it fed while the loop runs. None = off",
    )
    timing: bool = Field(
        default=False,
        description="line protocol, reference firmware: stamp every output and the camera's "
        "exposure strobe on the device's microsecond clock; each fired action's exposure -> "
        "output latency goes into the events table (wiring: the firmware's README)",
    )
    sync_s: float = Field(
        default=0.5, gt=0, le=60,
        description="timing: seconds between TIME round trips that map the device's clock",
    )
    outputs: dict[str, OutputConfig] = Field(default_factory=dict)
    all_off: list[CommandText] | None = Field(
        default=None,
        description="sent at close instead of an OFF for each output that was turned on",
    )

    @field_validator("outputs")
    @classmethod
    def _outputs_fit_protocol(
        cls, outputs: dict[str, OutputConfig], info: ValidationInfo
    ) -> dict[str, OutputConfig]:
        for name, out in outputs.items():
            if out.channel is not None and info.data.get("protocol") == "raw":
                raise ValueError(f"{name}: protocol 'raw' has no channels, give 'on'/'off' as hex")
            for action in ("on", "off"):
                _fits(info, getattr(out, action), f"{name}.{action}")
        return outputs

    @field_validator("all_off")
    @classmethod
    def _all_off_fits_protocol(
        cls, commands: list[str] | None, info: ValidationInfo
    ) -> list[str] | None:
        for i, text in enumerate(commands or ()):
            _fits(info, text, str(i))
        return commands

    @model_validator(mode="after")
    def _ping_needs_line_protocol(self) -> DeviceConfig:
        if self.ping_s is not None and self.protocol != "line":
            raise ValueError("ping_s needs protocol 'line' (raw firmware does not answer PING)")
        if self.watchdog_ms is not None and self.protocol != "line":
            raise ValueError("watchdog_ms needs protocol 'line' (the reference firmware)")
        if self.timing and self.protocol != "line":
            raise ValueError("timing needs protocol 'line' (the reference firmware stamps its "
                             "outputs and the camera strobe)")
        return self


def _fits(info: ValidationInfo, text: str, where: str) -> None:
    if info.data.get("protocol") == "raw" and not protocol.is_hex(text):
        raise ValueError(
            f"{where}: protocol 'raw' sends bytes verbatim, write {text!r} as hex like '0x4C'"
        )
