"""Preprocessing: the graph input is exactly the documented crop/resize, and points map back."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from poseloop.errors import ConfigError, FrameError
from poseloop.modelspec import ModelSpec
from poseloop.realtime.preprocess import ALIGN, PreprocessConfig, Preprocessor
from poseloop.realtime.types import Frame, FrameTransform
from poseloop.training.augment import resize_for_inference

W, H = 640, 480


def frame(image: np.ndarray, index: int = 0) -> Frame:
    return Frame(image=image, index=index, t_capture_ns=0)


def dot_frame(x: float, y: float, sigma: float = 4.0) -> np.ndarray:
    """A BGR frame with a Gaussian dot centred on full-frame pixel coordinates (x, y)."""
    gx = np.exp(-0.5 * ((np.arange(W) - x) / sigma) ** 2)
    gy = np.exp(-0.5 * ((np.arange(H) - y) / sigma) ** 2)
    grey = np.round(250 * gy[:, None] * gx[None, :]).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def find_dot(image: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted centroid of the dot (pixel centres at integer coordinates)."""
    grey = image[..., 0].astype(np.float64)
    iy, ix = np.unravel_index(np.argmax(grey), grey.shape)
    r = 12
    ys, xs = np.mgrid[max(iy - r, 0):iy + r + 1, max(ix - r, 0):ix + r + 1]
    wts = grey[ys, xs]
    return float((wts * xs).sum() / wts.sum()), float((wts * ys).sum() / wts.sum())


def forward(t: FrameTransform, xy: np.ndarray) -> np.ndarray:
    """Full-frame -> network pixels by OpenCV's resize convention (pixel centres scale)."""
    return np.stack([(xy[:, 0] - t.x0 + 0.5) * t.sx - 0.5,
                     (xy[:, 1] - t.y0 + 0.5) * t.sy - 0.5], axis=1)


CASES = {
    "identity": {},
    "crop": {"crop": (100, 420, 50, 370)},
    "resize-half": {"resize": 0.5},
    "resize-0.75": {"input_scale": 0.75},
    "upscale": {"input_scale": 1.5},
    "crop+resize": {"crop": (37, 611, 20, 455), "input_scale": 0.8, "resize": 0.5},
}


@pytest.mark.parametrize("name", list(CASES))
def test_dot_maps_back_to_where_it_was_drawn(name: str) -> None:
    pre = Preprocessor(**CASES[name])
    x1, x2, y1, y2 = CASES[name].get("crop", (0, W, 0, H))
    rng = np.random.default_rng(0)
    for _ in range(8):
        x, y = rng.uniform(x1 + 25, x2 - 25), rng.uniform(y1 + 25, y2 - 25)
        image, transform = pre.preprocess(frame(dot_frame(x, y)))
        assert image.shape[0] == 1 and image.dtype == np.uint8
        found = transform.to_full(np.array([find_dot(image[0])]))
        assert np.hypot(found[0, 0] - x, found[0, 1] - y) < 0.3, (name, x, y, found)


@pytest.mark.parametrize("name", list(CASES))
def test_image_is_the_documented_crop_and_resize(name: str) -> None:
    kwargs = CASES[name]
    pre = Preprocessor(**kwargs)
    rng = np.random.default_rng(1)
    full = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    image, t = pre.preprocess(frame(full))
    x1, x2, y1, y2 = kwargs.get("crop", (0, W, 0, H))
    scale = kwargs.get("input_scale", 1.0) * kwargs.get("resize", 1.0)
    expected, sx, sy = resize_for_inference(full[y1:y2, x1:x2], scale)  # training's resize
    np.testing.assert_array_equal(image[0], expected)
    assert (t.x0, t.y0, t.sx, t.sy) == (x1, y1, sx, sy)
    # analytic: random full-frame points inside the crop go forward by cv2's convention and
    # come back through to_full exactly
    pts = rng.uniform([x1 - 0.5, y1 - 0.5], [x2 - 0.5, y2 - 0.5], size=(1000, 2))
    net = forward(t, pts)
    assert (net >= -0.5 - 1e-9).all()
    assert (net <= np.array(image.shape[2:0:-1]) - 0.5 + 1e-9).all()
    np.testing.assert_allclose(t.to_full(net.copy()), pts, atol=1e-6)


