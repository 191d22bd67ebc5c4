"""The live engine in 3D, end to end with real parts: a camera group of ``synthetic_view``
cameras (the synthetic rig, 3D truth known), real ONNX Runtime sessions of the demo model,
the numba triangulation, 3D rules, and the recorder's anipose / DeepLabCut / video files."""

from __future__ import annotations

import csv
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest

from poseloop.errors import CameraError, ConfigError
from poseloop.modelspec import ModelSpec
from poseloop.realtime.builder import build_engine
from poseloop.realtime.cameras.group import CameraGroup
from poseloop.realtime.cameras.synthetic_view import SyntheticViewCamera, write_view_calibration
from poseloop.realtime.decoder import make_decoder
from poseloop.realtime.engine import Engine, RunStats
from poseloop.realtime.engine_config import EngineConfig, load_engine_config, with_overrides
from poseloop.realtime.preprocess import PreprocessConfig, Preprocessor
from poseloop.realtime.runner import RunnerConfig, make_runner
from poseloop.realtime.types import Frame, Pose, Runner, Session
from poseloop.realtime.views import ViewSet
from poseloop.threed.synthetic_views import ANIMAL_HEIGHT, RigScene, view_rig
from poseloop.threed.triangulate import triangulate

FPS = 20.0
SIZE = (400, 320)
VIEWS = 3
FRAMES = 45
#: The rules of the main run: (name, zone shape) on the snout, all ``level``.
ZONES: dict[str, dict[str, Any]] = {
    "floor": {"box": {"x1": -500, "y1": -500, "z1": ANIMAL_HEIGHT - 10, "x2": 500, "y2": 500,
                      "z2": ANIMAL_HEIGHT + 10}},
    "high": {"box": {"x1": -500, "y1": -500, "z1": 100, "x2": 500, "y2": 500, "z2": 200}},
    "near": {"sphere": {"cx": 0, "cy": 0, "cz": ANIMAL_HEIGHT, "r": 400}},
    "above": {"sphere": {"cx": 0, "cy": 0, "cz": 300, "r": 100}},
    # a ball about the arena's centre the animal runs in and out of: both outcomes occur
    "centre": {"sphere": {"cx": 0, "cy": 0, "cz": ANIMAL_HEIGHT, "r": 60}},
}


def group_section(cal: Path, frames: list[int] | None = None, tolerance_ms: float = 200.0,
                  **triangulation: Any) -> dict[str, Any]:
    frames = frames or [FRAMES] * VIEWS
    return {"sync": "trigger", "tolerance_ms": tolerance_ms,
            "cameras": [{"kind": "synthetic_view", "view": v, "cameras": VIEWS, "fps": FPS,
                         "frames": n} for v, n in enumerate(frames)],
            "triangulation": {"calibration": str(cal), **triangulation}}


def zone_rule(name: str, shape: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "mode": "level", "when": {"type": "zone", "part": "snout", **shape}}


@dataclass
class Seen:
    """What one live run handed ``on_pose``: the poses and, per pose, its set's frames."""

    poses: list[Pose] = field(default_factory=list)
    view_indices: list[list[int | None]] = field(default_factory=list)  # per view, None: missing
    truth_2d: list[list[np.ndarray | None]] = field(default_factory=list)
    fired: list[set[str]] = field(default_factory=list)


def run_live(engine: Engine) -> tuple[RunStats, Seen]:
    """Open, run to the end of the cameras, close; every pose with its set's frames."""
    seen = Seen()

    def on_pose(pose: Pose, frame: Frame) -> None:
        views = frame.views
        assert views is not None
        seen.poses.append(pose)
        seen.view_indices.append([None if f is None else f.index for f in views])
        seen.truth_2d.append([None if f is None or f.truth is None else f.truth.copy()
                              for f in views])
        seen.fired.append({e.rule for e in engine.last_events})

    with engine:
        stats = engine.run(on_pose=on_pose)
    return stats, seen


