"""Projects without DeepLabCut: ``poseloop new``, ``extract-frames``, labels in DeepLabCut's
layout read back by ``read_project``, and ``labeled-video`` with its plots."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from poseloop.cli import main
from poseloop.errors import ProjectError
from poseloop.labeling.extract_frames import extract_frames, frame_name
from poseloop.labeling.new_project import new_project
from poseloop.project import read_config, read_project
from poseloop.synthetic import BODYPARTS, write_project
from poseloop.visualize.labeled_video import labeled_video
from poseloop.visualize.plots import plot_poses
from poseloop.visualize.pose_table import read_pose_table


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 90-frame mp4 of the synthetic animal (and its ground truth beside it)."""
    root = write_project(tmp_path_factory.mktemp("synth") / "p", n_frames=2, video_frames=90)
    return root / "videos" / "synth.mp4"


def test_new_single_animal_project(video: Path, tmp_path: Path) -> None:
    root = new_project("reach", [video], ["snout", "paw"], out=tmp_path, scorer="ana")
    assert root.name.startswith("reach-ana-")
    config = read_config(root)
    assert config["bodyparts"] == ["snout", "paw"] and config["multianimalproject"] is False
    (link,) = (root / "videos").iterdir()
    assert link.is_symlink() and link.resolve() == video.resolve()
    assert config["video_sets"] == {str(link): {"crop": "0, 320, 0, 240"}}
    assert (root / "labeled-data" / "synth").is_dir()
    with pytest.raises(ProjectError, match="already exists"):
        new_project("reach", [video], ["snout"], out=tmp_path, scorer="ana")


def test_new_project_errors_name_the_problem(video: Path, tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match=r"nothere\.mp4: video not found"):
        new_project("t", [tmp_path / "nothere.mp4"], ["a"], out=tmp_path)
    with pytest.raises(ProjectError, match="bodypart a given twice"):
        new_project("t", [video], ["a", "a"], out=tmp_path)
    text = tmp_path / "not_a_video.mp4"
    text.write_text("hello")
    with pytest.raises(ProjectError, match=r"not_a_video\.mp4: not a readable video"):
        new_project("t", [text], ["a"], out=tmp_path)
    with pytest.raises(ProjectError, match="unique bodyparts need --individuals"):
        new_project("t", [video], ["a"], out=tmp_path, unique_bodyparts=["lamp"])


@pytest.mark.parametrize("mode", ["uniform", "kmeans"])
def test_extract_frames(video: Path, tmp_path: Path, mode: str) -> None:
    root = new_project("t", [video], ["snout"], out=tmp_path)
    written = extract_frames(root, mode, n=8, log=lambda _: None)  # type: ignore[arg-type]
    assert len(written) == 8 and len({p.name for p in written}) == 8
    assert all(p.parent == root / "labeled-data" / "synth" for p in written)
    assert all(p.name.startswith("img") and len(p.stem) == 5 for p in written)  # 90 -> 2 digits
    image = cv2.imread(str(written[0]))
    assert image is not None and image.shape == (240, 320, 3)
    # the frame on disk is the video's frame of that index
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, int(written[0].stem[3:]))
    ok, frame = capture.read()
    capture.release()
    assert ok and np.abs(frame.astype(int) - image.astype(int)).max() <= 2  # PNG is lossless
    assert extract_frames(root, mode, n=8, log=lambda _: None) == []  # kept, not rewritten


def test_kmeans_picks_the_varied_frames(tmp_path: Path) -> None:
    """A video that is mostly one scene: k-means picks each short distinct scene."""
    path = tmp_path / "scenes.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, (64, 48))
    scenes = {13: (240, 40, 40), 57: (40, 240, 40), 91: (40, 40, 240)}  # short, distinct
    for i in range(100):
        frame = np.full((48, 64, 3), 30, np.uint8)
        frame[:] = scenes.get(i, (30, 30, 30))
        writer.write(frame)
    writer.release()
    root = new_project("t", [path], ["a"], out=tmp_path)
    picks = {int(p.stem[3:]) for p in extract_frames(root, "kmeans", n=4, log=lambda _: None)}
    assert {13, 57, 91} <= picks
    assert frame_name(7, 1100) == "img0007.png"


