"""The synthetic scene draws its features exactly at its labels and writes a valid project."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from poseloop.synthetic import BODYPARTS, SKELETON, SyntheticScene, write_project

TIMES = [0.0, 0.37, 4.2, 13.9, 27.05, 41.6, 58.3, 77.7, 99.99]


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _reddish_centroid(image: np.ndarray, x: float, y: float, radius: int) -> np.ndarray:
    """Centroid of the reddish (ear / nose) pixels in a window around (x, y)."""
    cx, cy = int(round(x)), int(round(y))
    patch = image[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1].astype(float)
    weight = np.clip(patch[..., 2] - patch[..., 1] - 30.0, 0.0, None)
    assert weight.sum() > 0, "no feature pixels near the keypoint"
    ys, xs = np.mgrid[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
    return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()


def _assert_ears_and_nose_at(image: np.ndarray, kps: np.ndarray, scene: SyntheticScene) -> None:
    ear_window = math.ceil(0.07 * scene.body_length) + 1
    for i in (1, 2):  # leftear, rightear
        centroid = _reddish_centroid(image, *kps[i], ear_window)
        assert np.linalg.norm(centroid - kps[i]) < 1.0, (BODYPARTS[i], centroid, kps[i])
    centroid = _reddish_centroid(image, *kps[0], 3)
    assert np.linalg.norm(centroid - kps[0]) < 1.0, ("snout", centroid, kps[0])


def test_render_is_deterministic_for_a_seed_whatever_the_order() -> None:
    a, b = SyntheticScene(seed=3), SyntheticScene(seed=3)
    first = {t: a.render(t) for t in TIMES}
    for t in reversed(TIMES):  # b extends its trajectory in a different order
        image, kps = b.render(t)
        np.testing.assert_array_equal(image, first[t][0])
        np.testing.assert_array_equal(kps, first[t][1])
    other_image, other_kps = SyntheticScene(seed=4).render(TIMES[3])
    assert not np.array_equal(other_kps, first[TIMES[3]][1])
    assert not np.array_equal(other_image, first[TIMES[3]][0])


def test_render_into_fills_a_preallocated_buffer() -> None:
    scene = SyntheticScene(160, 120, seed=1)
    out = np.zeros((120, 160, 3), np.uint8)
    kps = scene.render_into(2.5, out)
    image, expected = scene.render(2.5)
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(kps, expected)
    assert kps.shape == (len(BODYPARTS), 2) and kps.dtype == np.float32
    with pytest.raises(ValueError, match="uint8"):
        scene.render_into(0.0, np.zeros((120, 160, 3), np.float32))
    with pytest.raises(ValueError, match="time"):
        scene.render(-1.0)


def test_frames_move_smoothly() -> None:
    scene = SyntheticScene(seed=2)
    kps = np.stack([scene.render(i / 30.0)[1] for i in range(90)])
    step = np.linalg.norm(np.diff(kps, axis=0), axis=2)
    assert step.max() < 0.25 * scene.body_length  # no jumps between 30 fps frames
    assert np.linalg.norm(kps[-1] - kps[0], axis=1).max() > 2.0  # but it does move


@pytest.mark.parametrize("size", [(320, 240), (160, 120)])
def test_whole_animal_stays_inside_the_frame(size: tuple[int, int]) -> None:
    width, height = size
    scene = SyntheticScene(width, height, seed=5)
    for t in np.linspace(0.0, 200.0, 101):
        image, kps = scene.render(float(t))
        assert (
            np.all(kps >= 0) and np.all(kps[:, 0] <= width - 1) and np.all(kps[:, 1] <= height - 1)
        )
        drawn = np.any(image != scene.floor, axis=2)
        border = drawn.copy()
        border[3:-3, 3:-3] = False
        assert drawn.any() and not border.any(), f"animal touches the frame edge at t={t}"


@pytest.mark.parametrize("seed", [0, 7])
def test_features_are_drawn_at_the_keypoints(seed: int) -> None:
    scene = SyntheticScene(seed=seed)
    for t in TIMES:
        image, kps = scene.render(t)
        _assert_ears_and_nose_at(image, kps, scene)
        # Tailbase: dark body just in front of it, the (reddish) tail just behind it.
        ears_mid = kps[1:3].mean(axis=0)
        back = (kps[3] - ears_mid) / np.linalg.norm(kps[3] - ears_mid)
        d = 0.08 * scene.body_length
        fx, fy = np.round(kps[3] - d * back).astype(int)
        bx, by = np.round(kps[3] + d * back).astype(int)
        assert image[fy, fx].max() < 90, "no body in front of the tailbase"
        tail = image[by, bx].astype(int)
        assert tail[2] - tail[1] > 15 and tail.max() < 200, "no tail behind the tailbase"


def test_leftear_is_on_the_animals_left_and_a_flip_swaps_the_ears() -> None:
    scene = SyntheticScene(seed=11)
    for t in TIMES:
        image, kps = scene.render(t)
        head = kps[1:3].mean(axis=0)
        h = kps[0] - head
        assert _cross(h, kps[1] - head) < 0 < _cross(h, kps[2] - head)

        flipped = np.ascontiguousarray(image[:, ::-1])
        fk = kps.copy()
        fk[:, 0] = scene.width - 1 - fk[:, 0]
        _assert_ears_and_nose_at(flipped, fk, scene)  # the features moved with the labels
        fhead = fk[1:3].mean(axis=0)
        fh = fk[0] - fhead
        assert _cross(fh, fk[1] - fhead) > 0  # the ear labelled "leftear" is now on the right
        swapped = fk[[0, 2, 1, 3]]  # what a flip augmentation must do
        assert _cross(fh, swapped[1] - fhead) < 0


def test_write_project_is_a_deeplabcut_project(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "proj",
        n_frames=6,
        width=160,
        height=120,
        seed=2,
        scorer="tester",
        training_fraction=0.75,
        video_frames=12,
    )
    assert root == (tmp_path / "proj").resolve()

    config = yaml.safe_load((root / "config.yaml").read_text())
    assert config["bodyparts"] == list(BODYPARTS)
    assert config["skeleton"] == SKELETON
    assert config["scorer"] == "tester" and config["TrainingFraction"] == [0.75]
    assert config["iteration"] == 0 and config["pcutoff"] == 0.6
    assert config["project_path"] == str(root)
    ((video, settings),) = config["video_sets"].items()
    assert video == str(root / "videos" / "synth.mp4") and settings["crop"] == "0, 160, 0, 120"
    for key in ("Task", "date", "default_net_type", "batch_size", "multianimalproject"):
        assert key in config

    folder = root / "labeled-data" / "synth"
    csv = pd.read_csv(folder / "CollectedData_tester.csv", header=[0, 1, 2], index_col=0)
    h5 = pd.read_hdf(folder / "CollectedData_tester.h5")
    with pd.HDFStore(folder / "CollectedData_tester.h5", "r") as store:
        assert store.keys() == ["/df_with_missing"]
    for df in (csv, h5):
        assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
        assert list(df.columns) == [("tester", bp, c) for bp in BODYPARTS for c in ("x", "y")]
        assert list(df.index) == [f"labeled-data/synth/img{i:04d}.png" for i in range(6)]
    np.testing.assert_array_equal(csv.to_numpy(), h5.to_numpy())
    assert h5.to_numpy().dtype == np.float64

    scene = SyntheticScene(160, 120, seed=2)
    for rel, row in h5.iterrows():
        image = cv2.imread(str(root / rel))
        assert image is not None and image.shape == (120, 160, 3)
        _assert_ears_and_nose_at(image, row.to_numpy().reshape(-1, 2), scene)

    cap = cv2.VideoCapture(str(root / "videos" / "synth.mp4"))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
        frames = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (120, 160, 3)
            frames += 1
    finally:
        cap.release()
    assert frames == 12

    truth = pd.read_csv(root / "videos" / "synth_groundtruth.csv")
    assert list(truth.columns) == ["frame"] + [f"{bp}_{c}" for bp in BODYPARTS for c in "xy"]
    assert truth["frame"].tolist() == list(range(12))
    coords = truth.iloc[:, 1:].to_numpy().reshape(12, -1, 2)
    assert np.all(coords >= 0) and np.all(coords <= [159, 119])
