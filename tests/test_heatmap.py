"""Targets and decoding share one HeatmapSpec: a target decodes back to its label."""

from __future__ import annotations

import numpy as np
import pytest

from poseloop.heatmap import HeatmapSpec


@pytest.mark.parametrize("stride", [4, 8, 16])
def test_targets_decode_round_trip(stride: int) -> None:
    rng = np.random.default_rng(stride)
    spec = HeatmapSpec.for_stride(stride)
    h, w = 240 // stride, 320 // stride
    for _ in range(50):
        kp = rng.uniform([0, 0], [319, 239], size=(5, 2)).astype(np.float32)
        score, locref, weights = spec.targets(kp, (h, w))
        assert weights.tolist() == [1.0] * 5
        xy, peak = spec.decode(score, locref)
        assert np.all(peak == 1.0)
        assert np.abs(xy - kp).max() < 0.5
        np.testing.assert_allclose(xy, kp, atol=1e-3)


def test_target_disk_radius_and_values() -> None:
    spec = HeatmapSpec.for_stride(8, pos_dist_thresh=17)
    kp = np.array([[100.0, 60.0]], np.float32)
    score, locref, _ = spec.targets(kp, (30, 40))
    ys, xs = np.nonzero(score[0])
    cx, cy = xs * 8 + 4, ys * 8 + 4
    d = np.hypot(cx - 100, cy - 60)
    assert d.max() <= 17
    # every cell centre within the radius is positive
    all_y, all_x = np.mgrid[0:30, 0:40]
    inside = np.hypot(all_x * 8 + 4 - 100, all_y * 8 + 4 - 60) <= 17
    assert inside.sum() == len(xs)
    np.testing.assert_allclose(locref[0][ys, xs], (100 - cx) / spec.locref_stdev, rtol=1e-5)
    np.testing.assert_allclose(locref[1][ys, xs], (60 - cy) / spec.locref_stdev, rtol=1e-5)
    assert np.count_nonzero(locref[0][~inside]) == 0


def test_unlabeled_parts_have_zero_weight_and_empty_maps() -> None:
    spec = HeatmapSpec()
    kp = np.array([[np.nan, np.nan], [50.0, 50.0]], np.float32)
    score, locref, weights = spec.targets(kp, (20, 20))
    assert weights.tolist() == [0.0, 1.0]
    assert score[0].sum() == 0 and locref[:2].sum() == 0
    assert score[1].sum() > 0


def test_label_outside_map_gives_empty_map() -> None:
    spec = HeatmapSpec()
    score, _, weights = spec.targets(np.array([[-100.0, 500.0]], np.float32), (20, 20))
    assert weights[0] == 1.0 and score.sum() == 0