def test_rgb_model_gets_rgb() -> None:
    bgr = np.zeros((H, W, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    for kwargs in ({}, {"resize": 0.5}, {"crop": (0, 320, 0, 240)}):
        image, _ = Preprocessor(input_order="RGB", **kwargs).preprocess(frame(bgr))
        assert (image[0, ..., 2] == 200).all() and (image[0, ..., :2] == 0).all()


def test_uncropped_unscaled_bgr_frame_is_not_copied() -> None:
    full = np.zeros((H, W, 3), np.uint8)
    image, t = Preprocessor().preprocess(frame(full))
    assert np.shares_memory(image, full) and image.shape == (1, H, W, 3)
    assert (t.x0, t.y0, t.sx, t.sy) == (0, 0, 1, 1)


@pytest.mark.parametrize("kwargs", [{"resize": 0.5}, {"crop": (10, 300, 0, 200)},
                                    {"resize": 0.5, "input_order": "RGB"}])
def test_buffers_are_reused(kwargs: dict) -> None:
    pre = Preprocessor(**kwargs)
    rng = np.random.default_rng(2)
    frames = [frame(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), i) for i in range(4)]
    first, t_first = pre.preprocess(frames[0])
    for f in frames[1:]:
        image, t = pre.preprocess(f)
        assert image is first and t is t_first
    other, _ = pre.preprocess(frame(np.zeros((240, 320, 3), np.uint8)))
    assert (other is first) == (other.shape == first.shape)  # keyed by shape
    again, _ = pre.preprocess(frames[0])
    assert again is first


@pytest.mark.parametrize("image", [
    np.zeros((H, W, 3), np.uint8),
    np.zeros((H, W), np.uint8),
    np.zeros((H, W, 4), np.uint8),
])
def test_steady_state_allocates_no_frame_sized_memory(image: np.ndarray) -> None:
    pre = Preprocessor(resize=0.5, input_order="RGB")
    pre.preprocess(frame(image))
    tracemalloc.start()
    for i in range(5):
        pre.preprocess(frame(image, i))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16_000  # one 320 x 240 x 3 output is 230 kB


def test_grey_and_bgra_frames() -> None:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
    for g in (grey, grey[:, :, None]):
        for kwargs in ({}, {"resize": 0.5}):
            image, _ = Preprocessor(**kwargs).preprocess(frame(g))
            ref = cv2.resize(grey, (image.shape[2], image.shape[1]), interpolation=cv2.INTER_AREA)
            assert image.shape[3] == 3
            for c in range(3):
                np.testing.assert_array_equal(image[0, ..., c], ref)
    bgra = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    for kwargs in ({}, {"resize": 0.5}, {"crop": (5, 300, 7, 200)}):
        pre = Preprocessor(**kwargs)
        a, _ = pre.preprocess(frame(bgra))
        b, _ = Preprocessor(**kwargs).preprocess(frame(np.ascontiguousarray(bgra[..., :3])))
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("image, what", [
    (np.zeros((H, W, 3), np.float32), "float32"),
    (np.zeros((H, W, 3), np.uint16), "uint16"),
    (np.zeros((1, H, W, 3), np.uint8), "shape (1, 480, 640, 3)"),
    (np.zeros((H, W, 2), np.uint8), "shape (480, 640, 2)"),
    (np.zeros((0, W, 3), np.uint8), "shape (0, 640, 3)"),
    (np.zeros(W, np.uint8), "shape (640,)"),
    ([[0, 0], [0, 0]], "list"),
])
def test_bad_frames_name_the_frame(image: object, what: str) -> None:
    with pytest.raises(FrameError, match=r"frame 1234: expected a uint8 image") as e:
        Preprocessor(resize=0.5).preprocess(frame(image, 1234))  # type: ignore[arg-type]
    assert what in str(e.value)


def test_static_crop_is_checked_against_the_frame() -> None:
    pre = Preprocessor(crop=(0, 700, 0, 100))
    with pytest.raises(FrameError, match=r"frame 9: crop .* does not fit the 640 x 480 frame"):
        pre.preprocess(frame(np.zeros((H, W, 3), np.uint8), 9))
    image, _ = pre.preprocess(frame(np.zeros((100, 800, 3), np.uint8), 10))
    assert image.shape == (1, 100, 700, 3)


@pytest.mark.parametrize("kwargs", [
    {"crop": (100, 50, 0, 10)}, {"crop": (-1, 50, 0, 10)}, {"crop": (0, 10, 5, 5)},
    {"crop": (0, 10, 5)}, {"resize": 0}, {"input_scale": -1.0}, {"input_order": "GRB"},
    {"dynamic": (0.5, -3.0)},
])
def test_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Preprocessor(**kwargs)


def test_from_spec() -> None:
    spec = ModelSpec(bodyparts=["a"], skeleton=[], stride=8, offset=4, locref_stdev=7.2801,
                     likelihood="sigmoid", input_order="RGB", input_scale=0.5)
    pre = Preprocessor.from_spec(spec, PreprocessConfig(resize=0.5))
    assert pre.input_order == "RGB" and pre.scale == 0.25 and pre.dynamic is None
    # the config's defaults are the ones that hold (margin 20 px, the model's pcutoff)
    pre = Preprocessor.from_spec(spec, PreprocessConfig(dynamic=True))
    assert pre.dynamic == (spec.pcutoff, PreprocessConfig().dynamic_margin) == (0.6, 20.0)


def test_dynamic_crop_covers_every_individual() -> None:
    pre = Preprocessor(dynamic=(0.5, 0.0))
    two = np.array([[[100.0, 100.0, 0.9], [120.0, 110.0, 0.9]],
                    [[400.0, 300.0, 0.9], [420.0, 310.0, 0.1]]], np.float32)
    pre.update(two)
    _, t = pre.preprocess(frame(np.zeros((H, W, 3), np.uint8)))
    assert t.x0 <= 100 and t.y0 <= 100
    image, t = pre.preprocess(frame(np.zeros((H, W, 3), np.uint8)))
    assert t.x0 + image.shape[2] / t.sx >= 401 and t.y0 + image.shape[1] / t.sy >= 301


def pose(points: list[tuple[float, float, float]]) -> np.ndarray:
    return np.array(points, np.float32)


@pytest.mark.parametrize("resize", [1.0, 0.5, 0.8])
def test_dynamic_crop_follows_the_confident_bodyparts(resize: float) -> None:
    margin = 20.0
    pre = Preprocessor(resize=resize, dynamic=(0.6, margin), dynamic_min_fraction=0.4)
    full = np.zeros((H, W, 3), np.uint8)
    image, t = pre.preprocess(frame(full))
    assert image.shape == (1, round(H * resize), round(W * resize), 3)  # no pose yet
    pts = pose([(200.5, 150.0, 0.9), (260.0, 180.2, 0.95), (600.0, 20.0, 0.1),
                (np.nan, np.nan, 0.99), (10.0, 10.0, np.nan)])
    pre.update(pts)
    image, t = pre.preprocess(frame(full))
    _, oh, ow, _ = image.shape
    assert oh % ALIGN == 0 and ow % ALIGN == 0
    x1, y1 = t.x0, t.y0
    x2, y2 = x1 + ow / t.sx, y1 + oh / t.sy
    assert x1 <= 200.5 - margin and x2 >= 260 + margin and y1 <= 150 - margin
    assert y2 >= 180.2 + margin
    assert x2 < 400 and y2 < 300  # the unconfident bodyparts are ignored
    # the crop is only as large as the alignment needs
    assert ow <= (260 - 200.5 + 2 * margin + 2) * resize + ALIGN
    # and a dot inside it maps back exactly
    found = t.to_full(np.array([find_dot(pre.preprocess(frame(dot_frame(230.3, 166.7)))[0][0])]))
    assert np.hypot(found[0, 0] - 230.3, found[0, 1] - 166.7) < 0.3
    # losing the animal goes back to the full frame
    pre.update(pose([(200.0, 150.0, 0.2)]))
    image, t = pre.preprocess(frame(full))
    assert image.shape[1:3] == (round(H * resize), round(W * resize)) and t.x0 == 0


def test_dynamic_crop_is_clipped_to_the_frame_and_static_crop() -> None:
    pre = Preprocessor(dynamic=(0.5, 30.0))
    full = np.zeros((H, W, 3), np.uint8)
    pre.update(pose([(5.0, 470.0, 0.9)]))
    image, t = pre.preprocess(frame(full))
    assert t.x0 == 0 and t.y0 + image.shape[1] == H
    assert image.shape[1] % ALIGN == 0 and image.shape[2] % ALIGN == 0
    pre = Preprocessor(crop=(100, 400, 100, 300), dynamic=(0.5, 30.0))
    pre.update(pose([(110.0, 290.0, 0.9), (390.0, 110.0, 0.9)]))
    image, t = pre.preprocess(frame(full))
    assert (t.x0, t.y0, image.shape[2], image.shape[1]) == (100, 100, 300, 200)  # whole crop
    pre = Preprocessor(crop=(100, 400, 100, 300), dynamic=(0.5, 30.0))
    pre.update(pose([(500.0, 400.0, 0.9)]))  # outside the static crop: use all of it
    image, t = pre.preprocess(frame(full))
    assert (t.x0, t.y0, image.shape[2], image.shape[1]) == (100, 100, 300, 200)
    off = Preprocessor(dynamic=None)
    off.update(pose([(5.0, 470.0, 0.9)]))
    assert off.preprocess(frame(full))[0].shape == (1, H, W, 3)


def region(pre: Preprocessor) -> tuple[float, float, float, float]:
    """(x1, x2, y1, y2) of the next crop, in full-frame pixels."""
    image, t = pre.preprocess(frame(np.zeros((H, W, 3), np.uint8)))
    return t.x0, t.x0 + image.shape[2] / t.sx, t.y0, t.y0 + image.shape[1] / t.sy


def test_dynamic_crop_keeps_room_for_bodyparts_that_drop_out_and_refinds_a_lost_animal() -> None:
    """The failure DeepLabCut-Live's dynamic crop has: two of four bodyparts fall below
    pcutoff, the box closes in on the other two and never sees the animal whole again."""
    pre = Preprocessor(dynamic=(0.6, 10.0))
    whole = [(100.0, 100.0, 0.9), (200.0, 100.0, 0.9), (100.0, 160.0, 0.9), (200.0, 160.0, 0.9)]
    pre.update(pose(whole))
    assert region(pre) == pytest.approx(region(pre))
    x1, x2, y1, y2 = region(pre)
    assert x1 <= 90 and x2 >= 210 and y1 <= 90 and y2 >= 170
    half = [(100.0, 100.0, 0.9), (110.0, 105.0, 0.9), (100.0, 160.0, 0.3), (200.0, 160.0, 0.2)]
    pre.update(pose(half))  # the box keeps the animal's extent around the confident half
    x1, x2, y1, y2 = region(pre)
    assert x2 - x1 >= 118 and y2 - y1 >= 78
    pre.update(pose([(100.0, 100.0, 0.9), (1.0, 1.0, 0.1), (1.0, 1.0, 0.1), (1.0, 1.0, 0.1)]))
    assert region(pre) == (0, W, 0, H)  # one of four: lost, the whole frame is searched
    # per animal seen: a second, absent animal (all NaN) does not count against the first
    two = np.full((2, 4, 3), np.nan, np.float32)
    two[0] = pose(whole)
    pre.update(two)
    assert region(pre) != (0, W, 0, H)
