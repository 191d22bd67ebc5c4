"""Any DeepLabCut-Live processor, by import path (config ``type: python``).

DeepLabCut-Live processors take one animal's K x 3 pose: :class:`DlcLiveAdapter` gives
them ``points[0]`` when there is one individual (N = 1) and the N x K x 3 points otherwise
(K x 4 and N x K x 4, x, y, z, likelihood, for triangulated 3D poses),
passes the kwargs their ``process`` accepts, and takes their result back. Their ``save``
(where DeepLabCut-Live processors write their logs) is called by the chain's.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from poseloop.config import Strict
from poseloop.errors import ConfigError, PoseloopError
from poseloop.realtime.processors.chain import PROCESS_KWARGS, PROCESSORS, describe_columns


class PythonProcessorConfig(Strict):
    """Any object with DeepLabCut-Live's ``process(pose, **kwargs)``, by import path."""

    type: Literal["python"] = "python"
    target: str = Field(description="'package.module:ClassName'")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class DlcLiveAdapter:
    """Runs a DeepLabCut-Live style processor on N x K x 3 (or 3D N x K x 4) points.

    processor: any object with ``process(pose, **kwargs)``; it gets a K x 3 pose when N = 1
    (a view: changes it makes in place are kept), the N x K x 3 points otherwise, and may
    return a pose of the same shape (any dtype or a list) or None (keep the points).
    ``save`` and ``warmup`` are the processor's own, or None when it has none.
    """

    def __init__(self, processor: Any, name: str | None = None):
        if not callable(getattr(processor, "process", None)):
            raise ConfigError(f"{name or type(processor).__name__} is not a processor: it has "
                              f"no process(pose, **kwargs) method")
        self.processor = processor
        self.name = name or type(processor).__name__
        self.save: Callable[[str], object] | None = _method(processor, "save")
        self.warmup: Callable[[], object] | None = _method(processor, "warmup")
        self._accepts = _accepted_kwargs(processor)
        self._out = np.zeros((0, 0, 3), np.float32)
        self._target = self._out  # what the processor's result is copied into

    def process(self, pose: np.ndarray, **kwargs: Any) -> np.ndarray | None:
        """The processor's result shaped as ``pose``, float32 (the adapter's buffer), or None."""
        single = pose.shape[0] == 1
        given = kwargs if self._accepts is None else {
            n: kwargs[n] for n in self._accepts if n in kwargs}
        result = self.processor.process(pose[0] if single else pose, **given)
        if result is None:
            return None
        if self._out.shape != pose.shape:
            self._out = np.empty(pose.shape, np.float32)
            self._target = self._out[0] if single else self._out
        values = np.asarray(result)
        if values.shape != self._target.shape:
            raise PoseloopError(
                f"processor {self.name} returned an array of shape {values.shape}; it is given "
                f"and returns {' x '.join(map(str, self._target.shape))} "
                f"({'bodyparts' if single else 'individuals x bodyparts'} x "
                f"{describe_columns(pose.shape[-1])})"
            )
        try:
            np.copyto(self._target, values)
        except TypeError as e:
            raise PoseloopError(f"processor {self.name} returned {values.dtype} values, not "
                                f"numbers: {e}") from None
        return self._out


def load_processor(target: str, kwargs: Mapping[str, Any] | None = None) -> Any:
    """Instantiate ``"module:Class"`` with ``kwargs`` (as config files name processors)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"processor {target!r}: expected 'module:Class', e.g. "
                          f"'poseloop.realtime.processors:KalmanPredictor'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"processor {target!r}: cannot import {module_name}: {e}") from e
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(f"processor {target!r}: {module_name} has no {attr}")
    try:
        processor = cls(**dict(kwargs or {}))
    except (TypeError, ConfigError) as e:
        raise ConfigError(f"processor {target!r}: bad arguments {dict(kwargs or {})}: {e}") from e
    if not callable(getattr(processor, "process", None)):
        raise ConfigError(f"processor {target!r}: has no process(pose, **kwargs) method")
    return processor


@PROCESSORS.register("python", PythonProcessorConfig)
def python(config: PythonProcessorConfig, pcutoff: float) -> DlcLiveAdapter:
    """The target processor, adapted to N x K x C points (pcutoff is the target's business)."""
    return DlcLiveAdapter(load_processor(config.target, config.kwargs), name=config.target)


def _method(obj: object, name: str) -> Callable[..., object] | None:
    method = getattr(obj, name, None)
    return method if callable(method) else None


def _accepted_kwargs(processor: Any) -> tuple[str, ...] | None:
    """The PROCESS_KWARGS that processor.process takes by name; None when it takes **kwargs."""
    try:
        params = inspect.signature(processor.process).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: pass everything
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    names = {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return tuple(n for n in PROCESS_KWARGS if n in names)
