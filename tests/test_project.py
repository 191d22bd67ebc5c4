"""DeepLabCut project reading on the real openfield project and on broken copies of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseloop.errors import ProjectError
from poseloop.project import Split, read_project

CSV = "labeled-data/m4s1/CollectedData_Pranav.csv"


def test_reads_openfield(openfield: Path) -> None:
    p = read_project(openfield)
    assert p.bodyparts == ["snout", "leftear", "rightear", "tailbase"]
    assert p.pcutoff == pytest.approx(0.4)
    assert p.training_fraction == pytest.approx(0.95)
    assert len(p.frames) == 116
    assert p.keypoints.shape == (116, 4, 2)
    first = p.frames[0]
    assert first.image == "labeled-data/m4s1/img0000.png"
    np.testing.assert_allclose(first.keypoints[0], [21.521, 265.428], atol=1e-3)
    assert p.load_image(first).shape == (480, 640, 3)


def test_h5_and_csv_agree(openfield: Path, openfield_copy: Path) -> None:
    from_h5 = read_project(openfield)
    from_csv = read_project(openfield_copy)
    assert [f.image for f in from_h5.frames] == [f.image for f in from_csv.frames]
    np.testing.assert_allclose(from_h5.keypoints, from_csv.keypoints, atol=1e-3)


def test_split_is_reproducible_and_saved(openfield: Path, tmp_path: Path) -> None:
    p = read_project(openfield)
    a, b = p.split(seed=3), p.split(seed=3)
    assert a == b
    assert len(a.train) == 110 and len(a.test) == 6  # round(0.95 * 116)
    assert not set(a.train) & set(a.test)
    assert p.split(seed=4) != a
    a.save(tmp_path / "split.json")
    assert Split.load(tmp_path / "split.json") == a


def test_new_style_multi_column_index(openfield_copy: Path) -> None:
    csv = openfield_copy / CSV
    df = pd.read_csv(csv, header=[0, 1, 2], index_col=0)
    parts = [s.split("/") for s in df.index]
    df.index = pd.MultiIndex.from_tuples([tuple(x) for x in parts])
    df.to_csv(csv)
    p = read_project(openfield_copy)
    assert p.frames[0].image == "labeled-data/m4s1/img0000.png"
    assert len(p.frames) == 116


def test_images_of_different_sizes(openfield_copy: Path) -> None:
    import cv2

    img = openfield_copy / "labeled-data/m4s1/img0003.png"
    cv2.imwrite(str(img), cv2.resize(cv2.imread(str(img)), (960, 720)))
    p = read_project(openfield_copy)
    sizes = {p.load_image(f).shape for f in p.frames[:5]}
    assert sizes == {(480, 640, 3), (720, 960, 3)}
    cv2.imwrite(str(img), cv2.resize(cv2.imread(str(img)), (160, 120)))  # labels now outside
    with pytest.raises(ProjectError, match=r"img0003\.png: label \w+ at \(.*\) lies outside "
                                           r"the 160 x 120 image"):
        [p.load_image(f) for f in p.frames[:5]]


def _edit_csv(path: Path, row: int, col: int, value: str) -> None:
    lines = path.read_text().splitlines()
    cells = lines[row].split(",")
    cells[col] = value
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def test_missing_image(openfield_copy: Path) -> None:
    (openfield_copy / "labeled-data/m4s1/img0005.png").unlink()
    with pytest.raises(ProjectError, match=r"Pranav\.csv.*img0005\.png.*does not exist"):
        read_project(openfield_copy)


def test_bodypart_not_in_config(openfield_copy: Path) -> None:
    _edit_csv(openfield_copy / CSV, 1, 3, "nose")
    _edit_csv(openfield_copy / CSV, 1, 4, "nose")
    with pytest.raises(ProjectError, match=r"CollectedData_Pranav\.csv.*'nose' is not in"):
        read_project(openfield_copy)


def test_non_numeric_cell(openfield_copy: Path) -> None:
    _edit_csv(openfield_copy / CSV, 10, 4, "12.3abc")
    with pytest.raises(
        ProjectError, match=r"CollectedData_Pranav\.csv: row 11 \(labeled-data/m4s1/img0007\.png\)"
        r", bodypart leftear, y: not a pixel coordinate: '12\.3abc'"
    ):
        read_project(openfield_copy)


def test_duplicated_frame(openfield_copy: Path) -> None:
    path = openfield_copy / CSV
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[7]]) + "\n")
    with pytest.raises(ProjectError, match=r"img0004\.png is labeled twice"):
        read_project(openfield_copy)


def test_duplicated_across_files(openfield_copy: Path) -> None:
    import shutil

    other = openfield_copy / "labeled-data/zz"
    other.mkdir()
    shutil.copy(openfield_copy / CSV, other / "CollectedData_Pranav.csv")
    with pytest.raises(ProjectError, match="labeled twice"):
        read_project(openfield_copy)


def test_empty_project(openfield_copy: Path) -> None:
    (openfield_copy / CSV).unlink()
    with pytest.raises(ProjectError, match="no labeled-data/.*CollectedData"):
        read_project(openfield_copy)


def test_all_cells_empty(openfield_copy: Path) -> None:
    path = openfield_copy / CSV
    lines = path.read_text().splitlines()
    body = [ln.split(",")[0] + "," * 8 for ln in lines[3:]]
    path.write_text("\n".join(lines[:3] + body) + "\n")
    with pytest.raises(ProjectError, match="no labeled points"):
        read_project(openfield_copy)


def test_unlabeled_cells_are_nan(openfield_copy: Path) -> None:
    _edit_csv(openfield_copy / CSV, 3, 1, "")
    _edit_csv(openfield_copy / CSV, 3, 2, "")
    p = read_project(openfield_copy)
    assert np.isnan(p.frames[0].keypoints[0]).all()
    assert np.isfinite(p.frames[0].keypoints[1:]).all()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("bodyparts: snout\n", "'bodyparts' must be a non-empty list"),
        ("bodyparts: [a, a]\n", "lists a name twice"),
        ("bodyparts: [a]\npcutoff: high\n", "'pcutoff' must be a number"),
        ("bodyparts: [a]\nskeleton: [[a, z]]\n", r"skeleton\[0\] names 'z'"),
        ("bodyparts: [a]\nmultianimalproject: true\n", "'individuals' must be a non-empty"),
        ("bodyparts: [a\n", "invalid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
    ],
)
def test_bad_config(openfield_copy: Path, text: str, match: str) -> None:
    (openfield_copy / "config.yaml").write_text(text)
    with pytest.raises(ProjectError, match=match):
        read_project(openfield_copy)


def test_no_config(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="no config.yaml"):
        read_project(tmp_path)
