"""Calibration files (anipose's format) and triangulation against known geometry, the real
eight-camera rig of mouse8cams-SLEAP, and aniposelib."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from poseloop.cli import main as cli
from poseloop.errors import ConfigError
from poseloop.threed.calibrate import Board
from poseloop.threed.calibration import (
    CalibrationError,
    Rig,
    read_calibration,
    write_calibration,
)
from poseloop.threed.points_table import read_points_2d, triangulate_table
from poseloop.threed.synthetic_rig import (
    board_poses,
    camera_rays,
    render_board,
    three_camera_rig,
)
from poseloop.threed.triangulate import Triangulator, triangulate

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MOUSE8 = SHARED / "datasets" / "mouse8cams-SLEAP"
needs_mouse8 = pytest.mark.skipif(not MOUSE8.is_dir(), reason="../shared/datasets absent")


def synthetic_rig() -> Rig:
    return three_camera_rig()


def project_all(rig: Rig, points: np.ndarray) -> np.ndarray:
    return np.stack([cam.project(points) for cam in rig.cameras])


def test_triangulation_recovers_known_geometry() -> None:
    rig = synthetic_rig()
    points = np.random.default_rng(0).uniform(-80, 80, (200, 3))
    pixels = project_all(rig, points)
    got, errors, counts = triangulate(rig, pixels)
    assert np.abs(got - points).max() < 1e-6 and errors.max() < 1e-6
    assert (counts == 3).all()
    # a view that misses a point: two are enough; one is not
    pixels[0, :10] = np.nan
    pixels[1, 5:10] = np.nan
    got, errors, counts = triangulate(rig, pixels)
    assert np.abs(got[:5] - points[:5]).max() < 1e-6 and (counts[:5] == 2).all()
    assert np.isnan(got[5:10]).all() and (counts[5:10] == 1).all()
    assert np.isnan(triangulate(rig, pixels, min_cameras=3)[0][:5]).all()


def test_noise_weights_and_outlier_views() -> None:
    rig = synthetic_rig()
    rng = np.random.default_rng(1)
    points = rng.uniform(-80, 80, (300, 3))
    pixels = project_all(rig, points) + rng.normal(0, 0.5, (3, 300, 2))
    got, errors, _ = triangulate(rig, pixels)
    assert np.median(np.linalg.norm(got - points, axis=1)) < 1.0
    assert 0.2 < np.median(errors) < 1.0  # about the pixel noise
    bad = pixels.copy()
    bad[2, :, 0] += 60  # camera 2 detects the wrong thing
    off = np.linalg.norm(triangulate(rig, bad)[0] - points, axis=1)
    got, errors, counts = triangulate(rig, bad, reject_px=5.0)
    assert (counts == 2).all() and np.median(errors) < 1.0
    assert np.median(np.linalg.norm(got - points, axis=1)) < np.median(off) / 5
    # a view with weight 0 (likelihood 0) is not used; a low weight pulls less
    weights = np.ones((3, 300))
    weights[2] = 0.0
    assert (triangulate(rig, bad, weights)[2] == 2).all()


def test_undistortion_matches_opencv_converged() -> None:
    from poseloop.threed.triangulate import _undistort

    cam = synthetic_rig().cameras[0]
    pixels = np.random.default_rng(2).uniform([0, 0], [1280, 1024], (50, 2))
    ref = cv2.undistortPoints(pixels.reshape(-1, 1, 2), cam.matrix, cam.distortions,
                              criteria=(cv2.TERM_CRITERIA_COUNT, 20, 0)).reshape(-1, 2)
    got = np.array([_undistort(u, v, cam.matrix, cam.distortions) for u, v in pixels])
    assert np.abs(got - ref).max() < 1e-9


def test_calibration_round_trip(tmp_path: Path) -> None:
    rig = synthetic_rig()
    rig.metadata = {"board": "charuco", "error": 0.41}
    back = read_calibration(write_calibration(rig, tmp_path / "calibration.toml"))
    assert back.names == rig.names and back.metadata == rig.metadata
    for a, b in zip(rig.cameras, back.cameras, strict=True):
        assert a.size == b.size
        for f in ("matrix", "distortions", "rotation", "translation"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f


BAD = {
    "no cameras": ("[metadata]\nx = 1\n", "no camera sections"),
    "not toml": ("[cam_0\nname=", "not a readable TOML"),
    "missing field": ('[cam_0]\nname = "top"\nsize = [10, 10]\nmatrix = [[1,0,0],[0,1,0],'
                      '[0,0,1]]\ndistortions = [0]\nrotation = [0,0,0]\n',
                      "camera 'top' \\(\\[cam_0\\]\\): field 'translation' is missing"),
    "bad shape": ('[cam_0]\nname = "top"\nsize = [10, 10]\nmatrix = [[1,0],[0,1]]\n'
                  'distortions = [0]\nrotation = [0,0,0]\ntranslation = [0,0,0]\n',
                  "camera 'top'.*'matrix' must have shape \\(3, 3\\)"),
    "not intrinsics": ('[cam_0]\nname = "side"\nsize = [10, 10]\nmatrix = '
                       '[[-5,0,0],[0,1,0],[0,0,1]]\ndistortions = [0]\nrotation = [0,0,0]\n'
                       'translation = [0,0,0]\n', "camera 'side'.*not an intrinsics matrix"),
    "not numbers": ('[cam_0]\nname = "side"\nsize = [10, 10]\nmatrix = [[1,0,0],[0,1,0],'
                    '[0,0,1]]\ndistortions = ["a"]\nrotation = [0,0,0]\ntranslation = '
                    '[0,0,0]\n', "camera 'side'.*'distortions' must be numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_calibration_files_name_camera_and_field(tmp_path: Path, case: str) -> None:
    text, message = BAD[case]
    path = tmp_path / "calibration.toml"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=message):
        read_calibration(path)


def test_repeated_camera_names_and_missing_file(tmp_path: Path) -> None:
    rig = synthetic_rig()
    rig.cameras[1].name = "cam0"
    path = write_calibration(rig, tmp_path / "c.toml")
    with pytest.raises(CalibrationError, match="'cam0' is used twice"):
        read_calibration(path)
    with pytest.raises(CalibrationError, match="not found"):
        read_calibration(tmp_path / "absent.toml")


def test_points_table_errors_name_row_and_column(tmp_path: Path) -> None:
    rig = synthetic_rig()
    path = tmp_path / "p.csv"
    path.write_text("frame,animal,camera,bodypart,x,y\n0,m,cam0,nose,1,2\n0,m,cam9,nose,1,2\n")
    with pytest.raises(ConfigError, match="row 3, column 'camera': 'cam9' is not in the "
                                          "calibration"):
        read_points_2d(path, rig)
    path.write_text("frame,animal,camera,bodypart,x,y\n0,m,cam0,nose,one,2\n")
    with pytest.raises(ConfigError, match="row 2, column 'x': 'one' is not a number"):
        read_points_2d(path, rig)
    path.write_text("frame,animal,camera,bodypart,x\n")
    with pytest.raises(ConfigError, match="column 'y' is missing"):
        read_points_2d(path, rig)
    path.write_text("frame,animal,camera,bodypart,x,y\n0,m,cam0,nose,1,2\n0,m,cam0,nose,1,2\n")
    with pytest.raises(ConfigError, match="nose.*appears twice for camera 'cam0'"):
        read_points_2d(path, rig)


def test_points_table_round_trip(tmp_path: Path) -> None:
    rig = synthetic_rig()
    points = np.random.default_rng(3).uniform(-50, 50, (4, 3))
    pixels = project_all(rig, points)
    rows = [(f, "m", cam.name, f"p{f}", *pixels[c, f]) for f in range(4)
            for c, cam in enumerate(rig.cameras) if not (f == 3 and c)]
    pd.DataFrame(rows, columns=["frame", "animal", "camera", "bodypart", "x", "y"]).to_csv(
        tmp_path / "p2d.csv", index=False)
    out = triangulate_table(rig, tmp_path / "p2d.csv", tmp_path / "p3d.csv")
    assert list(out.columns) == ["frame", "animal", "bodypart", "x", "y", "z",
                                 "reprojection_error", "n_cameras"]
    back = pd.read_csv(tmp_path / "p3d.csv")
    assert np.abs(back[["x", "y", "z"]].to_numpy()[:3] - points[:3]).max() < 1e-6
    assert back["n_cameras"].tolist() == [3, 3, 3, 1] and np.isnan(back["x"].iloc[3])


@needs_mouse8
def test_mouse8cams_labels_triangulate_like_aniposelib(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The real rig: the CLI's table; aniposelib (DLT on OpenCV-undistorted points) gives
    the same 3D points once OpenCV's undistortion is iterated to convergence as ours is."""
    out = tmp_path / "points3d.csv"
    assert cli(["triangulate", str(MOUSE8 / "calibration.toml"), str(MOUSE8 / "labels2d.csv"),
                "--out", str(out)]) == 0
    assert "reprojection error mean" in capsys.readouterr().out
    table = pd.read_csv(out)
    found = table.dropna(subset=["x"])
    assert len(found) == 81 and found["reprojection_error"].median() < 4.0
    cameras = pytest.importorskip("aniposelib.cameras")
    rig = read_calibration(MOUSE8 / "calibration.toml")
    keys, pixels, _ = read_points_2d(MOUSE8 / "labels2d.csv", rig)
    group = cameras.CameraGroup.load(str(MOUSE8 / "calibration.toml"))
    assert group.get_names() == rig.names

    def undistort(self, points: np.ndarray) -> np.ndarray:
        out = cv2.undistortPoints(points.reshape(-1, 1, 2), self.get_camera_matrix(),
                                  self.get_distortions(),
                                  criteria=(cv2.TERM_CRITERIA_COUNT, 20, 0))
        return out.reshape(-1, 2)

    default = group.triangulate(pixels, undistort=True, progress=False)
    ours = Triangulator(rig)(pixels)[0]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cameras.Camera, "undistort_points", undistort)
        converged = group.triangulate(pixels, undistort=True, progress=False)
    assert np.nanmax(np.linalg.norm(converged - ours, axis=1)) < 1e-6
    # aniposelib as it is (OpenCV's default 5 undistortion iterations) differs where the
    # lens distortion is strongest
    assert np.nanmax(np.linalg.norm(default - ours, axis=1)) < 5.0


