"""Rules on triangulated 3D poses: box and sphere zones, floor-projected 2D zones, 3D
distances, speeds and angles, several animals, and 3D config in a 2D rule set."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poseloop.errors import ConfigError
from poseloop.realtime.builder import rule_zones
from poseloop.rules import RuleSet

BP = ["snout", "leftear", "rightear", "tailbase"]
MS = 1_000_000  # ns
NAN = math.nan
BOX = {"type": "zone", "part": "snout",
       "box": {"x1": 0, "y1": 10, "z1": 20, "x2": 100, "y2": 110, "z2": 120}}
SPHERE = {"type": "zone", "part": "snout", "sphere": {"cx": 10, "cy": 20, "cz": 30, "r": 5}}


def pose3(**parts: tuple[float, ...]) -> np.ndarray:
    """1 x K x 4 poses (one animal): every part at (500, 500, 0) with likelihood 1 unless
    given as (x, y, z[, p])."""
    data = np.tile(np.array([500.0, 500.0, 0.0, 1.0], np.float32), (1, len(BP), 1))
    for name, value in parts.items():
        data[0, BP.index(name), : len(value)] = value
    return data


def compile3(when: dict, pcutoff: float = 0.6, **kwargs: Any) -> RuleSet:
    return RuleSet.compile([{"name": "r", "when": when, "mode": "level"}], BP, pcutoff,
                           dims=3, **kwargs)


def holds(when: dict, data: np.ndarray, t_ns: int = 0) -> bool:
    """Whether a level rule on ``when`` fires on this single 3D pose."""
    return bool(compile3(when).evaluate(data, t_ns, 0))


def value(when: dict, data: np.ndarray) -> bool | None:
    """The predicate's value (True, False or None: unknown) on a 3D pose: it holds, its
    negation holds, or neither."""
    rules = RuleSet.compile([{"name": "p", "when": when, "mode": "level"},
                             {"name": "not_p", "when": {"not": when}, "mode": "level"}],
                            BP, 0.6, dims=3)
    fired = {e.rule for e in rules.evaluate(data, 0, 0)}
    assert fired != {"p", "not_p"}
    return True if "p" in fired else False if "not_p" in fired else None


# ---------------------------------------------------------------------------- 3D zones


@pytest.mark.parametrize(
    ("xyz", "inside"),
    [((50, 60, 70), True),
     ((0, 10, 20), True), ((100, 110, 120), True),  # corners
     ((0, 60, 70), True), ((50, 110, 70), True), ((50, 60, 20), True),  # faces
     ((50, 60, 19.9), False), ((50, 60, 120.1), False),  # above / below
     ((-0.1, 60, 70), False), ((50, 110.1, 70), False)],
)
def test_box_includes_its_faces(xyz: tuple[float, float, float], inside: bool) -> None:
    assert value(BOX, pose3(snout=xyz)) is inside


@pytest.mark.parametrize(
    ("xyz", "inside"),
    [((10, 20, 30), True), ((15, 20, 30), True), ((10, 20, 25), True),  # centre, surface
     ((13, 24, 30), True), ((10, 23, 34), True),  # 3-4-5 on the surface
     ((10, 20, 35.1), False), ((14, 20, 34), False),  # 4.1 above; sqrt(32) > 5 off-axis
     ((13, 24, 30.5), False)],  # in the circle of its (x, y), not in the ball
)
def test_sphere_includes_its_surface(xyz: tuple[float, float, float], inside: bool) -> None:
    assert value(SPHERE, pose3(snout=xyz)) is inside


@pytest.mark.parametrize("zone", [BOX, SPHERE])
@pytest.mark.parametrize("snout", [(NAN, NAN, NAN), (10, 20, NAN), (NAN, 20, 30),
                                   (10, 20, 30, 0.5)])
def test_3d_zone_is_unknown_without_a_confident_triangulated_point(
        zone: dict, snout: tuple[float, ...]) -> None:
    assert value(zone, pose3(snout=snout)) is None


def test_3d_zone_min_likelihood_overrides_pcutoff() -> None:
    data = pose3(snout=(10, 20, 30, 0.5))
    assert holds({**SPHERE, "min_likelihood": 0.4}, data)
    assert not holds(SPHERE, data)


# ---------------------------------------------------------------------------- 2D zones in 3D


@pytest.mark.parametrize("z", [-1000.0, 0.0, 35.5, 1e6])
@pytest.mark.parametrize(
    ("shape", "xy", "inside"),
    [({"rect": {"x1": 0, "y1": 0, "x2": 100, "y2": 300}}, (100, 150), True),
     ({"rect": {"x1": 0, "y1": 0, "x2": 100, "y2": 300}}, (100.5, 150), False),
     ({"circle": {"cx": 0, "cy": 0, "r": 5}}, (3, 4), True),
     ({"circle": {"cx": 0, "cy": 0, "r": 5}}, (3, 4.1), False),
     ({"polygon": [[0, 0], [10, 0], [10, 10]]}, (8, 2), True),
     ({"polygon": [[0, 0], [10, 0], [10, 10]]}, (2, 8), False)],
)
def test_2d_zones_test_the_floor_projection_at_any_height(
        shape: dict, xy: tuple[float, float], inside: bool, z: float) -> None:
    zone = {"type": "zone", "part": "snout", **shape}
    assert value(zone, pose3(snout=(*xy, z))) is inside


def test_2d_zone_in_3d_is_unknown_when_untriangulated() -> None:
    zone = {"type": "zone", "part": "snout", "circle": {"cx": 0, "cy": 0, "r": 5}}
    assert value(zone, pose3(snout=(NAN, NAN, NAN))) is None
    assert value(zone, pose3(snout=(0, 0, 0, 0.1))) is None


# ---------------------------------------------------------------------------- 3D geometry


def test_distance_is_3d() -> None:
    # 5 apart in (x, y), 12 apart in z: 13 in 3D.
    data = pose3(snout=(0, 0, 0), tailbase=(3, 4, 12))
    near = {"type": "distance", "part_a": "snout", "part_b": "tailbase", "below": 10}
    assert value(near, data) is False
    assert value({**near, "below": 13.01}, data) is True
    assert value({"type": "distance", "part_a": "snout", "part_b": "tailbase", "above": 12.99},
                 data) is True
    assert value(near, pose3(snout=(0, 0, 0), tailbase=(3, 0, 4))) is True  # 5
    assert value(near, pose3(snout=(0, 0, NAN), tailbase=(3, 0, 4))) is None
    assert value(near, pose3(snout=(0, 0, 0), tailbase=(3, 0, 4, 0.2))) is None
    # The same band in 2D, on the same (x, y): 5 px apart, below 10.
    pose2 = np.array([[[0, 0, 1], [500, 500, 1], [500, 500, 1], [3, 4, 1]]], np.float32)
    assert RuleSet.compile([{"name": "r", "when": near}], BP, 0.6).evaluate(pose2, 0, 0)


def test_speed_is_3d() -> None:
    rules = compile3({"type": "speed", "part": "snout", "above": 900})
    # Along z only: 10 mm in 10 ms = 1000 mm/s; then (3, 4, 12) mm = 13 mm in 10 ms.
    frames = [pose3(snout=(0, 0, 0)), pose3(snout=(0, 0, 10)), pose3(snout=(0, 0, 10)),
              pose3(snout=(3, 4, 22)), pose3(snout=(3, 4, NAN)), pose3(snout=(3, 4, 30))]
    fired = [k for k, data in enumerate(frames) if rules.evaluate(data, k * 10 * MS, k)]
    assert fired == [1, 3]  # frame 5 follows an untriangulated frame: no speed yet
    slow = compile3({"type": "speed", "part": "snout", "below": 1301, "above": 1299})
    assert [k for k, d in enumerate(frames[2:4]) if slow.evaluate(d, k * 10 * MS, k)] == [1]
    slow.reset()
    assert not slow.evaluate(frames[3], 10 * MS, 1)


@pytest.mark.parametrize(
    ("b", "rng", "expected"),
    [((10, 0, 50), [-45, 45], True),  # heading +x, steeply up: the floor heading counts
     ((0, 10, -50), [45, 135], True),  # heading +y
     ((-10, 1, 0), [-45, 45], False),
     ((0, 0, 50), [-45, 45], None)],  # vertical: no heading
)
def test_angle_without_axis_is_the_floor_heading(
        b: tuple[float, float, float], rng: list[float], expected: bool | None) -> None:
    angle = {"type": "angle", "part_a": "tailbase", "part_b": "snout", "range": rng}
    assert value(angle, pose3(tailbase=(0, 0, 0), snout=b)) is expected


@pytest.mark.parametrize(
    ("b", "rng", "expected"),
    [((0, 0, 10), [0, 30], True),  # straight up
     ((10, 0, 10), [0, 45], True), ((10, 0, 10), [0, 44.9], False),  # 45 degrees
     ((10, 0, 10), [45, 90], True),
     ((10, 5, 0), [90, 180], True), ((10, 5, 0), [0, 89.9], False),  # level: 90
     ((1, 1, -10), [150, 180], True),  # pointing down
     ((0, 0, 0), [0, 30], None),  # no direction
     ((0, 0, NAN), [0, 30], None)],
)
def test_angle_to_an_axis_is_between_3d_vectors(
        b: tuple[float, float, float], rng: list[float], expected: bool | None) -> None:
    angle = {"type": "angle", "part_a": "tailbase", "part_b": "snout", "range": rng,
             "axis": [0, 0, 2]}
    assert value(angle, pose3(tailbase=(0, 0, 0), snout=b)) is expected


def test_likelihood_is_a_rows_last_element() -> None:
    gate = {"type": "likelihood", "part": "snout", "p": 0.5}
    assert value(gate, pose3(snout=(0.1, 0.2, 0.3, 0.6))) is True
    assert value(gate, pose3(snout=(0.9, 0.9, 0.9, 0.4))) is False  # x, y, z are no likelihood
    assert value(gate, pose3(snout=(NAN, NAN, NAN, 0.9))) is True  # a gate, never unknown


def test_logic_in_3d() -> None:
    both, box_only = pose3(snout=(10, 20, 30)), pose3(snout=(50, 60, 70))
    unknown = pose3(snout=(10, 20, NAN))
    gate = {"type": "likelihood", "part": "snout", "p": 0.5}
    assert value({"all": [SPHERE, BOX]}, both) is True
    assert value({"all": [SPHERE, BOX]}, box_only) is False
    assert value({"any": [SPHERE, BOX]}, box_only) is True
    assert value({"any": [SPHERE, BOX]}, unknown) is None
    assert value({"all": [gate, {"not": SPHERE}]}, unknown) is None


# ---------------------------------------------------------------------------- animals


def two(a: dict[str, tuple[float, ...]], b: dict[str, tuple[float, ...]]) -> np.ndarray:
    """2 x K x 4 poses of mouse1 and mouse2."""
    return np.concatenate([pose3(**a), pose3(**b)])


def events(when: dict, data: np.ndarray) -> list[tuple[str, ...]]:
    rules = compile3(when, individuals=["mouse1", "mouse2"])
    return [e.animals for e in rules.evaluate(data, 0, 0)]


def test_animal_any_all_and_named_in_3d() -> None:
    # mouse1's snout in the box; mouse2's has the box's (x, y) but is above it.
    data = two({"snout": (50, 60, 70)}, {"snout": (50, 60, 170)})
    assert events(BOX, data) == [("mouse1",)]  # default: any
    assert events({**BOX, "animal": "all"}, data) == []
    assert events({**BOX, "animal": "mouse2"}, data) == []
    floor = {"type": "zone", "part": "snout", "rect": {"x1": 0, "y1": 10, "x2": 100, "y2": 110}}
    assert events({**floor, "animal": "all"}, data) == [("mouse1", "mouse2")]
    assert events({**floor, "animal": "mouse2"}, data) == [("mouse2",)]
    assert events(BOX, two({"snout": (NAN, NAN, NAN)}, {"snout": (50, 60, 70)})) \
        == [("mouse2",)]


def test_pair_distance_and_near_are_3d() -> None:
    # The snouts are 6 apart in (x, y) and 8 in z: 10 in 3D.
    data = two({"snout": (0, 0, 0)}, {"snout": (6, 0, 8), "tailbase": (0, 0, 3)})
    pair = {"type": "pair_distance", "animal_a": "mouse1", "part_a": "snout",
            "part_b": "snout", "below": 9}
    assert events(pair, data) == []
    assert events({**pair, "below": 10.5}, data) == [("mouse1", "mouse2")]
    assert events({**pair, "above": 9.9, "below": None}, data) == [("mouse1", "mouse2")]
    near = {"type": "near", "part": "snout", "other_part": "snout", "within": 9.99}
    assert events(near, data) == []
    assert events({**near, "within": 10}, data) == [("mouse1", "mouse2")]  # the edge counts
    # Without other_part, any part of the other animal: mouse2's tailbase is 3 from
    # mouse1's snout (and mouse1's tailbase is 500 from mouse2's snout).
    assert events({"type": "near", "part": "snout", "within": 4}, data) \
        == [("mouse1", "mouse2")]
    assert events({**near, "within": 10}, two({"snout": (0, 0, 0)}, {"snout": (6, 0, NAN)})) \
        == []


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("when", "message"),
    [(BOX, "rules[0].when.box: a 3D zone needs triangulated poses (cameras with a "
           "calibration)"),
     ({"all": [{"type": "likelihood", "part": "snout", "p": 0.5}, {"not": SPHERE}]},
      "rules[0].when.all[1].not.sphere: a 3D zone needs triangulated poses (cameras with a "
      "calibration)"),
     ({"type": "angle", "part_a": "snout", "part_b": "tailbase", "range": [0, 30],
       "axis": [0, 0, 1]},
      "rules[0].when.axis: an angle to a 3D axis needs triangulated poses (cameras with a "
      "calibration)")],
)
def test_3d_config_in_a_2d_rule_set_names_its_path(when: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        RuleSet.compile([{"name": "r", "when": when}], BP, 0.6)
    assert str(error.value) == message


def test_3d_config_errors_are_reported_with_the_others() -> None:
    with pytest.raises(ConfigError) as error:
        RuleSet.compile([{"name": "r", "when": {"all": [{**BOX, "part": "nose"}, SPHERE]}}],
                        BP, 0.6)
    assert str(error.value).splitlines() == [
        "rules[0].when.all[0].part: 'nose' is not a bodypart (snout, leftear, rightear, "
        "tailbase)",
        "rules[0].when.all[0].box: a 3D zone needs triangulated poses (cameras with a "
        "calibration)",
        "rules[0].when.all[1].sphere: a 3D zone needs triangulated poses (cameras with a "
        "calibration)",
    ]


@pytest.mark.parametrize(
    ("when", "match"),
    [({**BOX, "box": {**BOX["box"], "z2": 20}}, r"when\.box: z2 \(20\.0\) must be greater "
                                                r"than z1 \(20\.0\)"),
     ({**BOX, "box": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}}, r"when\.box\.z1: Field required"),
     ({**SPHERE, "sphere": {"cx": 0, "cy": 0, "cz": 0, "r": -1}},
      r"when\.sphere\.r: Input should be greater than 0"),
     ({**SPHERE, "sphere": {"cx": 0, "cy": 0, "cz": "nan", "r": 1}},
      r"when\.sphere\.cz: Input should be a finite number"),
     ({**BOX, "rect": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}}, r"\(got rect, box\)"),
     ({"type": "zone", "part": "snout"},
      r"when: give exactly one of rect, circle, polygon, box, sphere \(got none\)"),
     ({"type": "angle", "part_a": "snout", "part_b": "tailbase", "range": [-10, 30],
       "axis": [0, 0, 1]}, r"when: with axis, range \[-10\.0, 30\.0\] must be"),
     ({"type": "angle", "part_a": "snout", "part_b": "tailbase", "range": [0, 180],
       "axis": [0, 0, 1]}, r"not the whole \[0, 180\]"),
     ({"type": "angle", "part_a": "snout", "part_b": "tailbase", "range": [0, 30],
       "axis": [0, 0, 0]}, r"when: axis must not be \[0, 0, 0\]")],
)
def test_bad_3d_config_names_the_field(when: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        compile3(when)


def test_pose_shape_follows_dims() -> None:
    rules = compile3(SPHERE)
    with pytest.raises(ValueError, match=r"N x K x 4 = 1 x 4 x 4 \(individuals x bodyparts x "
                                         r"x, y, z, likelihood\), got 1 x 4 x 3"):
        rules.evaluate(pose3()[..., [0, 1, 3]], 0, 0)
    rules2 = RuleSet.compile([{"name": "r", "when": {"type": "likelihood", "part": "snout",
                                                      "p": 0.5}}], BP, 0.6)
    with pytest.raises(ValueError, match=r"N x K x 3 = 1 x 4 x 3 .*got 1 x 4 x 4"):
        rules2.evaluate(pose3(), 0, 0)
    with pytest.raises(ConfigError, match="dims must be 2 or 3, got 4"):
        RuleSet.compile([], BP, 0.6, dims=4)


def test_rule_zones_leave_out_3d_shapes() -> None:
    floor = {"type": "zone", "part": "snout", "circle": {"cx": 0, "cy": 0, "r": 5}}
    rules = [{"name": "a", "when": {"all": [BOX, floor]}}, {"name": "b", "when": SPHERE}]
    assert rule_zones(rules) == [("a", {"circle": {"cx": 0, "cy": 0, "r": 5}})]


# ---------------------------------------------------------------------------- flat 3D = 2D

XY = st.floats(-300, 300, allow_nan=False, width=32)
POINT = st.tuples(XY, XY, st.floats(0, 1, width=32))
PART = st.sampled_from(BP)
PAIR = st.lists(PART, min_size=2, max_size=2, unique=True)
FLAT = st.one_of(
    st.builds(lambda pq, lo, w: {"type": "distance", "part_a": pq[0], "part_b": pq[1],
                                 "above": lo, "below": lo + w},
              PAIR, st.floats(0, 100), st.floats(1, 100)),
    st.builds(lambda pq, lo, w: {"type": "angle", "part_a": pq[0], "part_b": pq[1],
                                 "range": [lo, lo + w]},
              PAIR, st.floats(-360, 0), st.floats(1, 359)),
    st.builds(lambda part, x, y, r: {"type": "zone", "part": part,
                                     "circle": {"cx": x, "cy": y, "r": r}},
              PART, XY, XY, st.floats(1, 150)),
    st.builds(lambda part, p: {"type": "likelihood", "part": part, "p": p},
              PART, st.floats(0, 1)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(FLAT, min_size=1, max_size=3), st.lists(POINT, min_size=4, max_size=4),
       st.floats(-1000, 1000, allow_nan=False, width=32))
def test_poses_at_one_height_give_the_2d_results(
        whens: list[dict], points: list[tuple[float, float, float]], z: float) -> None:
    rules = [{"name": f"r{k}", "when": w, "mode": "level"} for k, w in enumerate(whens)]
    flat = np.array([points], np.float32)
    raised = np.insert(flat, 2, z, axis=2)
    fired_2d = {e.rule for e in RuleSet.compile(rules, BP, 0.6).evaluate(flat, 0, 0)}
    fired_3d = {e.rule for e in RuleSet.compile(rules, BP, 0.6, dims=3).evaluate(raised, 0, 0)}
    assert fired_3d == fired_2d
