"""The numba peak decoder equals its numpy twin (built on HeatmapSpec.decode) everywhere."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from poseloop.errors import ModelError
from poseloop.heatmap import HeatmapSpec
from poseloop.modelspec import ModelSpec
from poseloop.realtime.decoder import MODES, PeakDecoder, decode_peaks, decode_peaks_numpy

SPEC = HeatmapSpec.for_stride(8)


def both(scoremap: np.ndarray, locref: np.ndarray, mode: str,
         spec: HeatmapSpec = SPEC) -> tuple[np.ndarray, np.ndarray]:
    """(numba, numpy) decodes of the same maps."""
    k = scoremap.shape[-3]
    outs = []
    for use_numba in (True, False):
        decoder = PeakDecoder(replace(spec, likelihood=mode), use_numba=use_numba, k=k)
        decoder.warmup()
        out = decoder.decode((scoremap, locref), np.full((1, k, 3), -7.0, np.float32))
        assert out.shape == (1, k, 3)
        outs.append(out[0])
    return outs[0], outs[1]


def assert_twins(fast: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(fast[:, :2], ref[:, :2], rtol=0, atol=1e-4)
    np.testing.assert_allclose(fast[:, 2], ref[:, 2], rtol=0, atol=1e-6)


def random_maps(rng: np.random.Generator, k: int, h: int, w: int,
                scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    scoremap = (rng.standard_normal((k, h, w)) * scale).astype(np.float32)
    locref = rng.standard_normal((2 * k, h, w)).astype(np.float32)
    return scoremap, locref


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("k", [1, 4, 20])
@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (30, 40), (60, 80), (61, 81), (17, 100)])
def test_random_maps_match_numpy(mode: str, k: int, hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(k * 1000 + hw[0])
    for _ in range(5):
        scoremap, locref = random_maps(rng, k, *hw)
        fast, ref = both(scoremap, locref, mode)
        assert_twins(fast, ref)


def test_peak_anywhere_including_first_last_and_block_edges() -> None:
    h, w = 61, 81
    rng = np.random.default_rng(1)
    for idx in [0, 1, 511, 512, 513, 1023, 1024, 4095, 4096, h * w - 2, h * w - 1]:
        scoremap, locref = random_maps(rng, 2, h, w)
        scoremap.reshape(2, -1)[:, idx] = 100.0
        fast, ref = both(scoremap, locref, "sigmoid")
        assert_twins(fast, ref)
        iy, ix = divmod(idx, w)
        dx, dy = locref[0::2, iy, ix], locref[1::2, iy, ix]
        np.testing.assert_allclose(fast[:, 0], ix * 8 + 4 + dx * SPEC.locref_stdev, atol=1e-4)
        np.testing.assert_allclose(fast[:, 1], iy * 8 + 4 + dy * SPEC.locref_stdev, atol=1e-4)


@pytest.mark.parametrize("mode", list(MODES))
def test_ties_pick_the_first_like_numpy(mode: str) -> None:
    rng = np.random.default_rng(2)
    for h, w in [(30, 40), (61, 81)]:
        # few distinct values: many cells share the maximum
        scoremap = rng.integers(-3, 3, size=(6, h, w)).astype(np.float32)
        scoremap[1] = 0.0  # constant map: the first cell wins
        scoremap[2] = -2.0  # constant negative map
        scoremap[3] = rng.choice(np.array([-0.0, 0.0, -1.0], np.float32), size=(h, w))
        scoremap[3, 0, 0] = -1.0
        locref = rng.standard_normal((12, h, w)).astype(np.float32)
        fast, ref = both(scoremap, locref, mode)
        assert_twins(fast, ref)
        first = np.argmax(scoremap.reshape(6, -1), axis=1)
        np.testing.assert_allclose(fast[:, 0], first % w * 8 + 4
                                   + locref[0::2].reshape(6, -1)[np.arange(6), first]
                                   * SPEC.locref_stdev, atol=1e-4)
        assert first[1] == 0 and first[2] == 0


def test_real_openfield_scoremaps(openfield: Path) -> None:
    from poseloop.project import read_project

    project = read_project(openfield)
    rng = np.random.default_rng(3)
    h, w = 60, 80  # 640 x 480 frames at stride 8
    for frame in project.frames[:40]:
        score, locref, _ = SPEC.targets(frame.keypoints, (h, w))
        logits = (score * 8.0 - 4.0 + rng.normal(0, 0.5, score.shape)).astype(np.float32)
        locref = (locref + rng.normal(0, 0.02, locref.shape)).astype(np.float32)
        for mode in MODES:
            fast, ref = both(logits, locref, mode)
            assert_twins(fast, ref)
        labeled = np.isfinite(frame.keypoints[:, 0])
        np.testing.assert_array_less(
            np.abs(fast[labeled, :2] - frame.keypoints[labeled]), 2.0
        )


def test_likelihood_modes() -> None:
    scoremap = np.array([[[0.0, -2.0]], [[3.0, 1.5]], [[-0.5, -4.0]]], np.float32)
    locref = np.zeros((6, 1, 2), np.float32)
    expected = {
        "sigmoid": 1.0 / (1.0 + np.exp(-np.array([0.0, 3.0, -0.5]))),
        "clip": np.array([0.0, 1.0, 0.0]),
        "raw": np.array([0.0, 3.0, -0.5]),
    }
    for mode, lik in expected.items():
        fast, ref = both(scoremap, locref, mode)
        np.testing.assert_allclose(fast[:, 2], lik, atol=1e-6)
        np.testing.assert_allclose(ref[:, 2], lik, atol=1e-6)


def test_nan_maps_give_nan_rows_and_leave_others_alone() -> None:
    rng = np.random.default_rng(4)
    scoremap, locref = random_maps(rng, 4, 61, 81)
    scoremap[0, 30, 40] = np.nan  # one NaN cell
    scoremap[1] = np.nan  # all NaN
    neg_nan = np.array([0xFFC00000], np.uint32).view(np.float32)[0]  # x86's default NaN
    scoremap[2, 60, 80] = neg_nan
    for mode in MODES:
        fast, ref = both(scoremap, locref, mode)
        assert np.isnan(fast[:3]).all() and np.isnan(ref[:3]).all()
        assert np.isfinite(fast[3]).all()
        assert_twins(fast[3:], ref[3:])


def test_infinities() -> None:
    scoremap = np.full((2, 5, 5), -np.inf, np.float32)
    scoremap[1, 2, 3] = np.inf
    locref = np.zeros((4, 5, 5), np.float32)
    fast, ref = both(scoremap, locref, "sigmoid")
    assert_twins(fast, ref)
    np.testing.assert_allclose(fast, [[4, 4, 0], [28, 20, 1]])


def test_batch_of_one_is_decoded_without_copying() -> None:
    rng = np.random.default_rng(5)
    scoremap, locref = random_maps(rng, 4, 30, 40)
    batched_s, batched_l = scoremap[None].copy(), locref[None].copy()
    decoder = PeakDecoder(SPEC, k=4)
    seen = []

    def spy(s, lr, *args):
        seen.append(np.shares_memory(s, batched_s) and np.shares_memory(lr, batched_l))
        return decode_peaks(s, lr, *args)

    decoder._kernel = spy
    out = decoder.decode((batched_s, batched_l), np.empty((1, 4, 3), np.float32))
    assert seen == [True]
    np.testing.assert_array_equal(out[0], both(scoremap, locref, "sigmoid")[0])


def test_other_dtypes_are_converted() -> None:
    rng = np.random.default_rng(6)
    scoremap, locref = random_maps(rng, 3, 20, 30)
    half_s, half_l = scoremap.astype(np.float16), locref.astype(np.float16)
    fast, _ = both(half_s, half_l, "sigmoid")
    ref, _ = both(half_s.astype(np.float32), half_l.astype(np.float32), "sigmoid")
    np.testing.assert_array_equal(fast, ref)
    fortran, _ = both(np.asfortranarray(scoremap), locref, "raw")
    assert_twins(fortran, both(scoremap, locref, "raw")[1])


def test_model_spec_and_bad_inputs() -> None:
    spec = ModelSpec(bodyparts=["a", "b"], skeleton=[], stride=4.0, offset=2.0,
                     locref_stdev=5.0, likelihood="clip")
    decoder = PeakDecoder(spec)
    assert (decoder.stride, decoder.offset, decoder.locref_stdev) == (4.0, 2.0, 5.0)
    assert decoder.mode == MODES["clip"]
    s = np.zeros((2, 3, 3), np.float32)
    lr = np.zeros((4, 3, 3), np.float32)
    out = np.empty((1, 2, 3), np.float32)
    assert decoder.shape == (1, 2, 3)
    with pytest.raises(ModelError, match="batch of 2"):
        decoder.decode((np.stack([s, s]), np.stack([lr, lr])), out)
    with pytest.raises(ModelError, match="locref must be 2K"):
        decoder.decode((s, lr[:3]), out)
    with pytest.raises(ModelError, match="K x h x w"):
        decoder.decode((s[0], lr), out)
    with pytest.raises(ValueError, match="out must be"):
        decoder.decode((s, lr), np.empty((1, 2, 3), np.float64))
    with pytest.raises(ValueError, match="out must be"):
        decoder.decode((s, lr), np.empty((2, 3), np.float32))
    with pytest.raises(ModelError, match="likelihood mode"):
        PeakDecoder(replace(SPEC, likelihood="softmax"), k=2)


def test_kernels_share_one_signature() -> None:
    rng = np.random.default_rng(7)
    scoremap, locref = random_maps(rng, 2, 4, 6)
    args = (scoremap, locref, 8.0, 4.0, 7.2801, 0)
    a = decode_peaks(*args, np.empty((2, 3), np.float32))
    b = decode_peaks_numpy(*args, np.empty((2, 3), np.float32))
    assert_twins(a, b)
