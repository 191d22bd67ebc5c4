"""Compiles validated rules into per-frame tests, and runs them: ``RuleSet``.

Each predicate kind compiles itself (its registered compile function gets a ``Context`` that
resolves bodypart names to pose indices, reporting unknown names with their config path);
the compiler only walks the rules, collects the errors, and keeps each rule's firing memory.
A compiled test reads the frame's poses as rows of Python floats, ``[x, y, likelihood]``
(``[x, y, z, likelihood]`` for triangulated 3D poses) for every individual's bodyparts in
turn (one ``tolist`` per frame: Python floats are faster to test than numpy scalars); a
``Part`` says which row is a bodypart's. A rule set is compiled for 2D or 3D poses
(``dims``), so a predicate picks its 2D or 3D test once, at compile time.

Animals: every predicate takes ``animal: <name> | any | all``. A predicate without one
looks at the animal its enclosing predicate binds; at the top of a rule the default is
``any`` (the whole ``when`` must hold for one animal), so a single-animal model is
unchanged. ``any``/``all`` compile the predicate once per animal. Whichever animals made a
rule hold are named in its events.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import chain
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np

from poseloop.errors import ConfigError
from poseloop.rules.schema import (
    PREDICATES,
    Action,
    PredicateConfig,
    Rule,
    RulesConfig,
    validate_rules,
)

#: One frame's poses (``Pose.points``, N x K x (dims + 1)) as N * K rows ``[x, y, likelihood]``
#: or, in 3D, ``[x, y, z, likelihood]``: bodypart k of individual n is row ``n * K + k``.
PoseRows = list[list[float]]
#: A compiled predicate: the frame's poses -> True, False or None (unknown).
Test = Callable[[PoseRows], "bool | None"]
#: A predicate kind's compile function: its config and a context -> its test.
Compile = Callable[[Any, "Context"], Test]


class Part(NamedTuple):
    """Bodypart k of individual n, and its row in ``PoseRows``."""

    n: int
    k: int
    row: int


class Tracker(Protocol):
    """State a predicate keeps across frames (e.g. speed), updated before the rules run."""

    def update(self, rows: PoseRows, t_ns: int) -> None: ...

    def reset(self) -> None: ...


T = TypeVar("T", bound=Tracker)


class _Build:
    """What the compile of one rule set shares: the model's names, errors and trackers,
    and ``hits``: the animals that made the rule being evaluated hold (filled by tests)."""

    def __init__(self, bodyparts: Sequence[str], pcutoff: float,
                 individuals: Sequence[str], dims: int = 2) -> None:
        self.dims = dims
        self.bodyparts = list(bodyparts)
        self.index = {name: k for k, name in enumerate(self.bodyparts)}
        self.individuals = list(individuals)
        self.animal_index = {name: n for n, name in enumerate(self.individuals)}
        self.pcutoff = pcutoff
        self.errors: list[str] = []
        self.trackers: list[Tracker] = []
        self.hits: list[int] = []


class Context:
    """What a predicate's compile function gets: its config path and the model's names.

    ``path`` is the predicate's place in the config (``rules[0].when.all[1]``); fields are
    named relative to it, so problems are reported as ``rules[0].when.all[1].part: ...``.
    A test reads a part as ``x, y, p = rows[row]`` (``x, y, z, p`` when ``dims`` is 3), with
    the ``Part``'s row bound to a local at compile time (an attribute lookup every frame
    costs time); a predicate picks its 2D or 3D test from ``dims`` as it compiles, not per frame.
    """

    __slots__ = ("path", "_build", "animal")

    def __init__(self, path: str, build: _Build, animal: int | None = None) -> None:
        self.path = path
        self._build = build
        #: The animal this predicate looks at (None: not bound yet, see the module doc).
        self.animal = animal

    def bind(self, animal: int) -> Context:
        """The same place in the config, looking at animal ``animal``."""
        return Context(self.path, self._build, animal)

    @property
    def dims(self) -> int:
        """The poses' dimensions: 2 (image x, y in px) or 3 (world x, y, z, e.g. in mm)."""
        return self._build.dims

    def error(self, field: str, message: str) -> None:
        """Report a problem with ``field`` of this predicate, named by its config path
        (``rules[0].when.box: ...``); compiling goes on, and every problem is raised at once."""
        self._build.errors.append(f"{self.path}.{field}: {message}")

    @property
    def individuals(self) -> list[str]:
        """The model's individuals (one, ``animal``, for a single-animal model)."""
        return self._build.individuals

    def rows_of(self, animal: int) -> tuple[int, ...]:
        """The ``PoseRows`` rows of every bodypart of ``animal``."""
        k = len(self._build.bodyparts)
        return tuple(range(animal * k, (animal + 1) * k))

    @property
    def hits(self) -> list[int]:
        """Append an animal here when a test holds because of it (events name it)."""
        return self._build.hits

    def animal_of(self, name: str | None, field: str) -> int:
        """The index of individual ``name`` (given in ``field``); None: the bound animal.

        An unknown name is reported with its path and the model's individuals."""
        if name is None:
            return self.animal if self.animal is not None else 0
        n = self._build.animal_index.get(name)
        if n is None:
            self.error(field, f"{name!r} is not an individual of the model "
                              f"({', '.join(self._build.individuals)}; or any, all)")
            return 0
        return n

    def min_likelihood(self, value: float | None) -> float:
        """A predicate's ``min_likelihood``: its own, or the model's pcutoff."""
        return self._build.pcutoff if value is None else value

    def part(self, name: str, field: str, animal: int | None = None) -> Part:
        """The pose index of bodypart ``name`` (given in ``field``) of ``animal`` (default:
        the bound animal).

        An unknown name is reported with its path and the model's bodyparts, and compiling
        goes on (every problem is reported at once).
        """
        k = self._build.index.get(name)
        if k is None:
            self.error(field, f"{name!r} is not a bodypart ({', '.join(self._build.bodyparts)})")
            k = 0
        n = self.animal_of(None, field) if animal is None else animal
        return Part(n, k, n * len(self._build.bodyparts) + k)

    def child(self, predicate: PredicateConfig, field: str) -> Test:
        """Compile a sub-predicate given in ``field`` (``all[0]``, ``not``, ...)."""
        return _compile(predicate, Context(f"{self.path}.{field}", self._build, self.animal))

    def track(self, tracker: T) -> T:
        """Have ``tracker`` updated with every pose, before the rules, and reset with them."""
        self._build.trackers.append(tracker)
        return tracker