def test_labels_written_in_dlc_layout_read_back(video: Path, tmp_path: Path) -> None:
    """Frames extracted into a new multi-animal project, labels in DeepLabCut's 4-row layout:
    read_project reads them (the labeler writes exactly this layout)."""
    root = new_project("mice", [video], ["snout", "tail"], individuals=["m1", "m2"],
                       unique_bodyparts=["lamp"], out=tmp_path)
    frames = extract_frames(root, "uniform", n=3, log=lambda _: None)
    config = read_config(root)
    assert config["multianimalbodyparts"] == ["snout", "tail"] and config["bodyparts"] == "MULTI!"
    columns = pd.MultiIndex.from_tuples(
        [("ana", i, b, c) for i in ("m1", "m2") for b in ("snout", "tail") for c in "xy"]
        + [("ana", "single", "lamp", c) for c in "xy"],
        names=["scorer", "individuals", "bodyparts", "coords"])
    index = pd.MultiIndex.from_tuples([("labeled-data", "synth", p.name) for p in frames])
    values = np.arange(len(frames) * 10, dtype=float).reshape(len(frames), 10) + 5
    df = pd.DataFrame(values, index=index, columns=columns)
    df.to_csv(root / "labeled-data" / "synth" / "CollectedData_ana.csv")
    project = read_project(root)
    assert project.individuals == ["m1", "m2"] and project.unique_bodyparts == ["lamp"]
    assert len(project.frames) == 3
    np.testing.assert_array_equal(project.frames[0].keypoints.reshape(-1), values[0, :8])
    np.testing.assert_array_equal(project.frames[0].unique.reshape(-1), values[0, 8:])


def _pose_table(path: Path, frames: int, truth: np.ndarray) -> None:
    columns = pd.MultiIndex.from_product([["DLC_test"], list(BODYPARTS),
                                          ["x", "y", "likelihood"]],
                                         names=["scorer", "bodyparts", "coords"])
    values = np.concatenate([truth[:frames], np.full((frames, 4, 1), 0.9)], axis=2)
    values[::2, 3, 2] = 0.2  # tailbase below pcutoff on even frames: drawn hollow
    pd.DataFrame(values.reshape(frames, -1), columns=columns).to_hdf(path, key="df_with_missing")


def test_labeled_video_and_plots(video: Path, tmp_path: Path) -> None:
    truth = pd.read_csv(video.with_name("synth_groundtruth.csv")).to_numpy()[:, 1:]
    truth = truth.reshape(len(truth), 4, 2)
    poses = tmp_path / "synth_poses.h5"
    _pose_table(poses, 60, truth)  # poses for the first 60 of 90 frames
    out = labeled_video(poses, video, tmp_path / "labeled.mp4", pcutoff=0.6,
                        skeleton=[("snout", "tailbase")], trail=5, log=lambda _: None)
    plain, drawn = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(out))
    assert int(drawn.get(cv2.CAP_PROP_FRAME_COUNT)) == 90
    changed = []
    for i in range(90):
        ok_a, a = plain.read()
        ok_b, b = drawn.read()
        assert ok_a and ok_b
        x, y = np.round(truth[i, 0]).astype(int)  # the snout's dot
        patch = np.abs(a[y - 2:y + 3, x - 2:x + 3].astype(int) - b[y - 2:y + 3, x - 2:x + 3])
        changed.append(patch.mean() > 20)
    assert all(changed[:60]) and not any(changed[60:])
    table = read_pose_table(poses)
    assert table.points.shape == (60, 1, 4, 3) and not table.multi_animal
    plots = plot_poses(table, tmp_path / "plots")
    assert [p.name for p in plots] == ["trajectory.png", "likelihood.png", "xy.png"]
    assert all(p.stat().st_size > 5000 for p in plots)