def extrinsics(cam) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = cam.rotation_matrix, cam.translation
    return t


@pytest.fixture(scope="module")
def board_views(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rig, Board, list[Path]]:
    """A ChArUco board at 30 poses seen by the three virtual cameras (640 x 512, lens
    distortion), one image folder per camera."""
    rig = three_camera_rig((640, 512))
    board = Board("charuco", (7, 5), 40.0, 30.0)
    root = tmp_path_factory.mktemp("board")
    folders = []
    for cam in rig.cameras:
        folder = root / cam.name
        folder.mkdir()
        rays = camera_rays(cam)
        for i, pose in enumerate(board_poses(30, seed=5, spread=200.0, max_tilt=0.9)):
            cv2.imwrite(str(folder / f"{i:03d}.png"), render_board(cam, board, pose, rays=rays))
        folders.append(folder)
    return rig, board, folders


def test_calibration_recovers_the_virtual_rig(board_views, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    """poseloop calibrate on rendered ChArUco views: small reprojection error, the true
    intrinsics, the cameras' relative poses, and 3D points triangulated through the result
    where the true rig puts them (in camera 0's frame, the calibration's world)."""
    rig, board, folders = board_views
    out = tmp_path / "calibration.toml"
    assert cli(["calibrate", *map(str, folders), "--squares", "7x5", "--square-length", "40",
                "--marker-length", "30", "--out", str(out)]) == 0
    assert "reprojection error" in capsys.readouterr().out
    got = read_calibration(out)
    assert got.names == ["cam0", "cam1", "cam2"] and got.metadata["rms_px"] < 0.5
    for true, cam in zip(rig.cameras, got.cameras, strict=True):
        assert cam.matrix[0, 0] == pytest.approx(true.matrix[0, 0], rel=0.01)
        assert np.abs(cam.matrix[:2, 2] - true.matrix[:2, 2]).max() < 10
    for j in (1, 2):
        want = extrinsics(rig.cameras[j]) @ np.linalg.inv(extrinsics(rig.cameras[0]))
        have = extrinsics(got.cameras[j]) @ np.linalg.inv(extrinsics(got.cameras[0]))
        angle = np.degrees(np.linalg.norm(cv2.Rodrigues(want[:3, :3] @ have[:3, :3].T)[0]))
        assert angle < 1.5 and np.linalg.norm(want[:3, 3] - have[:3, 3]) < 15
    points = np.random.default_rng(4).uniform(-100, 100, (100, 3))
    found = triangulate(got, project_all(rig, points))[0]
    cam0 = extrinsics(rig.cameras[0])
    truth = points @ cam0[:3, :3].T + cam0[:3, 3]  # the true points in camera 0's frame
    # in camera 0's frame (it carries camera 0's own small rotation error: ~0.3 degrees is
    # ~4 mm at 0.7 m), and the shape once the two frames are aligned
    assert np.median(np.linalg.norm(found - truth, axis=1)) < 6.0
    assert np.median(np.linalg.norm(rigid_fit(found, truth) - truth, axis=1)) < 0.5


def rigid_fit(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``points`` moved by the rotation and translation that best match ``target``."""
    a, b = points - points.mean(0), target - target.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    r = (u @ np.diag([1, 1, np.sign(np.linalg.det(u @ vt))]) @ vt).T
    return a @ r.T + target.mean(0)


def test_calibrate_says_what_is_wrong(board_views, tmp_path: Path) -> None:
    from poseloop.threed.calibrate import calibrate

    rig, board, folders = board_views
    with pytest.raises(ConfigError, match="at least two cameras"):
        calibrate(folders[:1], board)
    with pytest.raises(ConfigError, match="camera 'cam0'.*board was found in 0 frames"):
        calibrate(folders[:2], Board("charuco", (6, 4), 40.0, 30.0, "DICT_5X5_50"))
    with pytest.raises(ConfigError, match="no such video or image folder"):
        calibrate([folders[0], tmp_path / "absent.mp4"], board)
    with pytest.raises(ConfigError, match="unknown ArUco dictionary"):
        Board("charuco", (7, 5), 40.0, 30.0, "DICT_9X9")


def test_shipped_synthetic_rig_calibration_is_the_rig() -> None:
    """configs/synthetic_rig.toml (the 3D example's calibration) is view_rig(), so the
    example triangulates with the cameras that render the views."""
    from poseloop.threed.synthetic_views import view_rig

    shipped = read_calibration(Path(__file__).parents[1] / "configs" / "synthetic_rig.toml")
    rig = view_rig()
    assert shipped.names == rig.names
    for a, b in zip(shipped.cameras, rig.cameras, strict=True):
        assert a.size == b.size
        np.testing.assert_allclose(a.extrinsics, b.extrinsics, atol=1e-9)
        np.testing.assert_allclose(a.matrix, b.matrix)


def test_synthetic_views_draw_bodyparts_where_the_cameras_project_them() -> None:
    """Each rendered view shows the nose (its reddest spot) where the camera model puts
    the 3D snout: the rig's 2D truth and the drawing agree."""
    from poseloop.threed.synthetic_views import RigScene, view_rig

    scene = RigScene(view_rig())
    for v, cam in enumerate(scene.rig.cameras):
        image = np.empty((cam.size[1], cam.size[0], 3), np.uint8)
        pixels, world = scene.render_into(v, 2.0, image)
        np.testing.assert_allclose(pixels, cam.project(world), atol=1e-3)
        np.testing.assert_allclose(world, scene.keypoints_3d(2.0))
        assert np.allclose(world[:, 2], 20.0)
        red = image[..., 2].astype(int) - image[..., 1]
        y, x = np.unravel_index(np.argmax(np.where(red > 60, red, 0)), red.shape)
        near = min(np.hypot(*(pixels[k] - (x, y))) for k in range(3))  # nose or an ear
        assert near < 6, f"{cam.name}: reddest pixel ({x}, {y}) far from {pixels[:3]}"