def _compile(predicate: PredicateConfig, ctx: Context) -> Test:
    """Compile a predicate for the animal(s) it names (module doc: Animals)."""
    factory = PREDICATES[predicate.type].factory
    animal = getattr(predicate, "animal", None)
    if animal is None:
        if ctx.animal is not None or len(ctx.individuals) == 1:
            return factory(predicate, ctx.bind(ctx.animal_of(None, "animal")))
        animal = "any"
    hits = ctx.hits
    if animal in ("any", "all"):
        return _quantified([factory(predicate, ctx.bind(n)) for n in range(len(ctx.individuals))],
                           animal == "all", hits)
    n = ctx.animal_of(animal, "animal")
    test = factory(predicate, ctx.bind(n))

    def named(rows: PoseRows) -> bool | None:
        result = test(rows)
        if result is True:
            hits.append(n)
        return result

    return named


def _quantified(tests: list[Test], every: bool, hits: list[int]) -> Test:
    """any/all over the animals; every animal's test runs, so each one that holds is named
    (or the animals its predicates named, when they name some)."""
    indexed = tuple(enumerate(tests))

    def quantified(rows: PoseRows) -> bool | None:
        held = unknown = False
        failed = False
        for n, test in indexed:
            before = len(hits)
            result = test(rows)
            if result is True:
                held = True
                if len(hits) == before:  # named predicates inside name their own animals
                    hits.append(n)
            elif result is None:
                unknown = True
            else:
                failed = True
        if every:
            return False if failed else (None if unknown else True)
        return True if held else (None if unknown else False)

    return quantified


class Event(NamedTuple):
    """A rule fired: its name, its actions, the frame and capture time that fired it, and
    the animals whose poses made it hold (empty for a single-animal model)."""

    rule: str
    actions: tuple[Action, ...]
    frame_index: int
    t_ns: int
    animals: tuple[str, ...] = ()


class _Compiled:
    """One rule's test and its firing memory (debounce run, last firing time)."""

    __slots__ = ("name", "actions", "test", "level", "debounce", "refractory_ns", "run", "last_ns")

    def __init__(self, rule: Rule, test: Test) -> None:
        self.name = rule.name
        self.actions = tuple(rule.actions)
        self.test = test
        self.level = rule.mode == "level"
        self.debounce = rule.debounce_frames
        self.refractory_ns = round(rule.refractory_ms * 1e6)
        self.run = 0
        self.last_ns: int | None = None


