"""The registry of camera kinds: one module per kind, holding its config section and class.

A kind's config section has ``kind: Literal[name] = name``; its class builds itself from
that section with ``from_config`` and is registered with :func:`camera_kind`. A kind is
then known to :func:`~poseloop.realtime.cameras.make_camera`, and a built-in one (imported
by :mod:`poseloop.realtime.cameras`) to ``CameraConfig``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from poseloop.errors import ConfigError
from poseloop.realtime.types import Camera
from poseloop.registry import Registry


class CameraKind(Protocol):
    """What a kind registers: a camera class that builds itself from its config section."""

    def __call__(self, *args: Any, **kwargs: Any) -> Camera: ...

    def from_config(self, config: Any) -> Camera: ...


#: Kind name -> (config section, camera class).
CAMERAS: Registry[CameraKind] = Registry("camera kind")

K = TypeVar("K", bound=CameraKind)


def camera_kind(name: str, config: type[BaseModel]) -> Callable[[K], K]:
    """Class decorator: register a camera class under ``name`` with its config section.

    The section must default its ``kind`` to ``name``: that field is how a config picks
    the kind, and how :func:`make_camera` finds the class of a section.
    """
    field = config.model_fields.get("kind")
    if field is None or field.default != name:
        raise ValueError(f"{config.__name__} needs the field kind: Literal[{name!r}] = {name!r}")

    def add(cls: K) -> K:
        CAMERAS.register(name, config)(cls)
        return cls

    return add


def lookup(kind: object) -> tuple[type[BaseModel], CameraKind]:
    """The config section and class of the kind named ``kind``; ConfigError listing the
    known kinds when there is no such kind."""
    if kind is None:
        raise ConfigError(f"no camera kind given (known: {', '.join(CAMERAS.names())})")
    entry = CAMERAS[kind if isinstance(kind, str) else repr(kind)]
    assert entry.config is not None  # camera_kind registers every kind with its section
    return entry.config, entry.factory
