"""Posture predicates and trigger rules: a pose in, the rules that fire out.

A rule is config (YAML, validated by pydantic): a tree of predicates on bodyparts (``when``),
how it fires (``mode``, ``debounce_frames``, ``refractory_ms``) and the ``actions`` that
devices or the stream carry out. ``RuleSet.compile`` checks the tree against the model's
bodyparts and turns it into small index-based closures, so ``RuleSet.evaluate`` costs a few
microseconds per frame. Rules decide; they never send anything.

```yaml
rules:
  - name: nose_poke
    when:
      all:
        - {type: zone, part: snout, rect: {x1: 0, y1: 0, x2: 120, y2: 80}}
        - {type: angle, part_a: tailbase, part_b: snout, range: [-45, 45]}  # facing right
        - not: {type: speed, part: tailbase, above: 300}                    # px/s
    mode: edge            # edge: fire on becoming true; level: every frame while true
    debounce_frames: 3    # true for 3 consecutive frames first
    refractory_ms: 5000   # then at most once per 5 s (on t_capture_ns)
    actions:
      - {device: laser, command: "PULSE 3 5"}
      - {device: teensy, bytes: "4c"}
```

Predicates: ``zone`` (``rect: {x1, y1, x2, y2}``, ``circle: {cx, cy, r}`` or
``polygon: [[x, y], ...]``; boundaries count as inside, except that a point exactly on a
polygon's edge may fall either way), ``distance`` (``above``/``below`` px, strict),
``angle``, ``speed`` (``above``/``below`` px/s, strict, from consecutive poses' timestamps),
``likelihood`` (``p``: likelihood >= p); combinators ``all``, ``any`` (lists) and ``not``,
written as a single key (``{all: [...]}``) or with ``type``.

Geometry is in full-frame image pixels: x to the right, y *down*. An angle is the direction
of the vector part_a -> part_b in degrees: 0 = +x (right), 90 = +y (down), 180 = left,
270 = up (clockwise on screen). ``range: [lo, hi]`` runs from lo up to hi, both included,
wrapping past 360: ``[350, 10]`` and ``[-10, 10]`` are the same 20 degrees around +x.

Confidence: a geometric predicate needs each of its parts with likelihood >= its
``min_likelihood`` (default: the model's pcutoff) and finite x, y; otherwise its value is
*unknown*. Unknown propagates through the combinators (Kleene logic: ``all`` is False if a
child is False, ``any`` True if a child is True, ``not`` of unknown is unknown), and a rule
holds only when its tree is True, so a low-confidence part never makes a rule fire, not even
under ``not``. ``likelihood`` is the exception: a plain gate, True or False, so
``not: {type: likelihood, part: snout, p: 0.6}`` holds while the snout is not seen.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from math import atan2, degrees, hypot, inf, isfinite
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from poseloop.config import Strict
from poseloop.errors import ConfigError

Point = tuple[float, float]
#: A compiled predicate: the pose as K lists [x, y, likelihood] -> True, False or None (unknown).
Test = Callable[[list[list[float]]], bool | None]

_LEAVES = ("zone", "distance", "angle", "speed", "likelihood")
_COMBINATORS = ("all", "any", "not")


class _RuleConfig(Strict):
    """Rule config sections: finite numbers only; ``not``/``bytes`` are aliases of fields."""

    model_config = ConfigDict(
        allow_inf_nan=False, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


# ---------------------------------------------------------------------------- shapes


class Rect(_RuleConfig):
    """Axis-aligned rectangle, edges included: x1 <= x <= x2 and y1 <= y <= y2."""

    x1: float
    y1: float
    x2: float
    y2: float

    @model_validator(mode="after")
    def _ordered(self) -> Rect:
        if self.x2 <= self.x1:
            raise ValueError(f"x2 ({self.x2}) must be greater than x1 ({self.x1})")
        if self.y2 <= self.y1:
            raise ValueError(f"y2 ({self.y2}) must be greater than y1 ({self.y1})")
        return self


class Circle(_RuleConfig):
    """Disk of radius r around (cx, cy), edge included."""

    cx: float
    cy: float
    r: float = Field(gt=0)


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    """Whether p, known to be collinear with a-b, lies between a and b."""
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def _segments_meet(p1: Point, p2: Point, p3: Point, p4: Point) -> bool:
    """Whether segments p1-p2 and p3-p4 cross or touch."""
    d1, d2 = _cross(p3, p4, p1), _cross(p3, p4, p2)
    d3, d4 = _cross(p1, p2, p3), _cross(p1, p2, p4)
    if d1 * d2 < 0 and d3 * d4 < 0:
        return True
    return (
        (d1 == 0 and _on_segment(p3, p4, p1))
        or (d2 == 0 and _on_segment(p3, p4, p2))
        or (d3 == 0 and _on_segment(p1, p2, p3))
        or (d4 == 0 and _on_segment(p1, p2, p4))
    )


def _simple_polygon(points: list[Point]) -> list[Point]:
    """Check that the points go once around a simple outline: >= 3, no repeats, no crossings.

    A closing point equal to the first one is dropped (the outline is closed anyway).
    """
    if len(points) > 3 and points[0] == points[-1]:
        points = points[:-1]
    n = len(points)
    if n < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {n}")
    for k in range(n):
        prev, here, nxt = points[k - 1], points[k], points[(k + 1) % n]
        if here == nxt:
            raise ValueError(f"polygon points {k} and {(k + 1) % n} are the same")
        back = (here[0] - prev[0]) * (nxt[0] - here[0]) + (here[1] - prev[1]) * (nxt[1] - here[1])
        if _cross(prev, here, nxt) == 0 and back < 0:
            raise ValueError(f"polygon doubles back on itself at point {k}")
    for a in range(n):
        for b in range(a + 2, n - (a == 0)):
            if _segments_meet(points[a], points[a + 1], points[b], points[(b + 1) % n]):
                raise ValueError(
                    f"polygon edges {a}-{a + 1} and {b}-{(b + 1) % n} cross or touch "
                    "(list the points in order around the outline)"
                )
    return points


Polygon = Annotated[list[Point], AfterValidator(_simple_polygon)]


# ---------------------------------------------------------------------------- predicates


def _check_band(above: float | None, below: float | None) -> None:
    if above is None and below is None:
        raise ValueError("give above, below or both")
    if above is not None and below is not None and above >= below:
        raise ValueError(
            f"above ({above}) must be less than below ({below}); use not/any for outside a band"
        )


Likelihood01 = Annotated[float, Field(ge=0, le=1)]
Degrees = Annotated[float, Field(ge=-360, le=360)]
MinLikelihood = Annotated[
    Likelihood01 | None,
    Field(description="likelihood each part needs; None = the model's pcutoff"),
]


class Zone(_RuleConfig):
    """A bodypart inside a rectangle, circle or polygon (give exactly one)."""

    type: Literal["zone"] = "zone"
    part: str
    rect: Rect | None = None
    circle: Circle | None = None
    polygon: Polygon | None = Field(None, description="[[x, y], ...] in order around the outline")
    min_likelihood: MinLikelihood = None

    @model_validator(mode="after")
    def _one_shape(self) -> Zone:
        given = [k for k in ("rect", "circle", "polygon") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of rect, circle, polygon (got {', '.join(given) or 'none'})"
            )
        return self


class Distance(_RuleConfig):
    """Euclidean distance between two bodyparts: > above and/or < below (px)."""

    type: Literal["distance"] = "distance"
    part_a: str
    part_b: str
    above: float | None = Field(None, ge=0, description="px; holds when distance > above")
    below: float | None = Field(None, gt=0, description="px; holds when distance < below")
    min_likelihood: MinLikelihood = None

    @model_validator(mode="after")
    def _valid(self) -> Distance:
        if self.part_a == self.part_b:
            raise ValueError("part_a and part_b must be different bodyparts")
        _check_band(self.above, self.below)
        return self


class Angle(_RuleConfig):
    """Direction of part_a -> part_b in [lo, hi] degrees (0 = +x, 90 = +y down; wraps)."""

    type: Literal["angle"] = "angle"
    part_a: str
    part_b: str
    range: tuple[Degrees, Degrees] = Field(description="[lo, hi] degrees, lo up to hi, wrapping")
    min_likelihood: MinLikelihood = None

    @model_validator(mode="after")
    def _valid(self) -> Angle:
        if self.part_a == self.part_b:
            raise ValueError("part_a and part_b must be different bodyparts")
        if (self.range[1] - self.range[0]) % 360 == 0:
            raise ValueError(f"range {list(self.range)} is empty or the full circle")
        return self


class Speed(_RuleConfig):
    """A bodypart's speed (px/s) between consecutive poses: > above and/or < below."""

    type: Literal["speed"] = "speed"
    part: str
    above: float | None = Field(None, ge=0, description="px/s; holds when speed > above")
    below: float | None = Field(None, gt=0, description="px/s; holds when speed < below")
    min_likelihood: MinLikelihood = None

    @model_validator(mode="after")
    def _valid(self) -> Speed:
        _check_band(self.above, self.below)
        return self


