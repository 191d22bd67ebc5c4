"""Multi-animal: project I/O, targets -> peaks -> assembly round trip, the numba kernels vs
their numpy twins, tracking through crossings, and evaluation figures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseloop.errors import ProjectError
from poseloop.heatmap import HeatmapSpec
from poseloop.modelspec import ModelSpec
from poseloop.project import read_project
from poseloop.realtime.assembly import assemble, link_score, paf_scores_numpy, tree_order
from poseloop.realtime.multi_decoder import MultiAnimalDecoder
from poseloop.realtime.peaks import find_peaks, find_peaks_numpy
from poseloop.realtime.tracker import AnimalTracker
from poseloop.synthetic import BODYPARTS, SKELETON, crossing_keypoints
from poseloop.training.multi_evaluate import match, mean_average_precision, oks
from poseloop.training.multi_targets import MultiTargets, paf_graph

SHARED = Path(__file__).resolve().parents[2] / "shared"
TWOFLIES = SHARED / "datasets" / "twoflies-SLEAP"
CSV = "labeled-data/centered_pair/CollectedData_sleap.csv"
H5 = "labeled-data/centered_pair/CollectedData_sleap.h5"

needs_flies = pytest.mark.skipif(not TWOFLIES.is_dir(), reason="shared twoflies-SLEAP missing")


def _spec(bodyparts: list[str], individuals: list[str], edges: list[tuple[str, str]],
          unique: list[str] | None = None, stride: float = 8.0) -> ModelSpec:
    return ModelSpec(bodyparts=bodyparts, skeleton=edges, stride=stride, offset=stride / 2,
                     locref_stdev=7.2801, likelihood="sigmoid", individuals=individuals,
                     paf_edges=edges, unique_bodyparts=unique or [])


def _maps(targets: MultiTargets, joints: np.ndarray, hw: tuple[int, int]) -> list[np.ndarray]:
    """Network-like outputs from targets: logits +-6 on and off the disks."""
    score, locref, _, paf, _ = targets(joints, hw)[:5]
    return [(score * 12 - 6)[None], locref[None], paf[None]]


def _same_animals(found: np.ndarray, truth: np.ndarray, tol: float = 0.01) -> None:
    """Every labeled keypoint of every animal recovered, in some row order."""
    rows = match(found, truth)
    assert (rows >= 0).all()
    for g, r in enumerate(rows):
        labeled = np.isfinite(truth[g]).all(-1)
        np.testing.assert_allclose(found[r, labeled, :2], truth[g, labeled], atol=tol)
        assert (found[r, labeled, 2] > 0.99).all()


# ----------------------------------------------------------------------------- project I/O
@needs_flies
def test_reads_twoflies() -> None:
    project = read_project(TWOFLIES)
    assert project.multi_animal and project.individuals == ["fly1", "fly2"]
    assert len(project.bodyparts) == 24 and not project.unique_bodyparts
    assert len(project.frames) == 200 and not project.identity
    assert project.keypoints.shape == (200, 2, 24, 2)
    # the .h5 and the .csv hold the same labels
    csv_copy = project.frames[0]
    df = pd.read_csv(TWOFLIES / CSV, header=[0, 1, 2, 3], index_col=[0, 1, 2])
    row = df.iloc[0].to_numpy(np.float64).reshape(2, 24, 2)
    np.testing.assert_allclose(csv_copy.keypoints, row, equal_nan=True)


@pytest.fixture
def flies_csv(tmp_path: Path) -> Path:
    """A copy of twoflies with only its CSV labels (the h5 would win)."""
    root = tmp_path / "flies"
    (root / "labeled-data" / "centered_pair").mkdir(parents=True)
    shutil.copy(TWOFLIES / "config.yaml", root / "config.yaml")
    shutil.copy(TWOFLIES / CSV, root / CSV)
    return root


def _edit_header(path: Path, row: int, column: int, value: str) -> None:
    lines = path.read_text().splitlines()
    cells = lines[row].split(",")
    cells[column] = value
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


@needs_flies
def test_unknown_individual(flies_csv: Path) -> None:
    _edit_header(flies_csv / CSV, 1, 3, "fly3")
    with pytest.raises(ProjectError, match=r"CollectedData_sleap\.csv: column .*'fly3'.*"
                       r"individual 'fly3' is not in config.yaml individuals"):
        read_project(flies_csv, check_images=False)


@needs_flies
def test_duplicated_columns(flies_csv: Path) -> None:
    _edit_header(flies_csv / CSV, 2, 5, "head")  # fly1's neck x becomes a second head x
    with pytest.raises(ProjectError, match=r"label the same point twice"):
        read_project(flies_csv, check_images=False)


@needs_flies
def test_bad_cell_names_row_individual_and_bodypart(flies_csv: Path) -> None:
    lines = (flies_csv / CSV).read_text().splitlines()
    cells = lines[6].split(",")
    cells[3 + 48 + 2] = "oops"  # fly2, neck, x of the third frame
    lines[6] = ",".join(cells)
    (flies_csv / CSV).write_text("\n".join(lines) + "\n")
    with pytest.raises(ProjectError, match=r"row 7 \(labeled-data/centered_pair/img0008\.png\)"
                       r", individual fly2, bodypart neck, x: not a pixel coordinate: 'oops'"):
        read_project(flies_csv, check_images=False)


@needs_flies
def test_single_animal_header_in_multi_project(flies_csv: Path) -> None:
    lines = (flies_csv / CSV).read_text().splitlines()
    del lines[1]  # drop the individuals row
    (flies_csv / CSV).write_text("\n".join(lines) + "\n")
    with pytest.raises(ProjectError, match="4 header rows"):
        read_project(flies_csv, check_images=False)


# ------------------------------------------------------------------- targets -> decode
def test_paf_graph_is_a_tree_from_the_skeleton() -> None:
    parts = ["a", "b", "c", "d"]
    animals = np.array([[[0, 0], [10, 0], [20, 0], [100, 100]]], np.float32)
    edges = paf_graph(parts, [("a", "b"), ("b", "a"), ("b", "c")], animals)
    assert edges[:2] == [("a", "b"), ("b", "c")]
    assert len(edges) == 3 and edges[2][1] == "d" or edges[2][0] == "d"  # joined by data


@pytest.mark.parametrize("use_numba", [True, False])
def test_round_trip_crossing_animals(use_numba: bool) -> None:
    truth = crossing_keypoints(3, 40, 320, 240)
    parts = list(BODYPARTS)
    edges = paf_graph(parts, [tuple(e) for e in SKELETON], truth)
    spec = _spec(parts, ["m1", "m2", "m3"], edges)
    index = {p: i for i, p in enumerate(parts)}
    targets = MultiTargets(HeatmapSpec.for_stride(8), 3, 4, 0,
                           tuple((index[a], index[b]) for a, b in edges))
    decoder = MultiAnimalDecoder(spec, use_numba=use_numba)
    out = np.zeros(decoder.shape, np.float32)
    recovered = 0
    for f in range(len(truth)):
        gap = np.linalg.norm(truth[f][:, None] - truth[f][None], axis=-1)  # N x N x K
        gap[np.arange(3), np.arange(3)] = np.inf
        if gap.min() < 2 * targets.spec.pos_dist_thresh + 8:
            continue  # the same part of two animals in one disk: one peak by construction
        decoder.decode(_maps(targets, truth[f].reshape(-1, 2), (30, 40)), out)
        _same_animals(out, truth[f])
        recovered += 1
    assert recovered >= 8  # the first and last fifth of the walk: apart


@needs_flies
def test_round_trip_twoflies_labels() -> None:
    project = read_project(TWOFLIES)
    edges = paf_graph(project.bodyparts, project.skeleton, project.keypoints)
    spec = _spec(project.bodyparts, project.individuals, edges)
    index = {p: i for i, p in enumerate(project.bodyparts)}
    targets = MultiTargets(HeatmapSpec.for_stride(8), 2, 24, 0,
                           tuple((index[a], index[b]) for a, b in edges))
    decoder = MultiAnimalDecoder(spec)
    out = np.zeros(decoder.shape, np.float32)
    for frame in project.frames[:40]:
        decoder.decode(_maps(targets, frame.joints, (48, 48)), out)
        _same_animals(out, frame.keypoints)


def test_unique_bodyparts_decoded_apart() -> None:
    truth = crossing_keypoints(2, 3)[0]
    parts = list(BODYPARTS)
    edges = paf_graph(parts, [tuple(e) for e in SKELETON], truth)
    spec = _spec(parts, ["a", "b"], edges, unique=["lamp"])
    index = {p: i for i, p in enumerate(parts)}
    targets = MultiTargets(HeatmapSpec.for_stride(8), 2, 4, 1,
                           tuple((index[a], index[b]) for a, b in edges))
    joints = np.concatenate([truth.reshape(-1, 2), [[200.0, 30.0]]]).astype(np.float32)
    decoder = MultiAnimalDecoder(spec)
    out = np.zeros(decoder.shape, np.float32)
    decoder.decode(_maps(targets, joints, (30, 40)), out)
    _same_animals(out, truth)
    assert decoder.unique is not None
    np.testing.assert_allclose(decoder.unique[0, :2], [200.0, 30.0], atol=0.01)


# ------------------------------------------------------------- kernels and their twins
def test_find_peaks_matches_numpy_twin() -> None:
    rng = np.random.default_rng(3)
    for trial in range(20):
        c, h, w, m = 3, 9 + trial % 4, 11, 1 + trial % 5
        score = rng.normal(0, 1, (c, h, w)).astype(np.float32)
        score[0, 2:4, 2:5] = 3.0  # a plateau: one peak, its first cell
        score = np.round(score, 1)  # ties between neighbours
        locref = rng.normal(0, 0.3, (2 * c, h, w)).astype(np.float32)
        results = []
        for kernel in (find_peaks, find_peaks_numpy):
            peaks = np.zeros((c, m, 3), np.float32)
            cells = np.zeros((c, m), np.int64)
            counts = np.zeros(c, np.int64)
            kernel(score, locref, 0.5, 8.0, 4.0, 7.2801, peaks, cells, counts)
            results.append((peaks, cells, counts))
        (pa, ca, na), (pb, cb, nb) = results
        np.testing.assert_array_equal(na, nb)
        for ch in range(c):
            np.testing.assert_array_equal(ca[ch, :na[ch]], cb[ch, :nb[ch]])
            np.testing.assert_allclose(pa[ch, :na[ch]], pb[ch, :nb[ch]], rtol=1e-6)
        if m >= 1:
            assert ca[0, 0] == 2 * w + 2 or score[0].max() > 3.0


def test_link_score_matches_numpy_twin() -> None:
    rng = np.random.default_rng(5)
    paf = rng.normal(0, 1, (4, 12, 16)).astype(np.float32)
    a = rng.uniform(-10, 140, (4, 2))
    b = rng.uniform(-10, 140, (3, 2))
    b[0] = a[0] + 0.3  # coincident
    for e, sign in ((0, 1), (1, -1)):
        twin = paf_scores_numpy(paf, e, sign, a, b, 8.0, 4.0)
        for i in range(len(a)):
            for j in range(len(b)):
                s = link_score(paf, e, sign, *a[i], *b[j], 8.0, 4.0)
                assert s == pytest.approx(twin[i, j], abs=1e-5)


def test_assemble_kernel_matches_python_steps() -> None:
    truth = crossing_keypoints(2, 9)
    parts = list(BODYPARTS)
    edges = paf_graph(parts, [tuple(e) for e in SKELETON], truth)
    spec = _spec(parts, ["a", "b"], edges)
    index = {p: i for i, p in enumerate(parts)}
    targets = MultiTargets(HeatmapSpec.for_stride(8), 2, 4, 0,
                           tuple((index[a], index[b]) for a, b in edges))
    rng = np.random.default_rng(0)
    fast, slow = MultiAnimalDecoder(spec), MultiAnimalDecoder(spec, use_numba=False)
    for f in range(len(truth)):
        maps = _maps(targets, truth[f].reshape(-1, 2), (30, 40))
        maps = [m + rng.normal(0, 0.2, m.shape).astype(np.float32) for m in maps]
        a, b = np.zeros(fast.shape, np.float32), np.zeros(fast.shape, np.float32)
        fast.decode(maps, a)
        slow.decode(maps, b)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
        assert fast.found == slow.found


def test_tree_order_visits_parents_first() -> None:
    root, order = tree_order(5, [(0, 1), (1, 2), (1, 3)])
    assert root == 1
    seen = {root}
    for parent, child, _, _ in order:
        assert parent == -1 or parent in seen
        seen.add(int(child))
    assert seen == {0, 1, 2, 3, 4}  # part 4 has no edge: a root of its own


def test_assemble_keeps_at_most_n_and_drops_small_fragments() -> None:
    k, m = 4, 4
    peaks = np.zeros((k, m, 3), np.float32)
    likelihood = np.zeros((k, m), np.float32)
    counts = np.array([3, 3, 3, 1])
    for p in range(3):
        for i in range(3):
            peaks[p, i] = (40 * i + 4 * p, 20, 5)
            likelihood[p, i] = 0.9 - 0.1 * i
    peaks[3, 0] = (-300, 20, 5)  # behind every part 2: the PAF (+x) refuses the link
    likelihood[3, 0] = 1.0  # a lone strong peak: one part is a fragment, not an animal
    paf = np.zeros((2 * 3, 40, 50), np.float32)
    paf[0::2] = 1.0  # every link points along +x
    root, order = tree_order(k, [(0, 1), (1, 2), (2, 3)])
    out = np.zeros((2, k, 3), np.float32)
    written = assemble(peaks, likelihood, counts, paf, order, root, 8.0, 4.0, 0.05, 2,
                       np.full((k * m, k), -1, np.int32), np.full((k, m), -1, np.int32),
                       np.zeros(k * m), np.zeros(2 * m, np.bool_), np.zeros(k * m, np.int32),
                       out)
    assert written == 2
    np.testing.assert_allclose(out[0, :3, 0], [0, 4, 8])  # strongest animal first
    np.testing.assert_allclose(out[1, :3, 0], [40, 44, 48])
    assert np.isnan(out[:, 3, 0]).all() and (out[:, 3, 2] == 0).all()


# ------------------------------------------------------------------------ tracking
def test_tracker_keeps_identities_through_crossings() -> None:
    truth = crossing_keypoints(3, 60)
    rng = np.random.default_rng(1)
    tracker = AnimalTracker(3, 4)
    ids = np.full(3, -1, np.int64)
    points = np.zeros((3, 4, 3), np.float32)
    first = None
    for f in range(len(truth)):
        order = rng.permutation(3)  # the decoder's rows come strongest first, not by animal
        points[:, :, :2] = truth[f][order] + rng.normal(0, 0.5, (3, 4, 2))
        points[:, :, 2] = 0.9
        if f == 30:
            points[1] = (np.nan, np.nan, 0.0)  # one animal missed at the crossing
        tracker.update(points, ids, f * 33_000_000)
        # which true animal sits in each track
        who = match(points, truth[f])  # track row for each true animal
        mapping = {int(r): g for g, r in enumerate(who) if r >= 0 and np.isfinite(points[r, 0, 0])}
        if first is None:
            first = mapping
        for track, animal in mapping.items():
            assert first[track] == animal, f"identity switch at frame {f}"
    assert tracker.counts.new == 3
    assert tracker.counts.lost == 1 and tracker.counts.refound == 1


def test_tracker_uses_identity_head() -> None:
    class Head:
        identity = np.array([[0.05, 0.95], [0.95, 0.05]], np.float32)

    tracker = AnimalTracker(2, 4, identity_source=Head())
    ids = np.full(2, -1, np.int64)
    truth = crossing_keypoints(2, 3)[0]
    points = np.zeros((2, 4, 3), np.float32)
    points[:, :, :2] = truth
    points[:, :, 2] = 0.9
    tracker.update(points, ids, 0)
    # row 0 looked like individual 1: it went to track 1
    np.testing.assert_allclose(points[1, :, :2], truth[0])
    assert list(ids) == [0, 1]


# ------------------------------------------------------------------------ evaluation
def test_oks_and_map() -> None:
    truth = crossing_keypoints(2, 5)
    preds = [np.concatenate([t[::-1], np.ones((2, 4, 1))], -1) for t in truth]
    assert oks(preds[0][1], truth[0][0]) == pytest.approx(1.0)
    assert mean_average_precision(preds, list(truth)) == pytest.approx(1.0)
    far = [p.copy() for p in preds]
    for p in far:
        p[..., :2] += 25.0
    assert mean_average_precision(far, list(truth)) < 0.1


# ------------------------------------------------------------------------ rules
def _rules(rules: list[dict], individuals: tuple[str, ...] = ("fly1", "fly2", "fly3")):
    from poseloop.rules import RuleSet

    return RuleSet.compile(rules, ["head", "abdomen"], 0.5, individuals=individuals)


def _poses(*animals: tuple[float, float, float, float]) -> np.ndarray:
    """N x 2 x 3 poses from (head x, head y, abdomen x, abdomen y) per animal."""
    out = np.zeros((len(animals), 2, 3), np.float32)
    for n, (hx, hy, ax, ay) in enumerate(animals):
        out[n] = [[hx, hy, 0.9], [ax, ay, 0.9]]
    return out


ZONE = {"type": "zone", "part": "head", "rect": {"x1": 0, "y1": 0, "x2": 10, "y2": 10}}
ACTION = [{"device": "stim", "command": "ON 1"}]


def test_zone_for_any_all_and_named_animal() -> None:
    rules = _rules([
        {"name": "any", "when": ZONE, "actions": ACTION},
        {"name": "all", "when": {**ZONE, "animal": "all"}, "actions": ACTION},
        {"name": "fly2", "when": {**ZONE, "animal": "fly2"}, "actions": ACTION},
    ])
    events = rules.evaluate(_poses((5, 5, 50, 50), (50, 50, 90, 90), (6, 6, 90, 90)), 0, 0)
    assert [(e.rule, e.animals) for e in events] == [("any", ("fly1", "fly3"))]
    events = rules.evaluate(_poses((5, 5, 50, 50), (5, 5, 90, 90), (6, 6, 90, 90)), 10**9, 1)
    assert {e.rule: e.animals for e in events} == {
        "all": ("fly1", "fly2", "fly3"), "fly2": ("fly2",)}


def test_whole_when_holds_for_one_animal() -> None:
    """all: [zone, distance] at the top is tested per animal: the same fly must do both."""
    rules = _rules([{"name": "r", "actions": ACTION, "when": {"all": [
        ZONE, {"type": "distance", "part_a": "head", "part_b": "abdomen", "below": 5}]}}])
    # fly1 in the zone but long; fly2 short but outside: no single fly does both
    assert rules.evaluate(_poses((5, 5, 50, 50), (50, 50, 52, 52), (90, 90, 0, 0)), 0, 0) == []
    events = rules.evaluate(_poses((5, 5, 50, 50), (50, 50, 52, 52), (8, 8, 9, 9)), 10**9, 1)
    assert [e.animals for e in events] == [("fly3",)]


def test_pair_distance_names_both_animals() -> None:
    rules = _rules([{"name": "touch", "actions": ACTION, "when": {
        "type": "pair_distance", "animal_a": "fly1", "part_a": "head", "animal_b": "fly2",
        "part_b": "abdomen", "below": 20}}])
    far = _poses((0, 0, 10, 0), (100, 0, 200, 0), (5, 5, 15, 5))
    assert rules.evaluate(far, 0, 0) == []
    close = _poses((0, 0, 10, 0), (100, 0, 10, 5), (5, 5, 15, 5))
    assert [e.animals for e in rules.evaluate(close, 10**9, 1)] == [("fly1", "fly2")]


def test_another_animal_near() -> None:
    rules = _rules([{"name": "near", "actions": ACTION, "when": {
        "type": "near", "part": "head", "within": 15}}])
    assert rules.evaluate(_poses((0, 0, 5, 0), (100, 0, 110, 0), (200, 0, 210, 0)), 0, 0) == []
    events = rules.evaluate(_poses((0, 0, 5, 0), (100, 0, 110, 0), (200, 0, 12, 0)), 10**9, 1)
    assert [e.animals for e in events] == [("fly1", "fly3")]


def test_unknown_animal_is_named() -> None:
    from poseloop.errors import ConfigError

    with pytest.raises(ConfigError, match=r"rules\[0\]\.when\.animal: 'fly9' is not an "
                       r"individual of the model \(fly1, fly2, fly3; or any, all\)"):
        _rules([{"name": "r", "when": {**ZONE, "animal": "fly9"}, "actions": ACTION}])
    with pytest.raises(ConfigError, match=r"rules\[0\]\.when\.animal_b: 'mouse'"):
        _rules([{"name": "r", "actions": ACTION, "when": {
            "type": "pair_distance", "part_a": "head", "part_b": "head", "animal_b": "mouse",
            "below": 3}}])


def test_single_animal_rules_unchanged() -> None:
    rules = _rules([{"name": "r", "when": ZONE, "actions": ACTION}], ("animal",))
    events = rules.evaluate(_poses((5, 5, 50, 50)), 0, 0)
    assert [(e.rule, e.animals) for e in events] == [("r", ())]


# ------------------------------------------------------------------- augmentation
def test_flip_swaps_left_right_within_each_animal() -> None:
    from poseloop.config import AugmentConfig
    from poseloop.training.augment import Augmenter

    cfg = AugmentConfig(crop_size=(64, 64), global_scale=1.0, hflip=True, rotation=0,
                        scale_range=0, flip_pairs=[("wingL", "wingR")])
    aug = Augmenter(cfg, ["head", "wingL", "wingR"], seed=0, individuals=2, unique=["lamp"])
    np.testing.assert_array_equal(aug.flip_perm, [0, 2, 1, 3, 5, 4, 6])
    np.testing.assert_array_equal(aug.animal, [0, 0, 0, 1, 1, 1, -1])


def test_identity_targets_name_the_nearest_animal() -> None:
    targets = MultiTargets(HeatmapSpec.for_stride(8), 2, 2, 0, ((0, 1),), identity=True)
    joints = np.array([[20, 20], [40, 20], [100, 60], [120, 60]], np.float32)
    owner = targets(joints, (10, 20))[5]
    assert owner.shape == (10, 20)
    assert owner[2, 2] == 0 and owner[7, 13] == 1 and owner[9, 0] == -1
