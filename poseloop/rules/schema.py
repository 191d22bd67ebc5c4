"""The rule language's config: rules, actions, shapes, and the predicate kinds' registry.

Every predicate kind is registered in ``PREDICATES`` (name -> config section + compile
function, see :mod:`poseloop.rules.predicates`). A ``when`` is validated against the kind its
``type`` names (or, for a combinator, its one key: ``{all: [...]}``), looked up in the
registry when the config is validated, so a kind registered later is known everywhere a
rule is validated. Error messages list the registered kinds, and error paths are the
config's own (``rules[0].when.all[1].part``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from poseloop.config import Strict
from poseloop.errors import ConfigError
from poseloop.registry import Registry

if TYPE_CHECKING:
    from poseloop.rules.compiler import Compile

Point = tuple[float, float]


class RuleModel(Strict):
    """Rule config sections: finite numbers only; ``not``/``bytes`` are aliases of fields."""

    model_config = ConfigDict(
        allow_inf_nan=False, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


# ---------------------------------------------------------------------------- shapes


class Rect(RuleModel):
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


class Circle(RuleModel):
    """Disk of radius r around (cx, cy), edge included."""

    cx: float
    cy: float
    r: float = Field(gt=0)


class Box(RuleModel):
    """Axis-aligned box (3D), faces included: x1 <= x <= x2, y1 <= y <= y2, z1 <= z <= z2."""

    x1: float
    y1: float
    z1: float
    x2: float
    y2: float
    z2: float

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        for axis in "xyz":
            lo, hi = getattr(self, f"{axis}1"), getattr(self, f"{axis}2")
            if hi <= lo:
                raise ValueError(f"{axis}2 ({hi}) must be greater than {axis}1 ({lo})")
        return self


class Sphere(RuleModel):
    """Ball of radius r around (cx, cy, cz) (3D), surface included."""

    cx: float
    cy: float
    cz: float
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


Likelihood01 = Annotated[float, Field(ge=0, le=1)]
MinLikelihood = Annotated[
    Likelihood01 | None,
    Field(description="likelihood each part needs; None = the model's pcutoff"),
]


def check_band(above: float | None, below: float | None) -> None:
    """A band ``above < value < below`` needs one bound or two in order."""
    if above is None and below is None:
        raise ValueError("give above, below or both")
    if above is not None and below is not None and above >= below:
        raise ValueError(
            f"above ({above}) must be less than below ({below}); use not/any for outside a band"
        )


class PredicateConfig(RuleModel):
    """Base of every predicate kind's config section.

    A kind declares ``type: Literal["<name>"] = "<name>"``: the name it is registered under
    and written with in YAML. A kind with a field of its own name (``all: [...]``) may also
    be written as that single key.
    """

    type: Any  # each kind narrows it to its Literal name
    animal: str | None = Field(
        default=None, min_length=1,
        description="an individual's name, 'any' or 'all'; None = the animal of the enclosing "
        "predicate ('any' at the top of a rule)",
    )


#: Predicate kind name -> its config section and its compile function.
PREDICATES: Registry[Compile] = Registry("predicate")


def register_predicate(config: type[PredicateConfig]) -> Callable[[Compile], Compile]:
    """Decorator: register a compile function for ``config``, under its ``type``'s default."""
    name = config.model_fields["type"].default
    if not isinstance(name, str):
        raise TypeError(f"{config.__name__}.type needs a default: the name of its kind")
    return PREDICATES.register(name, config)


def _sections() -> dict[str, type[PredicateConfig]]:
    """The registered kinds' config sections, in registration order."""
    sections = {}
    for entry in PREDICATES:
        if entry.config is None or not issubclass(entry.config, PredicateConfig):
            raise TypeError(f"predicate {entry.name!r} has no PredicateConfig section "
                            "(register it with register_predicate)")
        sections[entry.name] = entry.config
    return sections


def _keyed(kind: str, config: type[PredicateConfig]) -> bool:
    """Whether the kind can be written as its single key (it has a field of its name)."""
    return any(kind in (name, field.alias) for name, field in config.model_fields.items())


def _either(names: Sequence[str]) -> str:
    return " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))


def _kind(value: Any) -> str | None:
    """The predicate kind: ``type``, or the one combinator key of ``{all: [...]}`` etc."""
    if isinstance(value, Mapping):
        if "type" in value:
            return value["type"] if isinstance(value["type"], str) else None
        keys = [k for k, config in _sections().items() if _keyed(k, config) and k in value]
        return keys[0] if len(keys) == 1 else None
    kind = getattr(value, "type", None)
    return kind if isinstance(kind, str) else None


def _validate_predicate(value: Any) -> PredicateConfig:
    """Validate a ``when`` (or a combinator's child) as the registered kind it names."""
    kind = _kind(value)
    sections = _sections()
    if kind is None:
        leaves = [k for k, config in sections.items() if not _keyed(k, config)]
        keyed = [k for k, config in sections.items() if _keyed(k, config)]
        raise PydanticCustomError(
            "predicate_kind_missing",
            "not a predicate: give type ({leaves})" + (" or one key: {keyed}" if keyed else ""),
            {"leaves": ", ".join(leaves), "keyed": _either(keyed) if keyed else ""},
        )
    config = sections.get(kind)
    if config is None:
        raise PydanticCustomError(
            "predicate_kind_unknown",
            "unknown predicate type {kind} (expected one of {kinds})",
            {"kind": repr(kind), "kinds": ", ".join(sections)},
        )
    return value if isinstance(value, config) else config.model_validate(value)


#: A predicate of any registered kind (dumped with its own kind's fields).
Predicate = SerializeAsAny[Annotated[PredicateConfig, PlainValidator(_validate_predicate)]]


# ---------------------------------------------------------------------------- rules


class Action(RuleModel):
    """What a device does when a rule fires: a command line, or raw bytes given in hex."""

    device: str = Field(min_length=1, description="name of a configured device")
    command: str | None = Field(
        default=None, min_length=1, description="e.g. 'PULSE 3 5' (one line)"
    )
    bytes_: str | None = Field(default=None, alias="bytes", description="hex, e.g. '4c' or '4c 0a'")

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


class Rule(RuleModel):
    """A named predicate tree, how it fires, and the actions it asks for."""

    name: str = Field(min_length=1)
    when: Predicate
    mode: Literal["edge", "level"] = Field(
        default="edge",
        description="edge: fire on becoming true; level: fire every frame while true",
    )
    debounce_frames: int = Field(
        default=1, ge=1, description="consecutive true frames before firing"
    )
    refractory_ms: float = Field(
        default=0.0, ge=0, description="no firing this soon after the last"
    )
    actions: list[Action] = Field(default_factory=list)


class RulesConfig(RuleModel):
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
    """A pydantic error location as a config path, ``rules[1].when.all[0].part``."""
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += f".{item}" if out else item
    return out


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
    return "\n".join(
        f"{(prefix + _where(x['loc'])) or 'rules'}: {x['msg'].removeprefix('Value error, ')}"
        for x in error.errors()
    )