class Likelihood(_RuleConfig):
    """Gate: the bodypart's likelihood >= p. Never unknown, so ``not`` of it is meaningful."""

    type: Literal["likelihood"] = "likelihood"
    part: str
    p: Likelihood01


class AllOf(_RuleConfig):
    """True when every child is True (False if any child is False, else unknown)."""

    type: Literal["all"] = "all"
    all: list[Predicate] = Field(min_length=1)


class AnyOf(_RuleConfig):
    """True when some child is True (False if every child is False, else unknown)."""

    type: Literal["any"] = "any"
    any: list[Predicate] = Field(min_length=1)


class Not(_RuleConfig):
    """Negation; unknown stays unknown (a low-confidence part never fires a rule)."""

    type: Literal["not"] = "not"
    not_: Predicate = Field(alias="not")


def _predicate_tag(value: Any) -> str | None:
    """The predicate kind: ``type``, or the one combinator key of ``{all: [...]}`` etc."""
    if isinstance(value, Mapping):
        if "type" in value:
            return value["type"] if isinstance(value["type"], str) else None
        keys = [k for k in _COMBINATORS if k in value]
        return keys[0] if len(keys) == 1 else None
    return getattr(value, "type", None)


Predicate = Annotated[
    Annotated[Zone, Tag("zone")]
    | Annotated[Distance, Tag("distance")]
    | Annotated[Angle, Tag("angle")]
    | Annotated[Speed, Tag("speed")]
    | Annotated[Likelihood, Tag("likelihood")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[Not, Tag("not")],
    Discriminator(_predicate_tag),
]
for _model in (AllOf, AnyOf, Not):
    _model.model_rebuild()


# ---------------------------------------------------------------------------- rules


class Action(_RuleConfig):
    """What a device does when a rule fires: a command line, or raw bytes given in hex."""

    device: str = Field(min_length=1, description="name of a configured device")
    command: str | None = Field(None, min_length=1, description="e.g. 'PULSE 3 5' (one line)")
    bytes_: str | None = Field(None, alias="bytes", description="hex, e.g. '4c' or '4c 0a'")

    @model_validator(mode="after")
    def _one_payload(self) -> Action:
        if (self.command is None) == (self.bytes_ is None):
            raise ValueError("give exactly one of command, bytes")
        if self.command is not None and ("\n" in self.command or "\r" in self.command):
            raise ValueError("command must be one line (the device adds its line ending)")
        if self.bytes_ is not None:
            try:
                if not bytes.fromhex(self.bytes_):
                    raise ValueError
            except ValueError:
                raise ValueError(f"bytes must be hex digit pairs, got {self.bytes_!r}") from None
        return self

    @property
    def raw(self) -> bytes | None:
        """The bytes of a ``bytes`` action (None for a command)."""
        return None if self.bytes_ is None else bytes.fromhex(self.bytes_)


class Rule(_RuleConfig):
    """A named predicate tree, how it fires, and the actions it asks for."""

    name: str = Field(min_length=1)
    when: Predicate
    mode: Literal["edge", "level"] = Field(
        "edge", description="edge: fire on becoming true; level: fire every frame while true"
    )
    debounce_frames: int = Field(1, ge=1, description="consecutive true frames before firing")
    refractory_ms: float = Field(0.0, ge=0, description="no firing this soon after the last")
    actions: list[Action] = Field(default_factory=list)


class RulesConfig(_RuleConfig):
    """The ``rules:`` list of an experiment config; names are unique."""

    rules: list[Rule] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        seen: dict[str, int] = {}
        for k, rule in enumerate(rules):
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used by rules[{seen[rule.name]}] "
                                 f"and rules[{k}]")
            seen[rule.name] = k
        return rules


