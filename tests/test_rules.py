"""Rules: each predicate and combinator, confidence gating, firing modes, bad configs."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel

from poseloop.errors import ConfigError
from poseloop.rules import PREDICATES as KINDS
from poseloop.rules import (
    Action,
    Context,
    Event,
    PoseRows,
    PredicateConfig,
    Rect,
    Rule,
    RulesConfig,
    RuleSet,
    Test,
    register_predicate,
    validate_rules,
)
from poseloop.rules.predicates.zone import Zone

BP = ["snout", "leftear", "rightear", "tailbase"]
MS = 1_000_000  # ns


def pose(**parts: tuple[float, ...]) -> np.ndarray:
    """1 x K x 3 poses (one animal): every part at (500, 500) with likelihood 1 unless given
    as (x, y[, p])."""
    data = np.tile(np.array([500.0, 500.0, 1.0], np.float32), (1, len(BP), 1))
    for name, value in parts.items():
        data[0, BP.index(name), : len(value)] = value
    return data


def compile_one(when: dict, pcutoff: float = 0.6, **rule: Any) -> RuleSet:
    return RuleSet.compile([{"name": "r", "when": when, **rule}], BP, pcutoff)


def holds(when: dict, data: np.ndarray, pcutoff: float = 0.6) -> bool:
    """Whether a level rule on ``when`` fires on this single pose."""
    return bool(compile_one(when, pcutoff, mode="level").evaluate(data, 0, 0))


def fired(rules: RuleSet, frames: list[np.ndarray], dt_ms: float = 10) -> list[int]:
    """The frame indices at which any rule fired, frames spaced dt_ms apart."""
    return [
        k for k, data in enumerate(frames) if rules.evaluate(data, round(k * dt_ms * MS), k)
    ]


RECT = {"type": "zone", "part": "snout", "rect": {"x1": 10, "y1": 20, "x2": 30, "y2": 40}}
IN, OUT = pose(snout=(20, 30)), pose(snout=(5, 30))  # for RECT
# A U shape: arms at x 0-10 and 20-30 (y 0-30) joined by a base at y 30-40; the notch is open.
U = [[0, 0], [10, 0], [10, 30], [20, 30], [20, 0], [30, 0], [30, 40], [0, 40]]


# ---------------------------------------------------------------------------- predicates


@pytest.mark.parametrize(
    ("xy", "inside"),
    [((20, 30), True), ((10, 20), True), ((30, 40), True), ((9.9, 30), False), ((20, 40.1), False)],
)
def test_zone_rect_includes_its_edges(xy: tuple[float, float], inside: bool) -> None:
    assert holds(RECT, pose(snout=xy)) is inside


@pytest.mark.parametrize(("xy", "inside"), [((0, 0), True), ((3, 4), True), ((3.1, 4), False)])
def test_zone_circle(xy: tuple[float, float], inside: bool) -> None:
    zone = {"type": "zone", "part": "snout", "circle": {"cx": 0, "cy": 0, "r": 5}}
    assert holds(zone, pose(snout=xy)) is inside


@pytest.mark.parametrize(
    ("xy", "inside"),
    [((5, 10), True), ((25, 10), True), ((15, 35), True), ((15, 10), False), ((15, -1), False),
     ((35, 10), False), ((15, 29.9), False), ((9.9, 10), True), ((10.1, 10), False),
     ((19.9, 10), False), ((20.1, 10), True)],
)
def test_zone_concave_polygon(xy: tuple[float, float], inside: bool) -> None:
    zone = {"type": "zone", "part": "snout", "polygon": U}
    assert holds(zone, pose(snout=xy)) is inside


def test_polygon_closing_point_is_optional() -> None:
    closed = validate_rules([{"name": "r", "when": {"type": "zone", "part": "snout",
                                                     "polygon": [*U, U[0]]}}])
    zone = closed.rules[0].when
    assert isinstance(zone, Zone)
    assert zone.polygon == [tuple(p) for p in U]


@pytest.mark.parametrize(
    ("band", "d", "result"),
    [({"above": 10}, 10.5, True), ({"above": 10}, 10, False), ({"below": 10}, 9.5, True),
     ({"below": 10}, 10, False), ({"above": 5, "below": 10}, 7, True),
     ({"above": 5, "below": 10}, 12, False), ({"above": 5, "below": 10}, 3, False)],
)
def test_distance_is_strict(band: dict, d: float, result: bool) -> None:
    when = {"type": "distance", "part_a": "leftear", "part_b": "rightear", **band}
    assert holds(when, pose(leftear=(100, 100), rightear=(100 + 0.6 * d, 100 + 0.8 * d))) is result


@pytest.mark.parametrize(
    ("b", "rng", "result"),
    [((10, 0), [-10, 10], True),  # +x is 0 degrees
     ((0, 10), [80, 100], True),  # +y (down in the image) is 90 degrees
     ((0, -10), [260, 280], True),  # up is 270
     ((0, -10), [-100, -80], True),  # the same range written negative
     ((-10, 0), [90, 180], True),  # both ends included
     ((0, 10), [90, 180], True),
     ((10, -1), [350, 10], True),  # wrap-around: 354.3 degrees
     ((10, 1), [350, 10], True),  # 5.7 degrees
     ((-10, 0), [350, 10], False),
     ((10, 1), [10, 350], False),  # the complement of [350, 10]: 5.7 degrees is outside
     ((10, 3), [-10, 10], False)],
)
def test_angle_in_image_coordinates(b: tuple[float, float], rng: list[float], result: bool) -> None:
    when = {"type": "angle", "part_a": "tailbase", "part_b": "snout", "range": rng}
    assert holds(when, pose(tailbase=(100, 100), snout=(100 + b[0], 100 + b[1]))) is result


def test_angle_of_coincident_parts_is_unknown() -> None:
    when = {"type": "angle", "part_a": "tailbase", "part_b": "snout", "range": [-90, 90]}
    together = pose(tailbase=(100, 100), snout=(100, 100))
    assert not holds(when, together)
    assert not holds({"not": when}, together)


def test_likelihood_gate() -> None:
    when = {"type": "likelihood", "part": "snout", "p": 0.8}
    assert holds(when, pose(snout=(0, 0, 0.8)))
    assert not holds(when, pose(snout=(0, 0, 0.79)))
    assert not holds(when, pose(snout=(0, 0, np.nan)))
    assert holds({"not": when}, pose(snout=(0, 0, 0.3)))  # a gate is True/False, never unknown


# ---------------------------------------------------------------------------- confidence


def test_geometric_predicates_need_confident_parts() -> None:
    assert holds(RECT, pose(snout=(20, 30, 0.6)))  # pcutoff 0.6 is enough
    assert not holds(RECT, pose(snout=(20, 30, 0.59)))
    assert holds(RECT, pose(snout=(20, 30, 0.3)), pcutoff=0.2)
    assert not holds({**RECT, "min_likelihood": 0.9}, pose(snout=(20, 30, 0.8)))
    assert holds({**RECT, "min_likelihood": 0.1}, pose(snout=(20, 30, 0.2)))
    dist = {"type": "distance", "part_a": "snout", "part_b": "tailbase", "above": 1}
    assert not holds(dist, pose(tailbase=(0, 0, 0.1)))


@pytest.mark.parametrize("bad", [(5, 30, 0.1), (np.nan, 30, 1.0), (5, np.inf, 1.0)])
def test_unseen_part_never_fires_even_under_not(bad: tuple[float, ...]) -> None:
    data = pose(snout=bad)
    assert not holds(RECT, data)
    assert not holds({"not": RECT}, data)
    assert not holds({"not": {"not": RECT}}, data)
    assert not holds({"any": [{"not": RECT}]}, data)


def test_kleene_logic_of_unknown() -> None:
    unseen = pose(snout=(20, 30, 0.1))  # RECT is unknown
    true = {"type": "likelihood", "part": "tailbase", "p": 0.5}
    false = {"not": true}
    assert holds({"any": [RECT, true]}, unseen)  # True wins in any
    assert not holds({"any": [RECT, false]}, unseen)  # unknown
    assert not holds({"not": {"any": [RECT, false]}}, unseen)
    assert holds({"not": {"all": [RECT, false]}}, unseen)  # False wins in all
    assert not holds({"all": [RECT, true]}, unseen)
    assert not holds({"not": {"all": [RECT, true]}}, unseen)


def test_combinators_nest() -> None:
    ears_apart = {"type": "distance", "part_a": "leftear", "part_b": "rightear", "above": 20}
    when = {"all": [RECT, {"any": [{"not": ears_apart}, {"type": "likelihood",
                                                          "part": "tailbase", "p": 0.9}]}]}
    near = {"leftear": (0, 0), "rightear": (10, 0)}
    far = {"leftear": (0, 0), "rightear": (30, 0)}
    assert holds(when, pose(snout=(20, 30), **near))
    assert holds(when, pose(snout=(20, 30), **far))  # tailbase likelihood 1 >= 0.9
    assert not holds(when, pose(snout=(20, 30), tailbase=(0, 0, 0.5), **far))
    assert not holds(when, pose(snout=(5, 30), **near))
    assert holds({"type": "all", "all": [RECT]}, IN)  # the explicit form works too


# ---------------------------------------------------------------------------- speed


def test_speed_from_timestamps() -> None:
    rules = compile_one({"type": "speed", "part": "snout", "above": 900}, mode="level")
    assert rules.evaluate(pose(snout=(0, 0)), 0, 0) == []  # no previous pose: unknown
    # 10 px in 10 ms = 1000 px/s
    assert rules.evaluate(pose(snout=(6, 8)), 10 * MS, 1) == [Event("r", (), 1, 10 * MS)]
    # 10 px in 20 ms (a dropped frame) = 500 px/s: the timestamps count, not frame numbers
    assert rules.evaluate(pose(snout=(12, 16)), 30 * MS, 3) == []
    assert rules.evaluate(pose(snout=(18, 24)), 40 * MS, 4) != []
    rules.reset()
    assert rules.evaluate(pose(snout=(30, 40)), 50 * MS, 5) == []  # history forgotten


def test_speed_below_needs_two_consecutive_confident_poses() -> None:
    slow = {"type": "speed", "part": "snout", "below": 100}
    rules = compile_one(slow, mode="level")
    frames = [pose(snout=(0, 0)), pose(snout=(0, 0)), pose(snout=(0, 0, 0.1)),
              pose(snout=(0, 0)), pose(snout=(0.5, 0)), pose(snout=(50, 0))]
    assert fired(rules, frames) == [1, 4]  # 0: no history, 2: unseen, 3: history broken


def test_speed_tracks_every_frame_inside_short_circuits() -> None:
    gate = {"type": "likelihood", "part": "tailbase", "p": 0.5}
    fast = {"type": "speed", "part": "snout", "above": 900}
    rules = compile_one({"all": [gate, fast]}, mode="level")
    hidden_tail = {"tailbase": (0, 0, 0.0)}
    frames = [pose(snout=(0, 0)), pose(snout=(100, 0), **hidden_tail), pose(snout=(101, 0))]
    assert fired(rules, frames) == []  # 1 px in the last 10 ms, not 101 px in 20 ms


# ---------------------------------------------------------------------------- firing


def test_edge_fires_on_entering_level_while_true() -> None:
    frames = [OUT, IN, IN, IN, OUT, IN, OUT]
    assert fired(compile_one(RECT), frames) == [1, 5]
    assert fired(compile_one(RECT, mode="level"), frames) == [1, 2, 3, 5]


def test_debounce_needs_consecutive_frames() -> None:
    frames = [IN, IN, OUT, IN, IN, IN, IN, OUT, IN, IN, IN]
    assert fired(compile_one(RECT, debounce_frames=3), frames) == [5, 10]
    assert fired(compile_one(RECT, debounce_frames=3, mode="level"), frames) == [5, 6, 10]


def test_refractory_on_capture_time() -> None:
    rules = compile_one(RECT, refractory_ms=100)
    frames = [IN, OUT, IN, OUT, IN, OUT, IN]  # edges at 0, 40, 80, 120 ms (dt 20 ms)
    assert fired(rules, frames, dt_ms=20) == [0, 6]  # 40, 80 dropped; 120 >= 100 after 0
    rules = compile_one(RECT, refractory_ms=100)
    assert fired(rules, [IN, OUT, IN], dt_ms=49.9) == [0]
    # exactly refractory_ms later is allowed
    assert fired(compile_one(RECT, refractory_ms=100), [IN, OUT, IN], dt_ms=100) == [0, 2]


def test_level_with_refractory_repeats_at_that_rate() -> None:
    rules = compile_one(RECT, mode="level", refractory_ms=30)
    assert fired(rules, [IN] * 10, dt_ms=10) == [0, 3, 6, 9]


def test_dropped_edge_is_not_fired_late() -> None:
    rules = compile_one(RECT, refractory_ms=25)
    assert fired(rules, [IN, OUT, IN, IN, IN, IN], dt_ms=10) == [0]


def test_reset_forgets_runs_and_firings() -> None:
    rules = compile_one(RECT, debounce_frames=2, refractory_ms=1000)
    assert fired(rules, [IN, IN]) == [1]
    rules.reset()
    assert rules.evaluate(IN, 30 * MS, 2) == []  # debounce restarts
    assert rules.evaluate(IN, 40 * MS, 3) != []  # and the refractory period is gone


def test_events_carry_actions_and_times() -> None:
    text = """
    rules:
      - name: poke
        when: {type: zone, part: snout, circle: {cx: 20, cy: 30, r: 5}}
        actions:
          - {device: laser, command: "PULSE 3 5"}
          - {device: teensy, bytes: "4c 0a"}
      - name: never
        when: {type: likelihood, part: snout, p: 1.0}
        mode: level
      - name: seen
        when: {type: likelihood, part: snout, p: 0.5}
    """
    rules = RuleSet.compile(yaml.safe_load(text), BP, 0.6, devices=["laser", "teensy"])
    assert rules.names == ("poke", "never", "seen")
    events = rules.evaluate(pose(snout=(20, 30, 0.9)), 123, 7)
    assert [(e.rule, e.frame_index, e.t_ns) for e in events] == [("poke", 7, 123), ("seen", 7, 123)]
    laser, teensy = events[0].actions
    assert (laser.device, laser.command, laser.raw) == ("laser", "PULSE 3 5", None)
    assert (teensy.device, teensy.command, teensy.raw) == ("teensy", None, b"L\n")


def test_evaluate_leaves_the_pose_alone_and_checks_its_shape() -> None:
    data = IN.copy()
    compile_one(RECT).evaluate(data, 0, 0)
    np.testing.assert_array_equal(data, IN)
    with pytest.raises(ValueError, match=r"N x K x 3 = 1 x 4 x 3 .*got 1 x 3 x 3"):
        compile_one(RECT).evaluate(IN[:, :3], 0, 0)
    with pytest.raises(ValueError, match=r"N x K x 3 = 1 x 4 x 3 .*got 4 x 3"):
        compile_one(RECT).evaluate(IN[0], 0, 0)  # a K x 3 pose of the old data model


def test_predicates_look_at_any_individual_by_default() -> None:
    rules = RuleSet.compile([{"name": "r", "when": RECT, "mode": "level"},
                             {"name": "first", "when": {**RECT, "animal": "mouse1"},
                              "mode": "level"}], BP, 0.6, individuals=["mouse1", "mouse2"])
    assert [(e.rule, e.animals) for e in rules.evaluate(np.concatenate([IN, OUT]), 0, 0)] \
        == [("r", ("mouse1",)), ("first", ("mouse1",))]
    assert [(e.rule, e.animals) for e in rules.evaluate(np.concatenate([OUT, IN]), 0, 1)] \
        == [("r", ("mouse2",))]
    with pytest.raises(ValueError, match=r"N x K x 3 = 2 x 4 x 3 .*got 1 x 4 x 3"):
        rules.evaluate(IN, 0, 2)
    with pytest.raises(ConfigError, match=r"individuals must be unique and not empty"):
        RuleSet.compile([], BP, 0.6, individuals=["mouse1", "mouse1"])
    with pytest.raises(ConfigError, match=r"individuals must be unique and not empty"):
        RuleSet.compile([], BP, 0.6, individuals=[])


def test_config_round_trips_through_yaml() -> None:
    when = {"any": [RECT, {"not": {"type": "angle", "part_a": "tailbase", "part_b": "snout",
                                   "range": [350, 10]}}]}
    config = validate_rules({"rules": [{"name": "r", "when": when,
                                        "actions": [{"device": "t", "bytes": "ff"}]}]})
    text = yaml.safe_dump(config.model_dump(mode="json"))
    assert validate_rules(yaml.safe_load(text)) == config
    assert isinstance(config, RulesConfig)


# ---------------------------------------------------------------------------- bad configs


def reject(rules: Any, match: str, devices: list[str] | None = None) -> str:
    with pytest.raises(ConfigError, match=match) as e:
        RuleSet.compile(rules, BP, 0.6, devices=devices)
    return str(e.value)


def test_unknown_bodypart_names_the_path_and_the_choices() -> None:
    rules = [{"name": "a", "when": RECT},
             {"name": "b", "when": {"all": [{"type": "zone", "part": "nose", "rect":
                                             {"x1": 0, "y1": 0, "x2": 1, "y2": 1}},
                                            {"not": {"type": "distance", "part_a": "snout",
                                                     "part_b": "tail", "below": 3}}]}}]
    message = reject(rules, "nose")
    assert message.splitlines() == [
        "rules[1].when.all[0].part: 'nose' is not a bodypart (snout, leftear, rightear, tailbase)",
        "rules[1].when.all[1].not.part_b: 'tail' is not a bodypart "
        "(snout, leftear, rightear, tailbase)",
    ]


@pytest.mark.parametrize(
    ("when", "match"),
    [({"type": "zone", "part": "snout", "rect": {"x1": 5, "y1": 0, "x2": 5, "y2": 1}},
      r"when\.rect: x2 \(5\.0\) must be greater than x1"),
     ({"type": "zone", "part": "snout", "rect": {"x1": 0, "y1": 2, "x2": 5, "y2": 1}},
      r"when\.rect: y2 \(1\.0\) must be greater than y1"),
     ({"type": "zone", "part": "snout", "circle": {"cx": 0, "cy": 0, "r": 0}},
      r"when\.circle\.r: Input should be greater than 0"),
     ({"type": "zone", "part": "snout", "polygon": [[0, 0], [1, 1]]},
      r"when\.polygon: a polygon needs at least 3 points, got 2"),
     ({"type": "zone", "part": "snout", "polygon": [[0, 0], [2, 0], [2, 0], [2, 2]]},
      r"when\.polygon: polygon points 1 and 2 are the same"),
     ({"type": "zone", "part": "snout", "polygon": [[0, 0], [1, 0], [2, 0]]},
      r"when\.polygon: polygon doubles back"),
     ({"type": "zone", "part": "snout", "polygon": [[0, 0], [2, 2], [2, 0], [0, 2]]},
      r"when\.polygon: polygon edges 0-1 and 2-3 cross"),  # a bow tie
     ({"type": "zone", "part": "snout", "polygon": [[0, 0], [4, 0], [4, 4], [2, 0], [0, 4]]},
      r"when\.polygon: polygon edges 0-1 and 2-3 cross or touch"),  # touches at (2, 0)
     ({"type": "zone", "part": "snout", "polygon": [[0, 0], ["a", 1], [1, 1]]},
      r"when\.polygon\[1\]\[0\]: Input should be a valid number"),
     ({"type": "zone", "part": "snout", "rect": {"x1": 0, "y1": 0, "x2": "inf", "y2": 1}},
      r"when\.rect\.x2: Input should be a finite number"),
     ({"type": "zone", "part": "snout"}, r"when: give exactly one of rect, circle, polygon"),
     ({"type": "zone", "part": "snout", "circle": {"cx": 0, "cy": 0, "r": 1},
       "polygon": U}, r"\(got circle, polygon\)"),
     ({"type": "distance", "part_a": "snout", "part_b": "tailbase"},
      r"when: give above, below or both"),
     ({"type": "distance", "part_a": "snout", "part_b": "tailbase", "above": 5, "below": 5},
      r"above \(5\.0\) must be less than below"),
     ({"type": "distance", "part_a": "snout", "part_b": "snout", "above": 5},
      r"part_a and part_b must be different"),
     ({"type": "angle", "part_a": "snout", "part_b": "tailbase", "range": [10, 370]},
      r"when\.range\[1\]: Input should be less than or equal to 360"),
     ({"type": "angle", "part_a": "snout", "part_b": "tailbase", "range": [-90, 270]},
      r"range \[-90\.0, 270\.0\] is empty or the full circle"),
     ({"type": "speed", "part": "snout", "below": -1}, r"when\.below: Input should be greater"),
     ({"type": "likelihood", "part": "snout", "p": 2}, r"when\.p: Input should be less"),
     ({"type": "speeed", "part": "snout"}, r"when: unknown predicate type 'speeed'"),
     ({"type": 3, "part": "snout"}, r"when: not a predicate: give type"),
     ("zone", r"when: not a predicate: give type"),
     ({"part": "snout"}, r"when: not a predicate: give type"),
     ({"all": []}, r"when\.all: List should have at least 1 item"),
     ({"any": [RECT, {"not": {"type": "blob"}}]}, r"when\.any\[1\]\.not: unknown predicate"),
     ({**RECT, "radius": 3}, r"when\.radius: Extra inputs are not permitted"),
     ({"all": [RECT], "any": [RECT]}, r"when: not a predicate"),
     ({"all": [RECT], "extra": 1}, r"when\.extra: Extra inputs are not permitted")],
)
def test_bad_predicates_name_the_field(when: dict, match: str) -> None:
    message = reject([{"name": "ok", "when": RECT}, {"name": "r", "when": when}], match)
    assert message.startswith("rules[1].when")


@pytest.mark.parametrize(
    ("rule", "match"),
    [({"colour": "red"}, r"rules\[0\]\.colour: Extra inputs"),
     ({"mode": "pulse"}, r"rules\[0\]\.mode: Input should be 'edge' or 'level'"),
     ({"debounce_frames": 0}, r"rules\[0\]\.debounce_frames: Input should be greater"),
     ({"refractory_ms": -1}, r"rules\[0\]\.refractory_ms: Input should be greater"),
     ({"actions": [{"device": "laser"}]}, r"actions\[0\]: give exactly one of command, bytes"),
     ({"actions": [{"device": "t", "bytes": "4"}]}, r"actions\[0\]: bytes must be hex"),
     ({"actions": [{"device": "t", "bytes": ""}]}, r"actions\[0\]: bytes must be hex"),
     ({"actions": [{"device": "t", "command": "ON 1\nOFF 1"}]}, r"must be one line"),
     ({"actions": [{"device": "t", "command": "ON", "pin": 3}]}, r"actions\[0\]\.pin: Extra")],
)
def test_bad_rules_name_the_field(rule: dict, match: str) -> None:
    reject([{"name": "r", "when": RECT, **rule}], match)


def test_other_rule_set_errors() -> None:
    reject([{"name": "r", "when": RECT}, {"name": "r", "when": RECT}],
           r"rules: rule name 'r' is used by rules\[0\] and rules\[1\]")
    reject([{"when": RECT}], r"rules\[0\]\.name: Field required")
    reject({"rule": []}, r"^rule: Extra inputs")  # a mapping is the whole document
    reject([{"name": "r", "when": RECT, "actions": [{"device": "lazer", "command": "ON 1"}]}],
           r"rules\[0\]\.actions\[0\]\.device: 'lazer' is not a device \(laser\)", ["laser"])
    with pytest.raises(ConfigError, match="pcutoff"):
        RuleSet.compile([], BP, 1.5)
    with pytest.raises(ConfigError, match="unique"):
        RuleSet.compile([], ["a", "a"], 0.5)
    assert RuleSet.compile([], BP, 0.5).evaluate(IN, 0, 0) == []
    assert Action(device="d", bytes="00").raw == b"\0"


def test_predicate_kinds_are_listed_from_the_registry() -> None:
    assert KINDS.names() == ("zone", "distance", "angle", "speed", "likelihood", "all", "any",
                             "not", "pair_distance", "near")
    message = reject([{"name": "r", "when": {"type": "speeed", "part": "snout"}}], "speeed")
    assert message == ("rules[0].when: unknown predicate type 'speeed' "
                       "(expected one of zone, distance, angle, speed, likelihood, all, any, not, "
                       "pair_distance, near)")
    message = reject([{"name": "r", "when": {"part": "snout"}}], "not a predicate")
    assert message == ("rules[0].when: not a predicate: give type "
                       "(zone, distance, angle, speed, likelihood, pair_distance, near) or one "
                       "key: all, any or not")


def test_rules_built_in_python_take_predicate_objects() -> None:
    zone = Zone(part="snout", rect=Rect(x1=10, y1=20, x2=30, y2=40))
    rule = Rule(name="r", when=zone)
    assert rule.when is zone
    assert validate_rules([rule.model_dump()]).rules[0] == rule  # dumped with the zone's fields
    assert fired(RuleSet.compile([rule], BP, 0.6), [OUT, IN]) == [1]


# ---------------------------------------------------------------------------- a new kind


class Lower(PredicateConfig):
    """A bodypart lower in the image than ``y`` (y grows downwards)."""

    type: Literal["lower"] = "lower"
    part: str
    y: float


def compile_lower(config: Lower, ctx: Context) -> Test:
    i = ctx.part(config.part, "part").row
    m, y0 = ctx.min_likelihood(None), config.y

    def test(rows: PoseRows) -> bool | None:
        _, y, p = rows[i]
        return y > y0 if p >= m else None

    return test


@pytest.fixture
def lower(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers the ``lower`` kind for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(KINDS, "_entries", dict(KINDS._entries))
    register_predicate(Lower)(compile_lower)


class Experiment(BaseModel):
    """A config section holding rules, defined before the new kind is registered."""

    rules: list[Rule]


def test_a_registered_kind_is_usable_from_a_config(lower: None) -> None:
    text = """
    rules:
      - name: low_and_inside
        when:
          all:
            - {type: lower, part: tailbase, y: 100}
            - not: {type: lower, part: snout, y: 35}
            - {type: zone, part: snout, rect: {x1: 10, y1: 20, x2: 30, y2: 40}}
        mode: level
    """
    rules = RuleSet.compile(yaml.safe_load(text), BP, 0.6)
    frames = [pose(snout=(20, 30), tailbase=(0, 150)), pose(snout=(20, 38), tailbase=(0, 150)),
              pose(snout=(20, 30), tailbase=(0, 50)), pose(snout=(20, 30), tailbase=(0, 150, 0.1))]
    assert fired(rules, frames) == [0]
    config = Experiment.model_validate(yaml.safe_load(text))
    assert isinstance(config.rules[0].when.model_dump()["all"][0], dict)
    assert Experiment.model_validate(config.model_dump()) == config
    assert fired(RuleSet.compile(config.model_dump(), BP, 0.6), frames) == [0]


def test_a_registered_kind_reports_errors_like_the_built_in_ones(lower: None) -> None:
    rules = [{"name": "r", "when": {"any": [RECT, {"type": "lower", "part": "nose", "y": 1}]}}]
    assert reject(rules, "nose") == ("rules[0].when.any[1].part: 'nose' is not a bodypart "
                                     "(snout, leftear, rightear, tailbase)")
    reject([{"name": "r", "when": {"not": {"type": "lower", "part": "snout"}}}],
           r"^rules\[0\]\.when\.not\.y: Field required$")
    reject([{"name": "r", "when": {"type": "speeed"}}],
           r"\(expected one of zone, distance, angle, speed, likelihood, all, any, not, "
           r"pair_distance, near, lower\)")
    with pytest.raises(ValueError, match="registered twice"):
        register_predicate(Lower)(lambda config, ctx: compile_lower(config, ctx))


# ---------------------------------------------------------------------------- properties

XY = st.floats(-20, 220, allow_nan=False)
POSES = st.lists(
    st.tuples(st.one_of(XY, st.just(float("nan"))), XY, st.floats(0, 1)),
    min_size=len(BP), max_size=len(BP),
).map(lambda rows: np.array([rows], np.float32))
PART = st.sampled_from(BP)
PAIR = st.lists(PART, min_size=2, max_size=2, unique=True)
LIKELY = st.one_of(st.none(), st.floats(0, 1))
SHAPES = st.one_of(
    st.builds(lambda x, y, w, h: {"rect": {"x1": x, "y1": y, "x2": x + w, "y2": y + h}},
              XY, XY, st.floats(1, 200), st.floats(1, 200)),
    st.builds(lambda x, y, r: {"circle": {"cx": x, "cy": y, "r": r}}, XY, XY, st.floats(1, 150)),
    st.builds(lambda s, dx: {"polygon": [[p[0] * s + dx, p[1] * s + dx] for p in U]},
              st.floats(0.5, 6), XY),
)
LEAVES = st.one_of(
    st.builds(lambda part, shape, m: {"type": "zone", "part": part, **shape, "min_likelihood": m},
              PART, SHAPES, LIKELY),
    st.builds(lambda pq, lo, w: {"type": "distance", "part_a": pq[0], "part_b": pq[1],
                                 "above": lo, "below": lo + w},
              PAIR, st.floats(0, 100), st.floats(1, 100)),
    st.builds(lambda pq, lo, w: {"type": "angle", "part_a": pq[0], "part_b": pq[1],
                                 "range": [lo, lo + w]},
              PAIR, st.floats(-360, 0), st.floats(1, 359)),
    st.builds(lambda part, p: {"type": "likelihood", "part": part, "p": p}, PART, st.floats(0, 1)),
)
PREDICATES = st.recursive(
    LEAVES,
    lambda kids: st.one_of(
        st.lists(kids, min_size=1, max_size=3).map(lambda k: {"all": k}),
        st.lists(kids, min_size=1, max_size=3).map(lambda k: {"any": k}),
        kids.map(lambda k: {"not": k}),
    ),
    max_leaves=6,
)


def fire_set(whens: dict[str, dict], data: np.ndarray) -> set[str]:
    rules = [{"name": name, "when": when, "mode": "level"} for name, when in whens.items()]
    return {e.rule for e in RuleSet.compile(rules, BP, 0.6).evaluate(data, 0, 0)}


@given(PREDICATES, POSES)
def test_logic_identities(p: dict, data: np.ndarray) -> None:
    fires = fire_set({"p": p, "not_not_p": {"not": {"not": p}}, "any_p": {"any": [p]},
                      "all_p": {"all": [p]}, "not_p": {"not": p}}, data)
    for same in ("not_not_p", "any_p", "all_p"):
        assert (same in fires) == ("p" in fires)
    assert not {"p", "not_p"} <= fires  # a predicate and its negation never both fire


@given(PREDICATES, PREDICATES, POSES)
def test_de_morgan(a: dict, b: dict, data: np.ndarray) -> None:
    fires = fire_set({"not_all": {"not": {"all": [a, b]}},
                      "any_not": {"any": [{"not": a}, {"not": b}]},
                      "not_any": {"not": {"any": [a, b]}},
                      "all_not": {"all": [{"not": a}, {"not": b}]}}, data)
    assert ("not_all" in fires) == ("any_not" in fires)
    assert ("not_any" in fires) == ("all_not" in fires)


@given(XY, XY, st.floats(1, 200), st.floats(1, 200), XY, XY)
def test_rect_equals_polygon_of_its_corners(
    x1: float, y1: float, w: float, h: float, x: float, y: float
) -> None:
    x2, y2 = x1 + w, y1 + h
    assume(min(abs(x - x1), abs(x - x2), abs(y - y1), abs(y - y2)) > 1e-3)
    corners = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
    fires = fire_set(
        {"rect": {"type": "zone", "part": "snout", "rect": {"x1": x1, "y1": y1, "x2": x2,
                                                            "y2": y2}},
         "polygon": {"type": "zone", "part": "snout", "polygon": corners},
         "reversed": {"type": "zone", "part": "snout", "polygon": corners[::-1]}},
        pose(snout=(x, y)),
    )
    assert fires in (set(), {"rect", "polygon", "reversed"})
