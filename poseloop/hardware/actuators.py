"""The devices the rules drive (``Actuator``s), made from the ``devices`` config sections.

A device is a :class:`SerialDevice` on its port. ``port: emulator`` rehearses without
hardware: an :class:`EmulatedDevice` is a SerialDevice on the pseudo-terminal of its own
in-process :class:`DeviceEmulator`, started at ``open`` and stopped after ``close``; its
``emulator`` keeps what it received. Building opens nothing: ``open`` does.
"""

from __future__ import annotations

from collections.abc import Iterable

from poseloop.hardware.config import DeviceConfig
from poseloop.hardware.emulator import DeviceEmulator
from poseloop.hardware.serial_device import SerialDevice
from poseloop.realtime.types import Actuator

#: The ``port`` of a device that is emulated in-process instead of opened.
EMULATOR = "emulator"


class EmulatedDevice(SerialDevice):
    """A SerialDevice wired to its own DeviceEmulator (``port: emulator``).

    The emulator speaks the device's protocol and exists from :meth:`open` on; after
    :meth:`close` it is stopped but still tells what it received and its outputs' states.
    """

    def __init__(self, config: DeviceConfig) -> None:
        super().__init__(**config.model_dump(exclude={"outputs"}), outputs=config.outputs)
        self._emulator: DeviceEmulator | None = None

    @property
    def emulator(self) -> DeviceEmulator:
        """The emulator behind the port (from :meth:`open` on)."""
        if self._emulator is None:
            raise RuntimeError(f"{self.name}: the emulator starts when the device is opened")
        return self._emulator

    def open(self) -> EmulatedDevice:
        """Start the emulator, then open its port as a SerialDevice would a real one."""
        self._emulator = DeviceEmulator(protocol=self.protocol).start()
        self.port = self._emulator.port
        super().open()
        return self

    def close(self, timeout: float = 1.0) -> None:
        """Close the port (its OFF commands reach the emulator), then stop the emulator."""
        try:
            super().close(timeout)
        finally:
            if self._emulator is not None:
                self._emulator.stop()


def make_actuator(config: DeviceConfig) -> SerialDevice:
    """The device of one config section: emulated for ``port: emulator``."""
    if config.port == EMULATOR:
        return EmulatedDevice(config)
    return SerialDevice.from_config(config)


def make_actuators(configs: Iterable[DeviceConfig]) -> list[Actuator]:
    """The devices of the ``devices`` sections, in order (none is opened yet)."""
    return [make_actuator(c) for c in configs]