class RuleSet:
    """Compiled rules: ``evaluate`` one frame's poses, get the events that fire.

    Firing: a rule *holds* on a frame when its tree is True. It is *ready* once it has held
    for ``debounce_frames`` consecutive frames; an edge rule fires on the frame it becomes
    ready, a level rule on every ready frame. A firing within ``refractory_ms`` of the
    rule's last firing (on the frames' t_ns) is dropped; an edge dropped this way is not
    fired later, so a stimulus is never delayed away from the posture that caused it.
    """

    def __init__(self, rules: list[_Compiled], trackers: list[Tracker],
                 shape: tuple[int, int, int], individuals: Sequence[str] = ("animal",),
                 hits: list[int] | None = None) -> None:
        self._rules = rules
        self._trackers = trackers
        self._shape = shape
        self._single = shape[0] == 1
        self._individuals = tuple(individuals)
        self._hits = hits if hits is not None else []

    @classmethod
    def compile(
        cls,
        rules_config: RulesConfig | Mapping[str, Any] | Sequence[Any],
        bodyparts: Sequence[str],
        pcutoff: float,
        *,
        devices: Collection[str] | None = None,
        individuals: Sequence[str] | None = None,
        dims: int = 2,
    ) -> RuleSet:
        """Check rules against the model's bodyparts (and devices, if given) and compile them.

        ``pcutoff`` is the default ``min_likelihood`` of geometric predicates;
        ``individuals`` names the poses' N individuals (default: one); ``dims`` is the poses'
        2 (N x K x 3, image px) or 3 (N x K x 4, triangulated, world units: ``Session.dims``).
        Raises ConfigError listing every problem with its path, e.g.
        ``rules[1].when.all[0].part: 'nose' is not a bodypart (snout, leftear, ...)``.
        """
        config = validate_rules(rules_config)
        if not 0 <= pcutoff <= 1:
            raise ConfigError(f"pcutoff must be in [0, 1], got {pcutoff}")
        if not bodyparts or len(set(bodyparts)) != len(bodyparts):
            raise ConfigError(f"bodyparts must be unique and not empty, got {list(bodyparts)}")
        individuals = ("animal",) if individuals is None else tuple(individuals)
        if not individuals or len(set(individuals)) != len(individuals):
            raise ConfigError(f"individuals must be unique and not empty, got {list(individuals)}")
        if dims not in (2, 3):
            raise ConfigError(f"dims must be 2 or 3, got {dims}")
        build = _Build(bodyparts, pcutoff, individuals, dims)
        compiled = []
        for k, rule in enumerate(config.rules):
            test = _compile(rule.when, Context(f"rules[{k}].when", build))
            compiled.append(_Compiled(rule, test))
            for a, action in enumerate(rule.actions):
                if devices is not None and action.device not in devices:
                    build.errors.append(
                        f"rules[{k}].actions[{a}].device: {action.device!r} is not a device "
                        f"({', '.join(devices) or 'none configured'})"
                    )
        if build.errors:
            raise ConfigError("\n".join(build.errors))
        return cls(compiled, build.trackers, (len(individuals), len(bodyparts), dims + 1),
                   individuals, build.hits)

    @property
    def names(self) -> tuple[str, ...]:
        """The rule names, in config order (the order events are returned in)."""
        return tuple(r.name for r in self._rules)

    def evaluate(self, points: np.ndarray, t_ns: int, frame_index: int) -> list[Event]:
        """The events fired by one frame's poses (``Pose.points``: N x K x 3, or N x K x 4 in
        3D) captured at t_ns."""
        if points.shape != self._shape:
            n, k, c = self._shape
            coords = "x, y, likelihood" if c == 3 else "x, y, z, likelihood"
            raise ValueError(
                f"pose points must be N x K x {c} = {n} x {k} x {c} (individuals x bodyparts x "
                f"{coords}), got {' x '.join(map(str, points.shape)) or 'a scalar'}"
            )
        pose = points.tolist()
        rows = pose[0] if self._single else list(chain.from_iterable(pose))
        for tracker in self._trackers:
            tracker.update(rows, t_ns)
        events: list[Event] = []
        hits = self._hits
        for r in self._rules:
            hits.clear()
            if r.test(rows) is not True:
                r.run = 0
                continue
            r.run += 1
            if r.run < r.debounce or (r.run > r.debounce and not r.level):
                continue
            if r.last_ns is not None and t_ns - r.last_ns < r.refractory_ns:
                continue
            r.last_ns = t_ns
            animals = () if self._single else tuple(
                self._individuals[n] for n in sorted(set(hits)))
            events.append(Event(r.name, r.actions, frame_index, t_ns, animals))
        return events

    def reset(self) -> None:
        """Forget debounce runs, last firings and tracked history (e.g. between sessions)."""
        for r in self._rules:
            r.run, r.last_ns = 0, None
        for tracker in self._trackers:
            tracker.reset()
