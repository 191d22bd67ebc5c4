"""Registries of the extension points: camera kinds, rule predicates, processors, sinks.

A kind of part is one class with its config section, in one file, registered under a name
with :meth:`Registry.register`; configs are validated against the registered sections, and
builders look the factory up by name. There are no isinstance chains and no silent
fall-through to a default kind: an unknown name is an error that lists the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel

from poseloop.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[F]):
    """One registered kind: its name, config section (None: it has no options) and the
    factory that builds it."""

    name: str
    config: type[BaseModel] | None
    factory: F


class Registry(Generic[F]):
    """Name -> (config section, factory) for one extension point (``what``: its noun)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, Entry[F]] = {}

    def register(self, name: str, config: type[BaseModel] | None = None) -> Callable[[T], T]:
        """Decorator: register ``factory`` (a class or function) under ``name``; the
        decorated object is returned unchanged (a class stays that class)."""

        def add(factory: T) -> T:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = Entry(name, config, cast(F, factory))
            return factory

        return add

    def __getitem__(self, name: str) -> Entry[F]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.what} {name!r} (known: {', '.join(self._entries) or 'none'})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[F]]:
        return iter(list(self._entries.values()))

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def configs(self) -> tuple[type[BaseModel], ...]:
        """The config sections of the kinds that have one, in registration order."""
        return tuple(e.config for e in self._entries.values() if e.config is not None)