def test_cli_new_extract_and_labeled_video(video: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    assert main(["new", "cli", "--videos", str(video), "--bodyparts", "snout", "tail",
                 "--individuals", "a", "b", "--out", str(tmp_path)]) == 0
    root = next(tmp_path.glob("cli-poseloop-*"))
    assert yaml.safe_load((root / "config.yaml").read_text())["individuals"] == ["a", "b"]
    assert main(["extract-frames", str(root), "--mode", "uniform", "--n", "2"]) == 0
    assert "2 new frames" in capsys.readouterr().out
    assert main(["labeled-video", str(tmp_path / "missing.h5"), str(video)]) == 2
    assert "missing.h5: pose file not found" in capsys.readouterr().err


def test_outliers_drafted_then_merged_into_the_training_set(video: Path, tmp_path: Path) -> None:
    from poseloop.labeling.outliers import extract_outliers, merge, outlier_frames

    truth = pd.read_csv(video.with_name("synth_groundtruth.csv")).to_numpy()[:, 1:]
    truth = truth.reshape(len(truth), 4, 2).astype(np.float64)
    poses = tmp_path / "synth_poses.h5"
    truth[30, 0] += 60.0  # the snout jumps away for one frame
    _pose_table(poses, 90, truth)
    table = read_pose_table(poses)
    table.points[:, 0, 3, 2] = 0.9  # (the fixture's hollow tailbase is not an outlier here)
    flagged = set(outlier_frames(table, ["jump"], epsilon=20.0).tolist())
    assert {30, 31} <= flagged and len(flagged) <= 4
    assert set(outlier_frames(table, ["fitting"], epsilon=20.0).tolist()) == {30}
    low = read_pose_table(poses)
    assert set(outlier_frames(low, ["uncertain"], p_bound=0.5).tolist()) == set(range(0, 90, 2))

    root = new_project("refine", [video], list(BODYPARTS), out=tmp_path, scorer="ana")
    written = extract_outliers(poses, video, root, ["jump", "fitting"], n=2, log=lambda _: None)
    names = sorted(p.name for p in written)
    assert "img30.png" in names
    draft = pd.read_hdf(root / "labeled-data" / "synth" / "machinelabels-iter0.h5")
    assert isinstance(draft, pd.DataFrame) and len(draft) == len(written)
    assert merge(root, log=lambda _: None) == len(written)
    project = read_project(root)
    by_name = {Path(f.image).name: f for f in project.frames}
    np.testing.assert_allclose(by_name["img30.png"].keypoints, truth[30], atol=1e-4)
    assert read_config(root)["iteration"] == 1
    assert merge(root, log=lambda _: None) == 0  # nothing drafted in iteration 1


@pytest.mark.parametrize("individuals", [(), ("m1", "m2")])
def test_label_store_saves_every_change(video: Path, tmp_path: Path,
                                        individuals: tuple[str, ...]) -> None:
    from poseloop.labeling.label_store import LabelStore

    root = new_project("lab", [video], ["snout", "tail"], individuals=individuals,
                       unique_bodyparts=["lamp"] if individuals else (), out=tmp_path,
                       scorer="ana")
    frames = extract_frames(root, "uniform", n=3, log=lambda _: None)
    store = LabelStore(root, "synth")
    who = individuals[1] if individuals else ""
    store.set(frames[0].name, who, "snout", (10.5, 20.25))
    store.set(frames[0].name, who, "tail", (30.0, 40.0))
    store.set(frames[1].name, who, "snout", (1.0, 2.0))
    store.set(frames[1].name, who, "snout", None)  # not visible after all
    if individuals:
        store.set(frames[2].name, "single", "lamp", (5.0, 6.0))
    again = LabelStore(root, "synth")  # what a restarted server (or a reload) sees
    assert again.labels == store.labels
    project = read_project(root)
    first = next(f for f in project.frames if f.image.endswith(frames[0].name))
    point = first.keypoints[1] if individuals else first.keypoints
    np.testing.assert_array_equal(point[0], [10.5, 20.25])
    np.testing.assert_array_equal(point[1], [30.0, 40.0])
    assert not any(f.image.endswith(frames[1].name) for f in project.frames)  # no point left
    with pytest.raises(ProjectError, match="no point"):
        store.set(frames[0].name, who, "nose", (1.0, 1.0))


def test_multi_animal_drafts_in_dlc_layout() -> None:
    from poseloop.labeling.outliers import _draft_table
    from poseloop.visualize.pose_table import PoseTable

    points = np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3)
    unique = np.full((2, 1, 3), 7.0, np.float32)
    table = PoseTable(points, np.array([3, 9]), ["m1", "m2"], ["snout", "tail"], "s", True,
                      unique, ("lamp",))
    config = {"multianimalproject": True, "individuals": ["m1", "m2"],
              "multianimalbodyparts": ["snout", "tail"]}
    draft = _draft_table(table, [1], ["labeled-data/v/img9.png"], config)
    assert list(draft.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert draft[("machine", "m2", "tail", "y")].iloc[0] == points[1, 1, 1, 1]
    assert draft[("machine", "single", "lamp", "likelihood")].iloc[0] == 7.0
    with pytest.raises(ProjectError, match="individuals"):
        _draft_table(table, [1], ["labeled-data/v/img9.png"],
                     {**config, "individuals": ["a", "b"]})
