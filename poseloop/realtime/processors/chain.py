"""The processor chain, the processor registry, and building a chain from config sections."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from poseloop.config import validate
from poseloop.errors import ConfigError, PoseloopError
from poseloop.realtime.types import Processor
from poseloop.registry import Entry, Registry

#: The kwargs every processor receives (see :mod:`poseloop.realtime.processors`).
PROCESS_KWARGS = ("frame_time", "t_capture_ns", "latency_ns", "frame_index",
                  "trigger_latency_ns")

#: Builds a processor from its validated config section and the model's pcutoff (the value
#: of a ``pcutoff: None`` option).
ProcessorFactory = Callable[[Any, float], Processor]

#: Processor kinds by their config's ``type``.
PROCESSORS: Registry[ProcessorFactory] = Registry("processor")


class ProcessorChain:
    """Runs processors in order on a copy of the points (the caller's array is never changed).

    Every processor gets the N x K x 3 points (N x K x 4 in 3D) and all of PROCESS_KWARGS.
    A processor returning None keeps the points; any other result of the same shape is
    taken as the new points (converted to float32 when it is not).
    """

    def __init__(self, processors: Sequence[Processor]):
        for p in processors:
            if not callable(getattr(p, "process", None)):
                raise ConfigError(f"{type(p).__name__} is not a processor: it has no "
                                  f"process(pose, **kwargs) method")
        self.processors = list(processors)
        # DeepLabCut-Live's frame_time is wall-clock seconds: the clocks' offset, fixed once
        # so that frame_time differences equal capture-time differences exactly.
        self._wall_minus_perf_s = time.time() - time.perf_counter_ns() * 1e-9
        self._points = np.zeros((0, 0, 3), np.float32)
        self._kwargs: dict[str, Any] = dict.fromkeys(PROCESS_KWARGS)

    def warmup(self) -> None:
        """Warm up the processors that have a ``warmup()`` (e.g. compile numba kernels)."""
        for p in self.processors:
            warmup = getattr(p, "warmup", None)
            if callable(warmup):
                warmup()

    def process(self, points: np.ndarray, *, t_capture_ns: int, latency_ns: int | None = None,
                frame_index: int | None = None,
                trigger_latency_ns: int | None = None) -> np.ndarray:
        """The points after every processor (N x K x 3 float32, N x K x 4 in 3D; may be a
        processor's own buffer, valid until the next call).

        latency_ns: this frame's capture -> now; trigger_latency_ns: the median exposure ->
        device output latency the devices measured (trigger timing), None until measured.
        """
        if self._points.shape != points.shape:
            if points.ndim != 3 or points.shape[2] not in (3, 4):
                raise ValueError(f"points are N x K x 3 (x, y, likelihood) or, in 3D, "
                                 f"N x K x 4 (x, y, z, likelihood); got shape {points.shape}")
            self._points = np.empty(points.shape, np.float32)
        np.copyto(self._points, points)
        current = self._points
        kwargs = self._kwargs
        kwargs["frame_time"] = t_capture_ns * 1e-9 + self._wall_minus_perf_s
        kwargs["t_capture_ns"] = t_capture_ns
        kwargs["latency_ns"] = latency_ns
        kwargs["frame_index"] = frame_index
        kwargs["trigger_latency_ns"] = trigger_latency_ns
        for p in self.processors:
            result = p.process(current, **kwargs)
            if result is not None:
                current = _as_points(result, current.shape, p, frame_index)
        return current

    def save(self, file: str = "") -> None:
        """Call each processor's DeepLabCut-Live ``save(file)`` (file_<i> when there are many).

        The engine calls it at close: DeepLabCut-Live processors write their logs here."""
        savers = [s for s in (getattr(p, "save", None) for p in self.processors) if callable(s)]
        path = Path(file)
        for i, save in enumerate(savers):
            save(file if len(savers) == 1 or not file
                 else str(path.with_name(f"{path.stem}_{i}{path.suffix}")))


def make_processors(configs: Iterable[BaseModel | Mapping[str, Any]],
                    pcutoff: float) -> ProcessorChain:
    """The chain of the configured processors, in order.

    configs: validated sections (``EngineConfig.processors``) or mappings, which are
    validated against the section of their ``type``. pcutoff: the model's, for options
    left at None.
    """
    built = []
    for i, cfg in enumerate(configs):
        where = f"processors[{i}]"
        if isinstance(cfg, Mapping):
            entry = _entry(cfg.get("type"), where)
            if entry.config is None:
                raise ConfigError(f"{where}: processor {entry.name!r} was registered without "
                                  f"a config section")
            section = validate(entry.config, dict(cfg), where)
        else:
            entry, section = _entry(getattr(cfg, "type", None), where), cfg
        built.append(entry.factory(section, pcutoff))
    return ProcessorChain(built)


def _entry(kind: object, where: str) -> Entry[ProcessorFactory]:
    if not isinstance(kind, str):
        raise ConfigError(f"{where}: field 'type': missing (one of: "
                          f"{', '.join(PROCESSORS.names())})")
    try:
        return PROCESSORS[kind]
    except ConfigError as e:
        raise ConfigError(f"{where}: field 'type': {e}") from None


def _as_points(result: Any, shape: tuple[int, ...], processor: Processor,
               frame_index: int | None) -> np.ndarray:
    points = np.asarray(result, dtype=np.float32)
    if points.shape != shape:
        at = "" if frame_index is None else f" at frame {frame_index}"
        raise PoseloopError(f"processor {type(processor).__name__} returned an array of shape "
                            f"{points.shape}{at}; the points are {' x '.join(map(str, shape))} "
                            f"(individuals x bodyparts x {describe_columns(shape[-1])})")
    return points


def describe_columns(count: int) -> str:
    """The names of the points' last axis, for messages: (x, y, likelihood) or with z."""
    return "(x, y, z, likelihood)" if count == 4 else "(x, y, likelihood)"