def _where(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a config path, ``rules[1].when.all[0].part``.

    Drops the predicate kind pydantic inserts after each predicate slot.
    """
    out, slot, prev = "", False, None
    for item in loc:
        if slot and item in _LEAVES + _COMBINATORS:
            slot = False
            continue
        if isinstance(item, int):
            out += f"[{item}]"
            slot = prev in ("all", "any")
        else:
            out += f".{item}" if out else str(item)
            slot = item in ("when", "not")
        prev = item
    return out


def _message(error: Any) -> str:
    kinds = ", ".join(_LEAVES + _COMBINATORS)
    if error["type"] == "union_tag_invalid":
        return f"unknown predicate type {error['ctx']['tag']!r} (expected one of {kinds})"
    if error["type"] == "union_tag_not_found":
        return f"not a predicate: give type ({', '.join(_LEAVES)}) or one key: all, any or not"
    return error["msg"].removeprefix("Value error, ")


def validate_rules(data: RulesConfig | Mapping[str, Any] | Sequence[Any]) -> RulesConfig:
    """Validate rules (a ``{rules: [...]}`` mapping or the list) without knowing the model.

    Raises ConfigError with one line per problem, each naming its path (``rules[0].when...``).
    """
    if isinstance(data, RulesConfig):
        return data
    if not isinstance(data, Mapping):
        data = {"rules": data}
    try:
        return RulesConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_errors(e)) from None


def describe_errors(error: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming its config path (``rules[0].when.all[1].part``)."""
    return "\n".join(f"{(prefix + _where(x['loc'])) or 'rules'}: {_message(x)}"
                     for x in error.errors())


# ---------------------------------------------------------------------------- evaluators


class Event(NamedTuple):
    """A rule fired: its name, its actions, and the frame and capture time that fired it."""

    rule: str
    actions: tuple[Action, ...]
    frame_index: int
    t_ns: int


def _zone_test(i: int, m: float, zone: Zone) -> Test:
    if zone.rect is not None:
        x1, y1, x2, y2 = zone.rect.x1, zone.rect.y1, zone.rect.x2, zone.rect.y2

        def inside(x: float, y: float) -> bool:
            return x1 <= x <= x2 and y1 <= y <= y2
    elif zone.circle is not None:
        cx, cy, r2 = zone.circle.cx, zone.circle.cy, zone.circle.r**2

        def inside(x: float, y: float) -> bool:
            return (x - cx) ** 2 + (y - cy) ** 2 <= r2
    else:
        pts = zone.polygon or []
        # Even-odd ray casting; per edge (y_i, y_j, x_i, dx/dy), horizontal edges never count.
        edges = [
            (yi, yj, xi, (xj - xi) / (yj - yi))
            for (xi, yi), (xj, yj) in zip(pts, pts[-1:] + pts[:-1], strict=True)
            if yi != yj
        ]

        def inside(x: float, y: float) -> bool:
            odd = False
            for yi, yj, xi, slope in edges:
                if (yi > y) != (yj > y) and x < xi + (y - yi) * slope:
                    odd = not odd
            return odd

    def test(rows: list[list[float]]) -> bool | None:
        x, y, p = rows[i]
        if p >= m and isfinite(x + y):  # x + y is not finite if either is NaN or inf
            return inside(x, y)
        return None

    return test


def _distance_test(i: int, j: int, m: float, above: float | None, below: float | None) -> Test:
    lo = -1.0 if above is None else above * above
    hi = inf if below is None else below * below

    def test(rows: list[list[float]]) -> bool | None:
        xa, ya, pa = rows[i]
        xb, yb, pb = rows[j]
        if pa >= m and pb >= m and isfinite(xa + ya + xb + yb):
            d2 = (xb - xa) ** 2 + (yb - ya) ** 2
            return lo < d2 < hi
        return None

    return test


def _angle_test(i: int, j: int, m: float, lo: float, hi: float) -> Test:
    start, width = lo % 360.0, (hi - lo) % 360.0

    def test(rows: list[list[float]]) -> bool | None:
        xa, ya, pa = rows[i]
        xb, yb, pb = rows[j]
        if pa >= m and pb >= m and isfinite(xa + ya + xb + yb) and (xa != xb or ya != yb):
            return (degrees(atan2(yb - ya, xb - xa)) - start) % 360.0 <= width
        return None

    return test


class _SpeedTracker:
    """A bodypart's speed from the last two confident poses; None when there were not two."""

    __slots__ = ("i", "m", "x", "y", "t_ns", "speed")

    def __init__(self, i: int, m: float) -> None:
        self.i, self.m = i, m
        self.reset()

    def reset(self) -> None:
        self.x = self.y = 0.0
        self.t_ns: int | None = None
        self.speed: float | None = None

    def update(self, rows: list[list[float]], t_ns: int) -> None:
        x, y, p = rows[self.i]
        if not (p >= self.m and isfinite(x + y)):
            self.t_ns = self.speed = None
            return
        if self.t_ns is not None and t_ns > self.t_ns:
            self.speed = hypot(x - self.x, y - self.y) * 1e9 / (t_ns - self.t_ns)
        else:
            self.speed = None
        self.x, self.y, self.t_ns = x, y, t_ns


def _speed_test(tracker: _SpeedTracker, above: float | None, below: float | None) -> Test:
    lo = -1.0 if above is None else above
    hi = inf if below is None else below

    def test(rows: list[list[float]]) -> bool | None:
        v = tracker.speed
        return None if v is None else lo < v < hi

    return test


def _likelihood_test(i: int, p: float) -> Test:
    def test(rows: list[list[float]]) -> bool:
        return rows[i][2] >= p

    return test


def _all_test(children: list[Test]) -> Test:
    def test(rows: list[list[float]]) -> bool | None:
        result: bool | None = True
        for child in children:
            v = child(rows)
            if v is False:
                return False
            if v is None:
                result = None
        return result

    return test


def _any_test(children: list[Test]) -> Test:
    def test(rows: list[list[float]]) -> bool | None:
        result: bool | None = False
        for child in children:
            v = child(rows)
            if v is True:
                return True
            if v is None:
                result = None
        return result

    return test


def _not_test(child: Test) -> Test:
    def test(rows: list[list[float]]) -> bool | None:
        v = child(rows)
        return None if v is None else not v

    return test


class _Compiler:
    """Turns predicate trees into tests, collecting every unknown name with its path."""

    def __init__(self, bodyparts: Sequence[str], pcutoff: float) -> None:
        self.bodyparts = list(bodyparts)
        self.index = {name: k for k, name in enumerate(self.bodyparts)}
        self.pcutoff = pcutoff
        self.errors: list[str] = []
        self.trackers: list[_SpeedTracker] = []

    def part(self, name: str, path: str) -> int:
        if name not in self.index:
            self.errors.append(
                f"{path}: {name!r} is not a bodypart ({', '.join(self.bodyparts)})"
            )
            return 0
        return self.index[name]

    def test(self, p: Predicate, path: str) -> Test:
        if isinstance(p, AllOf):
            return _all_test([self.test(c, f"{path}.all[{k}]") for k, c in enumerate(p.all)])
        if isinstance(p, AnyOf):
            return _any_test([self.test(c, f"{path}.any[{k}]") for k, c in enumerate(p.any)])
        if isinstance(p, Not):
            return _not_test(self.test(p.not_, f"{path}.not"))
        if isinstance(p, Likelihood):
            return _likelihood_test(self.part(p.part, f"{path}.part"), p.p)
        m = self.pcutoff if p.min_likelihood is None else p.min_likelihood
        if isinstance(p, Zone):
            return _zone_test(self.part(p.part, f"{path}.part"), m, p)
        if isinstance(p, Speed):
            tracker = _SpeedTracker(self.part(p.part, f"{path}.part"), m)
            self.trackers.append(tracker)
            return _speed_test(tracker, p.above, p.below)
        i = self.part(p.part_a, f"{path}.part_a")
        j = self.part(p.part_b, f"{path}.part_b")
        if isinstance(p, Distance):
            return _distance_test(i, j, m, p.above, p.below)
        return _angle_test(i, j, m, *p.range)


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
    """Compiled rules: ``evaluate`` one pose per frame, get the events that fire.

    Firing: a rule *holds* on a frame when its tree is True. It is *ready* once it has held
    for ``debounce_frames`` consecutive frames; an edge rule fires on the frame it becomes
    ready, a level rule on every ready frame. A firing within ``refractory_ms`` of the
    rule's last firing (on the frames' t_ns) is dropped; an edge dropped this way is not
    fired later, so a stimulus is never delayed away from the posture that caused it.
    """

    def __init__(self, rules: list[_Compiled], trackers: list[_SpeedTracker], k: int) -> None:
        self._rules = rules
        self._trackers = trackers
        self._shape = (k, 3)

    @classmethod
    def compile(
        cls,
        rules_config: RulesConfig | Mapping[str, Any] | Sequence[Any],
        bodyparts: Sequence[str],
        pcutoff: float,
        *,
        devices: Collection[str] | None = None,
    ) -> RuleSet:
        """Check rules against the model's bodyparts (and devices, if given) and compile them.

        ``pcutoff`` is the default ``min_likelihood`` of geometric predicates. Raises
        ConfigError listing every problem with its path, e.g.
        ``rules[1].when.all[0].part: 'nose' is not a bodypart (snout, leftear, ...)``.
        """
        config = validate_rules(rules_config)
        if not 0 <= pcutoff <= 1:
            raise ConfigError(f"pcutoff must be in [0, 1], got {pcutoff}")
        if not bodyparts or len(set(bodyparts)) != len(bodyparts):
            raise ConfigError(f"bodyparts must be unique and not empty, got {list(bodyparts)}")
        compiler = _Compiler(bodyparts, pcutoff)
        compiled = []
        for k, rule in enumerate(config.rules):
            compiled.append(_Compiled(rule, compiler.test(rule.when, f"rules[{k}].when")))
            for a, action in enumerate(rule.actions):
                if devices is not None and action.device not in devices:
                    compiler.errors.append(
                        f"rules[{k}].actions[{a}].device: {action.device!r} is not a device "
                        f"({', '.join(devices) or 'none configured'})"
                    )
        if compiler.errors:
            raise ConfigError("\n".join(compiler.errors))
        return cls(compiled, compiler.trackers, len(bodyparts))

    @property
    def names(self) -> tuple[str, ...]:
        """The rule names, in config order (the order events are returned in)."""
        return tuple(r.name for r in self._rules)

    def evaluate(self, pose_data: np.ndarray, t_ns: int, frame_index: int) -> list[Event]:
        """The events fired by one pose (K x 3 x, y, likelihood) captured at t_ns."""
        if pose_data.shape != self._shape:
            raise ValueError(f"pose must be {self._shape} (K x 3), got {pose_data.shape}")
        rows = pose_data.tolist()
        for tracker in self._trackers:
            tracker.update(rows, t_ns)
        events: list[Event] = []
        for r in self._rules:
            if r.test(rows) is not True:
                r.run = 0
                continue
            r.run += 1
            if r.run < r.debounce or (r.run > r.debounce and not r.level):
                continue
            if r.last_ns is not None and t_ns - r.last_ns < r.refractory_ns:
                continue
            r.last_ns = t_ns
            events.append(Event(r.name, r.actions, frame_index, t_ns))
        return events

    def reset(self) -> None:
        """Forget debounce runs, last firings and speed history (e.g. between sessions)."""
        for r in self._rules:
            r.run, r.last_ns = 0, None
        for tracker in self._trackers:
            tracker.reset()
