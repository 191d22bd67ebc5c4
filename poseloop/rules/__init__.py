"""Posture predicates and trigger rules: a pose in, the rules that fire out.

A rule is config (YAML, validated by pydantic): a tree of predicates on bodyparts (``when``),
how it fires (``mode``, ``debounce_frames``, ``refractory_ms``) and the ``actions`` that
devices or the stream carry out. ``RuleSet.compile`` checks the tree against the model's
bodyparts and turns it into small index-based closures, so ``RuleSet.evaluate`` costs a few
microseconds per frame. It takes a frame's poses as ``Pose.points``, N x K x 3 (individuals x
bodyparts x (x, y, likelihood)), or N x K x 4 (x, y, z, likelihood) for a rule set compiled
with ``dims=3`` (see 3D below); for several animals, see ``compiler``'s Animals. Rules
decide; they never send anything.

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
``polygon: [[x, y], ...]``, in 3D also ``box: {x1, y1, z1, x2, y2, z2}`` or
``sphere: {cx, cy, cz, r}``; boundaries count as inside, except that a point exactly on a
polygon's edge may fall either way), ``distance`` (``above``/``below`` px, strict),
``angle``, ``speed`` (``above``/``below`` px/s, strict, from consecutive poses' timestamps),
``likelihood`` (``p``: likelihood >= p), ``pair_distance`` and ``near`` (between animals);
combinators ``all``, ``any`` (lists) and ``not``, written as a single key (``{all: [...]}``)
or with ``type``.

In 2D, geometry is in full-frame image pixels: x to the right, y *down*. An angle is the direction
of the vector part_a -> part_b in degrees: 0 = +x (right), 90 = +y (down), 180 = left,
270 = up (clockwise on screen). ``range: [lo, hi]`` runs from lo up to hi, both included,
wrapping past 360: ``[350, 10]`` and ``[-10, 10]`` are the same 20 degrees around +x.

3D (``dims=3``, triangulated poses, ``Session.dims``): coordinates are world units (e.g. mm)
and x, y, z. ``distance``, ``pair_distance``, ``near`` and ``speed`` are 3D distances and
speeds, in world units (per second). ``box`` and ``sphere`` test x, y, z (a 2D rule set
rejects them, naming their config path); ``rect``, ``circle`` and ``polygon`` test the (x, y)
floor projection: "snout in the left third of the arena, at any height" (the floor when the
calibration's world z is vertical). ``angle`` is the heading of the (x, y) projection, as in
2D, or with ``axis: [x, y, z]`` the angle between part_a -> part_b and that world direction,
``range`` within [0, 180]. An untriangulated bodypart (NaN coordinates: fewer than two
cameras saw it) is unknown.

Confidence: a geometric predicate needs each of its parts with likelihood >= its
``min_likelihood`` (default: the model's pcutoff) and finite coordinates; otherwise its value
is *unknown*. Unknown propagates through the combinators (Kleene logic: ``all`` is False if a
child is False, ``any`` True if a child is True, ``not`` of unknown is unknown), and a rule
holds only when its tree is True, so a low-confidence part never makes a rule fire, not even
under ``not``. ``likelihood`` is the exception: a plain gate, True or False, so
``not: {type: likelihood, part: snout, p: 0.6}`` holds while the snout is not seen.

The package: ``schema`` (the config: rules, actions, shapes, the ``PREDICATES`` registry),
``compiler`` (``RuleSet``, and the ``Context`` a predicate compiles itself with) and
``predicates`` (one module per kind). A new predicate kind is one module with its config
section and its compile function, registered with ``@register_predicate``.
"""

from poseloop.rules import predicates as _predicates  # noqa: F401  (registers the built-in kinds)
from poseloop.rules.compiler import Context, Event, Part, PoseRows, RuleSet, Test, Tracker
from poseloop.rules.schema import (
    PREDICATES,
    Action,
    Box,
    Circle,
    Polygon,
    Predicate,
    PredicateConfig,
    Rect,
    Rule,
    RulesConfig,
    Sphere,
    describe_errors,
    register_predicate,
    validate_rules,
)

__all__ = [
    "PREDICATES",
    "Action",
    "Box",
    "Circle",
    "Context",
    "Event",
    "Part",
    "Polygon",
    "PoseRows",
    "Predicate",
    "PredicateConfig",
    "Rect",
    "Rule",
    "RuleSet",
    "RulesConfig",
    "Sphere",
    "Test",
    "Tracker",
    "describe_errors",
    "register_predicate",
    "validate_rules",
]