def errors_3d(poses: list[Pose], scene: RigScene) -> np.ndarray:
    """P x K distances (mm) of the poses' 3D points from the rig's truth at their frames."""
    return np.array([np.linalg.norm(p.points[0, :, :3] - scene.keypoints_3d(p.frame_index / FPS),
                                    axis=1) for p in poses])


@dataclass
class MainRun:
    stats: RunStats
    seen: Seen
    session: Session
    rec: Path
    pcutoff: float


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_view_calibration(tmp_path_factory.mktemp("rig") / "calibration.toml", VIEWS,
                                  SIZE)


@pytest.fixture(scope="module")
def scene() -> RigScene:
    return RigScene(view_rig(VIEWS, SIZE))


@pytest.fixture(scope="module")
def main_run(calibration: Path, tmp_path_factory: pytest.TempPathFactory) -> MainRun:
    """One paced run of the 3-camera rig, recorded with video, with every 3D rule of ZONES."""
    rec = tmp_path_factory.mktemp("rec")
    cfg = {"group": group_section(calibration),
           "record": {"dir": str(rec), "name": "rig", "video": True},
           "rules": [zone_rule(name, shape) for name, shape in ZONES.items()]}
    engine = Engine.from_config(cfg)
    stats, seen = run_live(engine)
    return MainRun(stats, seen, engine.session, rec, engine.session.pcutoff)


