"""The sink registry: every place poses go (stream, recorder, LSL, display, ...).

A sink kind is one file: its config section class and a factory registered under the
section's name, ``@SINKS.register("lsl", LslConfig)``, called as ``factory(section) -> Sink |
None`` (None: the section says "off", e.g. a ``record`` section without ``dir``). Its module is
named once in ``BUILTIN``; :func:`load_sinks` imports them (the engine config does, so that
every registered name is a valid top-level section). A sink's optional dependency (pylsl,
a GUI) is imported by its factory, not by its module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from poseloop.registry import Registry

#: Section name -> (config class, factory(section) -> Sink | None).
SINKS: Registry[Callable[[Any], Any]] = Registry("sink")

#: Modules that register the built-in sinks.
BUILTIN = (
    "poseloop.stream.publisher",
    "poseloop.stream.lsl",
    "poseloop.realtime.recorder",
    "poseloop.realtime.display",
    "poseloop.web.live",
)


def load_sinks() -> None:
    """Import the built-in sink modules (each registers itself); idempotent."""
    for module in BUILTIN:
        importlib.import_module(module)