# -- 1. end to end -------------------------------------------------------------------------
def test_group_run_gives_accurate_3d_poses_with_every_view(main_run: MainRun,
                                                           scene: RigScene) -> None:
    stats, seen, session = main_run.stats, main_run.seen, main_run.session
    k = len(session.bodyparts)
    assert stats.errors == [] and stats.stopped_by == "end of stream"
    # paced cameras, newest set wins: on a loaded machine fewer sets than frames
    assert stats.frames == len(seen.poses) == stats.captured >= 5
    assert session.dims == 3
    assert [(c.name, c.width, c.height) for c in session.cameras] == [
        (f"view{v}", *SIZE) for v in range(VIEWS)]
    assert isinstance(stats.views_missing, list) and len(stats.views_missing) == VIEWS
    assert len(stats.views_unused) == VIEWS
    missing = np.zeros(VIEWS, int)
    errors_2d: list[list[float]] = [[] for _ in range(VIEWS)]
    for pose, indices, truth in zip(seen.poses, seen.view_indices, seen.truth_2d, strict=True):
        assert pose.points.shape == (1, k, 4) and pose.points.dtype == np.float32
        assert pose.views is not None and pose.views.shape == (VIEWS, 1, k, 3)
        assert pose.triangulation is not None and pose.triangulation.shape == (1, k, 2)
        assert "triangulate" in pose.timings
        # trigger sync: every view of a set is the reference's frame number
        assert indices[0] == pose.frame_index
        assert all(i is None or i == pose.frame_index for i in indices)
        for v, i in enumerate(indices):
            if i is None:
                missing[v] += 1
                assert np.isnan(pose.views[v, ..., :2]).all()
                assert (pose.views[v, ..., 2] == 0).all()
            else:  # each view's poses are that camera's: nearer its truth than the others'
                off = [np.linalg.norm(pose.views[v, 0, :, :2] - t, axis=1).mean()
                       for t in truth if t is not None]
                assert int(np.argmin(off)) == v and off[v] < 10.0, off
                errors_2d[v].append(off[v])
    assert missing.tolist() == stats.views_missing
    assert all(np.median(e) < 4.0 for e in errors_2d), [np.median(e) for e in errors_2d]
    assert missing.sum() <= max(1, len(seen.poses) // 10)  # generous tolerance: complete sets
    complete = [p for p, i in zip(seen.poses, seen.view_indices, strict=True) if None not in i]
    err = errors_3d(complete, scene)
    assert not np.isnan(err).any()
    assert (np.median(err, axis=0) < 5.0).all(), np.median(err, axis=0)
    quality = np.stack([p.triangulation for p in complete if p.triangulation is not None])
    assert (quality[..., 1] == VIEWS).mean() > 0.9  # (nearly) every point from every view
    assert np.nanmedian(quality[..., 0]) < 3.0  # reprojection error, px
    likelihood = np.stack([p.points[0, :, 3] for p in complete])
    assert ((likelihood >= main_run.pcutoff) & (likelihood <= 1)).mean() > 0.9


# -- 2. the recorder's 3D files --------------------------------------------------------------
def anipose_header(bodyparts: tuple[str, ...]) -> list[str]:
    """anipose's pose-3d columns (its triangulate.py): per bodypart x, y, z, error, ncams,
    score; then M_00..M_22, center_0..2, fnum."""
    return ([f"{bp}_{c}" for bp in bodyparts
             for c in ("x", "y", "z", "error", "ncams", "score")]
            + [f"M_{i}{j}" for i in range(3) for j in range(3)]
            + [f"center_{i}" for i in range(3)] + ["fnum"])


def cell(text: str) -> float:
    return math.nan if text == "" else float(text)


def same_f32(got: float, want: float) -> bool:
    a, b = np.float32(got), np.float32(want)
    return bool(a == b or (np.isnan(a) and np.isnan(b)))


def video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_recorder_writes_anipose_3d_dlc_views_videos_and_timing(main_run: MainRun) -> None:
    rec, session, poses = main_run.rec, main_run.session, main_run.seen.poses
    scorer = session.scorer
    bodyparts = session.bodyparts
    names = [c.name for c in session.cameras]
    files = {p.name for p in rec.iterdir()}
    expected = {f"rig{scorer}_3d.csv", f"rig{scorer}_timing.csv", f"rig{scorer}_events.csv"}
    for name in names:
        expected |= {f"rig_{name}{scorer}.csv", f"rig_{name}{scorer}.h5", f"rig_{name}.mkv"}
    assert expected <= files, files

    # the 3D table: anipose's header, one row per pose, values float32-exact
    with open(rec / f"rig{scorer}_3d.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    assert header == anipose_header(bodyparts)
    assert [int(r[-1]) for r in body] == [p.frame_index for p in poses]
    col = {name: i for i, name in enumerate(header)}
    for row, pose in zip(body, poses, strict=True):
        assert pose.triangulation is not None
        for k, bp in enumerate(bodyparts):
            x, y, z, score = pose.points[0, k]
            error, ncams = pose.triangulation[0, k]
            for name, want in (("x", x), ("y", y), ("z", z), ("error", error),
                               ("score", score)):
                got = row[col[f"{bp}_{name}"]]
                assert same_f32(cell(got), want), (pose.frame_index, bp, name, got, want)
            assert re.fullmatch(r"\d+", row[col[f"{bp}_ncams"]])
            assert int(row[col[f"{bp}_ncams"]]) == int(ncams)
        m = [float(row[col[f"M_{i}{j}"]]) for i in range(3) for j in range(3)]
        assert np.array_equal(np.reshape(m, (3, 3)), np.eye(3))
        assert [float(row[col[f"center_{i}"]]) for i in range(3)] == [0.0, 0.0, 0.0]
    # pandas reads it as anipose's readers do
    table = pd.read_csv(rec / f"rig{scorer}_3d.csv")
    assert table[f"{bodyparts[0]}_ncams"].dtype.kind == "i"

    # each view's DeepLabCut files: its 2D poses, with DeepLabCut's column levels
    for v, name in enumerate(names):
        df = pd.read_hdf(rec / f"rig_{name}{scorer}.h5")
        assert isinstance(df, pd.DataFrame)
        assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
        assert df.columns.to_list() == [(scorer, bp, c) for bp in bodyparts
                                        for c in ("x", "y", "likelihood")]
        assert df.index.to_list() == [p.frame_index for p in poses]
        views = np.stack([p.views[v, 0] for p in poses if p.views is not None])
        assert np.array_equal(df.to_numpy().astype(np.float32).reshape(views.shape), views,
                              equal_nan=True)
        from_csv = pd.read_csv(rec / f"rig_{name}{scorer}.csv", header=[0, 1, 2], index_col=0)
        assert np.array_equal(from_csv.to_numpy(), df.to_numpy(), equal_nan=True)

    # the timing table: triangulate last, stamped between decode and process
    timing = pd.read_csv(rec / f"rig{scorer}_timing.csv")
    assert timing.columns[-1] == "triangulate"
    assert timing["frame"].to_list() == [p.frame_index for p in poses]
    assert (timing["decode"] <= timing["triangulate"]).all()
    assert (timing["triangulate"] <= timing["process"]).all()
    assert timing["triangulate"].to_list() == [p.timings["triangulate"] for p in poses]

    # the videos: one frame per recorded row with video, the same in every camera's file
    with_video = int(timing["video_frame"].notna().sum())
    assert with_video == len(poses)
    assert timing["video_frame"].to_list() == list(range(with_video))
    for name in names:
        assert video_frames(rec / f"rig_{name}.mkv") == with_video, name


# -- 3. a view that stops ----------------------------------------------------------------
class LaggingCamera(SyntheticViewCamera):
    """A real synthetic view that falls behind after ``after`` frames: each later frame
    comes ``lag_s`` late, so no set finds its frame of the moment in time."""

    def __init__(self, after: int, lag_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.after, self.lag_s = after, lag_s

    def read(self, out: np.ndarray | None = None) -> Frame | None:
        if self._index >= self.after:
            time.sleep(self.lag_s)
        return super().read(out)


@pytest.mark.parametrize("how", ["ends", "lags"])
def test_a_missing_view_is_counted_and_the_others_triangulate(
        how: str, calibration: Path, scene: RigScene) -> None:
    stop, tolerance = 10, 100.0
    if how == "ends":
        cfg = {"group": group_section(calibration, [40, 40, stop], tolerance)}
        engine = Engine.from_config(cfg)
    else:
        cfg = {"group": group_section(calibration, [60, 60, 60], tolerance)}
        cams = [SyntheticViewCamera(v, VIEWS, *SIZE, fps=FPS, frames=60) for v in range(2)]
        cams.append(LaggingCamera(stop, 0.2, view=2, cameras=VIEWS, width=SIZE[0],
                                  height=SIZE[1], fps=FPS, frames=60))
        engine = build_engine(EngineConfig.model_validate(cfg),
                              CameraGroup(cams, "trigger", tolerance_ms=tolerance))
    stats, seen = run_live(engine)
    assert stats.errors == [] and stats.stopped_by == "end of stream"
    assert stats.frames == len(seen.poses) == stats.captured
    assert len(stats.views_missing) == VIEWS
    assert stats.views_missing[2] == sum(i[2] is None for i in seen.view_indices)
    assert sum(stats.views_missing[:2]) <= 2  # the cameras in step: (nearly) always there
    gone = [p for p, i in zip(seen.poses, seen.view_indices, strict=True)
            if i == [p.frame_index, p.frame_index, None]]
    late = [p for p in seen.poses if p.frame_index >= stop + 3]
    assert len(late) >= 4 and all(any(p is q for q in gone) for p in late)  # all after: gone
    for pose in gone:
        assert pose.views is not None and pose.triangulation is not None
        assert np.isnan(pose.views[2, ..., :2]).all() and (pose.views[2, ..., 2] == 0).all()
        assert not np.isnan(pose.views[:2, ..., :2]).any()
        assert not np.isnan(pose.points).any()
        assert (pose.triangulation[..., 1] == 2).all()  # from the two other views
    # the live kernel's points are the offline triangulation of the two views' 2D poses
    views = np.stack([p.views for p in gone if p.views is not None])[:, :, 0]  # P x V x K x 3
    pixels = views[..., :2].transpose(1, 0, 2, 3).reshape(VIEWS, -1, 2).astype(np.float64)
    weights = views[..., 2].transpose(1, 0, 2).reshape(VIEWS, -1).astype(np.float64)
    weights[weights < engine.session.pcutoff] = 0.0
    want, want_error, want_count = triangulate(scene.rig, pixels, weights)
    got = np.stack([p.points[0, :, :3] for p in gone]).reshape(-1, 3)
    quality = np.stack([p.triangulation[0] for p in gone if p.triangulation is not None])
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
    np.testing.assert_allclose(quality.reshape(-1, 2)[:, 0], want_error, atol=1e-3, rtol=0)
    assert (want_count == 2).all()
    # and near the truth (two views: a little less accurate than three)
    err = errors_3d(gone, scene)
    assert np.median(err) < 5.0 and err.max() < 20.0, np.median(err, axis=0)
    early = [p.triangulation for p, i in zip(seen.poses, seen.view_indices, strict=True)
             if None not in i and p.triangulation is not None]
    assert early and (np.stack(early)[..., 1] == 3).mean() > 0.9


# -- 4. calibration for another size --------------------------------------------------------
def test_calibration_of_another_frame_size_fails_at_open(tmp_path: Path) -> None:
    cal = write_view_calibration(tmp_path / "small.toml", VIEWS, (320, 256))
    rec = tmp_path / "rec"
    engine = Engine.from_config({"group": group_section(cal), "record": {"dir": str(rec)}})
    group = engine.group
    assert group is not None
    with pytest.raises(CameraError) as info, engine:
        pytest.fail("opened")
    message = str(info.value)
    assert "camera 0 (view0)" in message and "400x320" in message and "320x256" in message
    assert engine.stats.errors == []
    assert all(isinstance(c, SyntheticViewCamera) and c._pacer is None for c in group.cameras)
    assert group._readers == []  # closed
    assert not rec.exists() or not any(rec.iterdir())  # no sink was opened


# -- 5. config errors ------------------------------------------------------------------------
def test_config_errors_name_what_to_fix(calibration: Path) -> None:
    for camera in ({"kind": "synthetic", "width": 160, "height": 120}, {"kind": "synthetic"}):
        with pytest.raises(ConfigError, match="camera .* or group .*not both"):
            Engine.from_config({"group": group_section(calibration), "camera": camera})
    overridden = with_overrides(load_engine_config({"group": group_section(calibration)}),
                                duration_s=1.0)  # a dumped config: its default camera is no
    assert overridden.group is not None and overridden.duration_s == 1.0  # camera given
    with pytest.raises(ConfigError, match="^group.triangulation.cameras: camera 'nope' is "
                                          "not in the calibration .*view0, view1, view2"):
        Engine.from_config({"group": group_section(calibration, cameras=["view0", "nope",
                                                                         "view2"])})
    two = group_section(calibration, [FRAMES, FRAMES])
    for cams in (two["cameras"], group_section(calibration)["cameras"] * 2):
        with pytest.raises(ConfigError, match=f"{len(cams)} cameras but group.triangulation "
                                              "names 3"):
            Engine.from_config({"group": {**two, "cameras": cams}})
    # naming the calibration's cameras makes two of three a valid group
    engine = Engine.from_config({"group": group_section(calibration, [FRAMES, FRAMES],
                                                        cameras=["view2", "view0"])})
    assert engine.triangulation is not None and engine.triangulation.cameras == 2
    with pytest.raises(ConfigError, match=r"rules\[0\]\.when\.box"):
        Engine.from_config({"rules": [zone_rule("b", ZONES["floor"])]})
    with pytest.raises(ConfigError, match=r"rules\[0\]\.when\.sphere"):
        Engine.from_config({"rules": [zone_rule("s", ZONES["near"])]})


# -- 6. 3D rules live -----------------------------------------------------------------------
def test_3d_zone_rules_fire_live_exactly_where_the_poses_are(main_run: MainRun) -> None:
    seen, pcutoff = main_run.seen, main_run.pcutoff
    n = len(seen.poses)
    counts = {name: sum(name in f for f in seen.fired) for name in ZONES}
    assert counts["floor"] >= 0.9 * n and counts["near"] >= 0.9 * n
    assert counts["high"] == 0 and counts["above"] == 0
    assert main_run.stats.events == sum(counts.values())
    for pose, fired in zip(seen.poses, seen.fired, strict=True):
        x, y, z, p = (float(v) for v in pose.points[0, 0])  # the snout
        seen_ok = p >= pcutoff and math.isfinite(x + y + z)
        r2 = x * x + y * y + (z - ANIMAL_HEIGHT) ** 2
        assert ("floor" in fired) == (seen_ok and ANIMAL_HEIGHT - 10 <= z <= ANIMAL_HEIGHT + 10)
        assert ("near" in fired) == (seen_ok and r2 <= 400**2)
        assert ("centre" in fired) == (seen_ok and r2 <= 60**2), (pose.frame_index, x, y, z)


# -- 7. batched and per-view inference agree --------------------------------------------------
class RecordingRunner:
    """A runner that notes the batch shape of every call it passes on."""

    def __init__(self, runner: Runner) -> None:
        self.runner, self.calls = runner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)

    def run(self, image: np.ndarray) -> Any:
        self.calls.append(image.shape)
        return self.runner.run(image)


def test_batched_and_per_view_inference_give_the_same_poses() -> None:
    from poseloop.synthetic_model import synthetic_model

    runner = make_runner(synthetic_model(), RunnerConfig())
    spec: ModelSpec = runner.spec
    cams = [SyntheticViewCamera(v, VIEWS, *SIZE, fps=FPS, paced=False) for v in range(VIEWS)]
    for c in cams:
        c.open()
    for c in cams:  # an instant with the animal away from its start
        for _ in range(7):
            c.read()
    frames: list[Frame | None] = [c.read() for c in cams]
    assert all(f is not None for f in frames)
    recording = RecordingRunner(runner)

    def viewset(resizes: list[float]) -> ViewSet:
        preprocesses = [Preprocessor.from_spec(spec, PreprocessConfig(resize=r)) for r in resizes]
        return ViewSet(preprocesses, recording, make_decoder(spec))  # type: ignore[arg-type]

    batched = viewset([1.0] * VIEWS)
    batched.infer(frames, 0)
    assert recording.calls == [(VIEWS, SIZE[1], SIZE[0], 3)]  # one call for the set
    # a fourth view at another input size: every view gets its own call
    recording.calls.clear()
    per_view = viewset([1.0] * VIEWS + [0.75])
    per_view.infer([*frames, frames[0]], 0)
    assert recording.calls == [(1, SIZE[1], SIZE[0], 3)] * VIEWS + [
        (1, round(SIZE[1] * 0.75), round(SIZE[0] * 0.75), 3)]
    assert not np.isnan(batched.views).any() and (batched.views[..., 2] > 0.5).all()
    np.testing.assert_allclose(per_view.views[:VIEWS, ..., :2], batched.views[..., :2],
                               atol=1e-3, rtol=0)
    np.testing.assert_allclose(per_view.views[:VIEWS, ..., 2], batched.views[..., 2],
                               atol=1e-4, rtol=0)
    # and the single-camera path (Engine.step's stages) on each view alone
    decoder = make_decoder(spec)
    for v, frame in enumerate(frames):
        assert frame is not None
        image, transform = Preprocessor.from_spec(spec).preprocess(frame)
        points = np.zeros(decoder.shape, np.float32)
        decoder.decode(runner.run(image), points, transform)
        np.testing.assert_allclose(points[..., :2], batched.views[v, ..., :2], atol=1e-3,
                                   rtol=0)
    # a missing view: NaN with likelihood 0, the others as before
    batched.infer([frames[0], None, frames[2]], 0)
    assert np.isnan(batched.views[1, ..., :2]).all() and (batched.views[1, ..., 2] == 0).all()
    np.testing.assert_allclose(batched.views[[0, 2], ..., :2], per_view.views[[0, 2], ..., :2],
                               atol=1e-3, rtol=0)
    for c in cams:
        c.close()
