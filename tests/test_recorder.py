"""Recorder: DeepLabCut pose tables (single- and multi-animal), timing table, video, overflow,
write errors and constant memory."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from poseloop.realtime.recorder import (
    TIMING_COLUMNS,
    RecordConfig,
    Recorder,
    csv_to_h5,
    pose_columns,
)
from poseloop.realtime.sinks import SINKS
from poseloop.realtime.types import STAGES, ActionRecord, CameraInfo, Frame, Pose, Session, Sink

BODYPARTS = ("snout", "leftear", "rightear", "tailbase")
SCORER = "DLC_poseloop_test"
CAMERA = CameraInfo(96, 64, 30.0)
SESSION = Session(bodyparts=BODYPARTS, scorer=SCORER, cameras=(CAMERA,))
INDIVIDUALS = ("mouse1", "mouse2", "mouse3")
UNIQUE = ("led", "port")
MULTI = Session(bodyparts=BODYPARTS, individuals=INDIVIDUALS, unique_bodyparts=UNIQUE,
                multi_animal=True, scorer=SCORER, cameras=(CAMERA,))
NO_IMAGE = np.zeros((8, 8, 3), np.uint8)


def opened(out: Path, session: Session = SESSION, **options: object) -> Recorder:
    recorder = Recorder(RecordConfig.model_validate({"dir": str(out), **options}))
    recorder.open(session)
    return recorder


def make_pose(index: int, rng: np.random.Generator, n: int = 1) -> Pose:
    points = rng.uniform(0, 300, (n, len(BODYPARTS), 3)).astype(np.float32)
    points[..., 2] = rng.uniform(0, 1, (n, len(BODYPARTS)))
    t0 = 1_000_000_000 + index * 33_000_000
    return Pose(points, index, t0, {stage: t0 + 1000 * (j + 1) for j, stage in enumerate(STAGES)},
                ids=np.arange(n, dtype=np.int64))


def frame_of(pose: Pose, image: np.ndarray = NO_IMAGE, t_device_ns: int | None = None) -> Frame:
    return Frame(image, pose.frame_index, pose.t_capture_ns, t_device_ns)


def read_poses(recorder: Recorder, levels: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    h5 = pd.read_hdf(recorder.paths["poses_h5"], "df_with_missing")
    csv = pd.read_csv(recorder.paths["poses_csv"], header=list(range(levels)), index_col=0)
    assert isinstance(h5, pd.DataFrame)
    return h5, csv


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_500_poses_in_deeplabcut_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    poses = [make_pose(i, rng) for i in range(500)]
    config = RecordConfig(dir=str(tmp_path / "out"), name="trial1", flush_s=60)
    recorder = SINKS["record"].factory(config)
    assert isinstance(recorder, Recorder) and isinstance(recorder, Sink)
    assert recorder.name == "recorder" and recorder.fatal is None
    recorder.open(SESSION)
    for pose in poses:
        recorder.pose(pose, frame_of(pose))
    recorder.close()
    assert recorder.dropped == 0 and recorder.errors == 0 and recorder.error is None
    assert recorder.paths["poses_h5"].name == f"trial1{SCORER}.h5"

    h5, csv = read_poses(recorder)
    assert list(h5.columns.names) == ["scorer", "bodyparts", "coords"]
    assert h5.columns.get_level_values("scorer").unique().tolist() == [SCORER]
    assert h5.columns.get_level_values("bodyparts").unique().tolist() == list(BODYPARTS)
    assert h5.columns.get_level_values("coords").unique().tolist() == ["x", "y", "likelihood"]
    assert h5.shape == (500, 12) and h5.index.tolist() == list(range(500))
    expected = np.stack([p.points for p in poses]).reshape(500, -1)
    np.testing.assert_array_equal(h5.to_numpy(), expected)
    np.testing.assert_array_equal(csv.to_numpy(), expected)
    assert csv.index.tolist() == list(range(500))
    assert h5[SCORER]["tailbase"]["likelihood"].between(0, 1).all()

    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert timing.columns.tolist() == ["frame", *TIMING_COLUMNS]  # no ids: single animal
    assert len(timing) == 500 and timing["frame"].tolist() == list(range(500))
    assert timing["t_capture_ns"].tolist() == [p.t_capture_ns for p in poses]
    for stage in STAGES:
        assert timing[stage].tolist() == [p.timings[stage] for p in poses]
    assert (timing["dropped"] == 0).all() and (timing["lost"] == 0).all()
    assert timing["t_device_ns"].isna().all() and timing["video_frame"].isna().all()


def test_the_record_section_without_dir_records_nothing() -> None:
    assert SINKS["record"].factory(RecordConfig()) is None
    with pytest.raises(ValueError, match="record.dir"):
        Recorder(RecordConfig())


def test_single_animal_files_are_what_pandas_wrote_before(tmp_path: Path) -> None:
    """Byte for byte the .csv that pandas' to_csv gave the earlier recorder, for awkward
    values (NaN, inf, -0, tiny and huge) and names that need quoting."""
    rng = np.random.default_rng(11)
    bodyparts = ("snout", "left,ear", 'right"ear')
    session = Session(bodyparts=bodyparts, scorer=SCORER, cameras=(CAMERA,))
    points = rng.uniform(-2000, 3000, (300, 1, 3, 3)).astype(np.float32)
    points[::7, 0, 1, 0] = np.nan
    points[::11, 0, 2, 2] = np.inf
    points[::13, 0, 0, 1] = -0.0
    points[5, 0] = [1e-5, 1e17, 123456789.0]
    points[::17] *= 1e-7
    points[::19] *= 1e12
    recorder = opened(tmp_path, session, flush_s=0.01)
    actions = []
    for i, p in enumerate(points):
        timings = {stage: 10 * i + j for j, stage in enumerate(STAGES) if (i + j) % 4}
        pose = Pose(p, 2 * i, 1000 + i, timings)
        recorder.pose(pose, frame_of(pose, t_device_ns=i if i % 3 else None))
        if i % 40 == 0:
            actions.append(ActionRecord(2 * i, "nose, in zone", 'laser:"ON"', i))
            recorder.event(actions[-1])
    recorder.close()

    columns = pd.MultiIndex.from_product([[SCORER], bodyparts, ["x", "y", "likelihood"]],
                                         names=["scorer", "bodyparts", "coords"])
    poses = pd.DataFrame(points.reshape(300, -1).astype(np.float64),
                         index=np.arange(0, 600, 2), columns=columns)
    expected = poses.to_csv(lineterminator="\n")
    assert recorder.paths["poses_csv"].read_text() == expected
    events = pd.DataFrame(actions, columns=list(ActionRecord._fields))
    assert recorder.paths["events_csv"].read_text() == events.to_csv(index=False,
                                                                      lineterminator="\n")
    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert timing["t_device_ns"].isna().sum() == 100 and timing["grab"].isna().sum() == 75
    text = recorder.paths["timing_csv"].read_text()  # as pandas writes nullable integers
    assert text == pd.read_csv(recorder.paths["timing_csv"], dtype="Int64").to_csv(
        index=False, lineterminator="\n")


def test_multi_animal_layout_as_deeplabcut_writes_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    recorder = opened(tmp_path, MULTI, name="pair", flush_s=0.05)
    poses = []
    for i in range(40):
        pose = make_pose(i, rng, n=3)
        pose.ids[:] = [7, -1, 2] if i % 2 else [-1, 4, 5]
        pose.unique = rng.uniform(0, 1, (2, 3)).astype(np.float32) if i % 5 else None
        poses.append(pose)
        recorder.pose(pose, frame_of(pose))
    recorder.close()
    assert recorder.errors == 0

    h5, csv = read_poses(recorder, levels=4)
    assert list(h5.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert h5.columns.get_level_values("individuals").unique().tolist() == [*INDIVIDUALS,
                                                                            "single"]
    assert h5.columns.tolist() == pose_columns(MULTI)[1]
    assert h5["DLC_poseloop_test"]["single"].columns.get_level_values(0).unique().tolist() \
        == list(UNIQUE)
    assert h5.shape == (40, 3 * 4 * 3 + 2 * 3)
    for frame in (h5, csv):  # the .csv reads back the same with DeepLabCut's header=[0,1,2,3]
        for pose in poses:
            row = frame.loc[pose.frame_index]
            np.testing.assert_array_equal(row[SCORER]["mouse2"]["leftear"].to_numpy(),
                                          pose.points[1, 1])
            unique = row[SCORER]["single"]["port"].to_numpy()
            if pose.unique is None:
                assert np.isnan(unique).all()
            else:
                np.testing.assert_array_equal(unique, pose.unique[1])
        np.testing.assert_array_equal(
            frame.xs("mouse3", level="individuals", axis=1).to_numpy(),
            np.stack([p.points[2] for p in poses]).reshape(40, -1))

    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert timing.columns.tolist()[-3:] == ["id_mouse1", "id_mouse2", "id_mouse3"]
    assert timing["id_mouse1"].isna().tolist() == [i % 2 == 0 for i in range(40)]
    assert timing["id_mouse1"].dropna().eq(7).all() and timing["id_mouse2"].dropna().eq(4).all()
    assert timing["id_mouse3"].tolist() == [5, 2] * 20

    # what ``poseloop recover`` runs after a crash: the .h5 again, from the multi-animal .csv
    recovered = csv_to_h5(recorder.paths["poses_csv"], tmp_path / "recovered.h5")
    pd.testing.assert_frame_equal(pd.read_hdf(recovered), h5)


def test_a_single_animal_session_must_be_one_individual(tmp_path: Path) -> None:
    two = Session(bodyparts=BODYPARTS, individuals=("a", "b"), cameras=(CAMERA,))
    with pytest.raises(ValueError, match=r"one individual.*\['a', 'b'\]"):
        opened(tmp_path, two)


def test_unprocessed_frames_are_absent_and_counted(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    indices = [0, 1, 2, 5, 6, 10]
    recorder = opened(tmp_path, flush_s=60)
    for i in indices:
        pose = make_pose(i, rng)
        recorder.pose(pose, frame_of(pose, t_device_ns=7 * i))
    recorder.close()
    h5, _ = read_poses(recorder)
    assert h5.index.tolist() == indices
    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert timing["dropped"].tolist() == [0, 0, 0, 2, 0, 3]
    assert timing["t_device_ns"].tolist() == [7 * i for i in indices]


def test_tables_are_written_periodically(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    recorder = opened(tmp_path, flush_s=0.1)
    for i in range(20):
        pose = make_pose(i, rng)
        recorder.pose(pose, frame_of(pose))
    wait_for(lambda: len(pd.read_csv(recorder.paths["timing_csv"])) == 20)
    csv = pd.read_csv(recorder.paths["poses_csv"], header=[0, 1, 2], index_col=0)
    assert len(csv) == 20  # readable while recording
    assert not recorder.paths["poses_h5"].exists()  # the .h5 is written at close
    for i in range(20, 50):
        pose = make_pose(i, rng)
        recorder.pose(pose, frame_of(pose))
    recorder.close()
    h5, csv = read_poses(recorder)
    assert h5.index.tolist() == csv.index.tolist() == list(range(50))
    assert pd.read_csv(recorder.paths["timing_csv"])["frame"].tolist() == list(range(50))
    assert not list(tmp_path.glob("*.tmp"))


class SlowRecorder(Recorder):
    """A recorder whose writer takes 20 ms per pose."""

    def _store(self, slot: int) -> None:
        time.sleep(0.02)
        super()._store(slot)


def test_queue_overflow_is_counted_not_waited_on(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    poses = [make_pose(i, rng) for i in range(50)]
    recorder = SlowRecorder(RecordConfig(dir=str(tmp_path), queue_size=2, flush_s=60))
    recorder.open(SESSION)
    worst = 0.0
    for pose in poses:
        frame = frame_of(pose)
        start = time.perf_counter()
        recorder.pose(pose, frame)
        worst = max(worst, time.perf_counter() - start)
    assert worst < 0.005  # the writer sleeps 20 ms per pose: pose() never waited on it
    assert recorder.dropped >= 40
    recorder.close()
    h5, _ = read_poses(recorder)
    assert len(h5) + recorder.dropped == 50
    kept = {int(i) for i in h5.index}
    for pose in poses:  # what was kept is intact (the ring slots were never overwritten)
        if pose.frame_index in kept:
            np.testing.assert_array_equal(h5.loc[pose.frame_index].to_numpy(),
                                          pose.points.reshape(-1))
    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert (timing["dropped"] == 0).all()  # the loop processed every frame
    assert timing["lost"].sum() <= recorder.dropped


def test_video_is_recorded_with_its_frame_numbers(tmp_path: Path) -> None:
    from poseloop.realtime.cameras.synthetic import SyntheticCamera

    camera = SyntheticCamera(96, 64, paced=False, frames=30)
    session = Session(bodyparts=BODYPARTS, scorer=SCORER, cameras=(camera.open(),))
    rng = np.random.default_rng(4)
    recorder = opened(tmp_path, session, video=True, flush_s=60)
    buffer = np.empty((64, 96, 3), np.uint8)
    while (frame := camera.read(buffer)) is not None:  # one buffer, reused as a loop would
        recorder.pose(make_pose(frame.index, rng), frame)
    recorder.close()
    assert recorder.errors == 0 and recorder.video_dropped == 0
    assert recorder.paths["video"].suffix == ".mkv"
    capture = cv2.VideoCapture(str(recorder.paths["video"]))
    ok, first = capture.read()
    count = 1 if ok else 0
    while capture.grab():
        count += 1
    capture.release()
    assert count == 30
    assert ok and first.shape == (64, 96, 3)
    expected, _ = camera.scene.render(0.0)  # the first frame, not the last one in the buffer
    assert np.abs(first.astype(int) - expected).mean() < 8
    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert timing["video_frame"].tolist() == list(range(30))


def test_the_video_has_the_cameras_size_and_frame_rate(tmp_path: Path) -> None:
    """The size and rate the camera reported at open (320x240 at 60 fps), not a default;
    a frame of another size is counted, not written."""
    session = Session(bodyparts=BODYPARTS, scorer=SCORER,
                      cameras=(CameraInfo(320, 240, 60.0, name="cam0"),))
    recorder = opened(tmp_path, session, video=True, flush_s=60)
    rng = np.random.default_rng(13)
    image = np.zeros((240, 320, 3), np.uint8)
    for i in range(20):
        image[:] = 10 * i
        pose = make_pose(i, rng)
        recorder.pose(pose, frame_of(pose, image))
    pose = make_pose(20, rng)
    recorder.pose(pose, frame_of(pose, np.zeros((120, 160, 3), np.uint8)))
    recorder.close()
    assert recorder.video_dropped == 1 and recorder.errors == 0
    capture = cv2.VideoCapture(str(recorder.paths["video"]))
    try:
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(60.0)
        assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH),
                capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 240)
        count = 0
        while capture.grab():
            count += 1
    finally:
        capture.release()
    assert count == 20
    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert timing["video_frame"].tolist()[:20] == list(range(20))
    assert np.isnan(timing["video_frame"].iloc[20])


@contextmanager
def unwritable(paths: list[Path]) -> Iterator[None]:
    """Make files unwritable (chmod, or `chattr +i` for root, who ignores modes), or skip."""
    if os.geteuid() != 0:
        for path in paths:
            path.chmod(0o444)
        undo = [["chmod", "644", str(p)] for p in paths]
    elif shutil.which("chattr"):
        for path in paths:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                pytest.skip("chattr +i is not supported here; cannot make a file read-only")
        undo = [["chattr", "-i", str(p)] for p in paths]
    else:
        pytest.skip("running as root without chattr: cannot make a file read-only")
    try:
        try:
            with open(paths[0], "a"):
                pass
        except OSError:
            pass
        else:
            pytest.skip("the file stayed writable")
        yield
    finally:
        for command in undo:
            subprocess.run(command, check=True)


def test_write_errors_lose_nothing_and_are_retried(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    recorder = opened(tmp_path, flush_s=0.1)
    poses = [make_pose(i, rng) for i in range(60)]
    for pose in poses[:10]:
        recorder.pose(pose, frame_of(pose))
    wait_for(lambda: recorder.rows_written == 10)
    files = [recorder.paths[k] for k in ("poses_csv", "timing_csv")]
    with unwritable(files):
        start = time.perf_counter()
        for pose in poses[10:30]:
            recorder.pose(pose, frame_of(pose))
        assert time.perf_counter() - start < 0.05  # the loop never waits on the disk
        wait_for(lambda: recorder.errors >= 2)
        assert recorder.error is not None and str(tmp_path) in recorder.error
        assert recorder.fatal == recorder.error  # on_error: stop (the default)
        csv = pd.read_csv(recorder.paths["poses_csv"], header=[0, 1, 2], index_col=0)
        assert csv.index.tolist() == list(range(10))  # what was written stays intact
        assert len(pd.read_csv(recorder.paths["timing_csv"])) == 10
    for pose in poses[30:]:  # the disk is back: the held rows are written with the new ones
        recorder.pose(pose, frame_of(pose))
    recorder.close()
    assert recorder.dropped == 0 and recorder.rows_written == 60
    h5, csv = read_poses(recorder)
    assert h5.index.tolist() == csv.index.tolist() == list(range(60))
    np.testing.assert_array_equal(h5.to_numpy(),
                                  np.stack([p.points for p in poses]).reshape(60, -1))
    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert timing["frame"].tolist() == list(range(60)) and (timing["dropped"] == 0).all()
    assert not list(tmp_path.glob("*.tmp"))


def test_on_error_continue_is_not_fatal(tmp_path: Path) -> None:
    recorder = opened(tmp_path, on_error="continue")
    recorder.error = "disk full"
    assert recorder.fatal is None
    recorder.close()


@contextmanager
def tiny_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (needs root), or skip."""
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tiny filesystem needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_disk_full_keeps_every_whole_row_written_before(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(8)
    with tiny_filesystem(tmp_path / "disk", "400k") as disk:
        recorder = opened(disk, flush_s=0.05)
        for i in range(5000):
            pose = make_pose(i, rng)
            recorder.pose(pose, frame_of(pose))
            if i % 100 == 99:
                time.sleep(0.02)  # let flushes happen on the way
        recorder.close()
        assert recorder.errors > 0 and "No space left" in caplog.text  # each error is logged
        assert recorder.dropped == 0  # every pose reached the writer; the disk refused rows
        csv = pd.read_csv(recorder.paths["poses_csv"], header=[0, 1, 2], index_col=0)
        timing = pd.read_csv(recorder.paths["timing_csv"])
        n = len(csv)
        assert 0 < n < 5000 and n == recorder.rows_written
        assert csv.index.tolist() == list(range(n))  # whole rows only, no torn last line
        assert timing["frame"].tolist() == list(range(len(timing)))
        assert not csv.isna().any().any() and not timing["publish"].isna().any()
        if recorder.paths["poses_h5"].exists():  # written if there was room, else absent
            h5 = pd.read_hdf(recorder.paths["poses_h5"])
            pd.testing.assert_frame_equal(h5, csv, check_names=False)
        else:  # HDF5 may even "succeed" and store zeros: the read-back check refuses that
            assert recorder.error is not None and "holds the poses" in recorder.error


def test_an_earlier_recording_is_never_overwritten(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    first = opened(tmp_path, name="trial")
    pose = make_pose(0, rng)
    first.pose(pose, frame_of(pose))
    first.close()
    second = opened(tmp_path, name="trial")
    for i in range(2):
        pose = make_pose(i, rng)
        second.pose(pose, frame_of(pose))
    second.close()
    assert second.stem == "trial-2" and second.paths["poses_h5"].name == f"trial-2{SCORER}.h5"
    assert len(read_poses(first)[0]) == 1 and len(read_poses(second)[0]) == 2
    with pytest.raises(FileExistsError, match=f"trial{SCORER}"):
        opened(tmp_path, name="trial", if_exists="error")
    third = opened(tmp_path, name="trial", if_exists="overwrite")
    third.close()
    assert third.stem == "trial"
    assert not third.paths["poses_h5"].exists()  # the replaced recording's .h5 is gone


def test_pose_checks_the_shape_and_the_state(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    recorder = Recorder(RecordConfig(dir=str(tmp_path)))
    with pytest.raises(RuntimeError, match="not open"):
        recorder.pose(make_pose(0, rng), frame_of(make_pose(0, rng)))
    recorder.open(MULTI)
    bad = Pose(np.zeros((2, 4, 3), np.float32), 7, 0, ids=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"frame 7: .*\(2, 4, 3\).*N x K x 3 = 3 x 4 x 3.*"
                                         r"individuals: mouse1, mouse2, mouse3"):
        recorder.pose(bad, frame_of(bad))
    recorder.close()
    with pytest.raises(RuntimeError, match="closed"):
        recorder.pose(make_pose(0, rng, 3), frame_of(make_pose(0, rng, 3)))
    assert not recorder.paths["poses_h5"].exists()  # pandas cannot store an empty table
    csv = pd.read_csv(recorder.paths["poses_csv"], header=[0, 1, 2, 3], index_col=0)
    assert csv.empty and list(csv.columns.names) == ["scorer", "individuals", "bodyparts",
                                                     "coords"]
    assert pd.read_csv(recorder.paths["timing_csv"]).empty


def test_events_are_recorded(tmp_path: Path) -> None:
    recorder = opened(tmp_path)
    pose = make_pose(0, np.random.default_rng(7))
    recorder.pose(pose, frame_of(pose))
    recorder.event(ActionRecord(0, "nose_in_zone", "laser:ON 3", 123))
    recorder.event(ActionRecord(4, "nose_in_zone", "laser:OFF 3", 456))
    recorder.close()
    events = pd.read_csv(recorder.paths["events_csv"])
    assert events.columns.tolist() == ["frame", "rule", "action", "t_ns", "animals",
                                       "t_exposure_us", "t_output_us", "latency_us"]
    assert events["frame"].tolist() == [0, 4] and events["t_ns"].tolist() == [123, 456]
    assert events["action"].tolist() == ["laser:ON 3", "laser:OFF 3"]
    assert events["latency_us"].isna().all()


def test_events_wait_briefly_for_their_trigger_timing(tmp_path: Path) -> None:
    """An event's row is written with the latency its device measured when that comes
    within EVENT_HOLD_S, without it after; rows stay in firing order."""
    recorder = opened(tmp_path, flush_s=0.01)
    now = time.perf_counter_ns()
    timed = ActionRecord(3, "r", "stim:PULSE 1 5", now)
    untimed = ActionRecord(4, "r", "stim:PULSE 1 5", now + 1)
    recorder.event(timed)
    recorder.event(untimed)
    time.sleep(0.05)
    assert len(pd.read_csv(recorder.paths["events_csv"])) == 0  # held for their timing
    recorder.timing(timed._replace(t_exposure_us=1000.0, t_output_us=5500.0, latency_us=4500.0))
    wait_for(lambda: len(pd.read_csv(recorder.paths["events_csv"])) == 2, timeout=5)
    recorder.close()
    events = pd.read_csv(recorder.paths["events_csv"])
    assert events["frame"].tolist() == [3, 4]
    assert events["latency_us"].iloc[0] == 4500.0 and np.isnan(events["latency_us"].iloc[1])


def test_a_file_that_cannot_be_opened_is_left_alone(tmp_path: Path) -> None:
    """Out of file descriptors (EMFILE): the append fails before it starts, and what the file
    holds must not be cut back to the start of an append that never began."""
    import resource

    rng = np.random.default_rng(10)
    recorder = opened(tmp_path, flush_s=0.1)
    for i in range(10):
        pose = make_pose(i, rng)
        recorder.pose(pose, frame_of(pose))
    # the writer is idle (no file open) once the last file of the flush holds the rows and
    # it has closed it: a descriptor it frees after the limit is set would let the append
    # succeed (seen as a rare timeout), so give the flush's close time to happen
    wait_for(lambda: len(pd.read_csv(recorder.paths["timing_csv"])) == 10)
    time.sleep(0.5)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def is_open(fd: int) -> bool:
        try:
            os.fstat(fd)
        except OSError:
            return False
        return True

    lowest_free = next(fd for fd in range(soft) if not is_open(fd))
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no new descriptor
    try:
        for i in range(10, 20):
            pose = make_pose(i, rng)
            recorder.pose(pose, frame_of(pose))
        wait_for(lambda: recorder.errors > 0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert recorder.error is not None and "Too many open files" in recorder.error
    csv = pd.read_csv(recorder.paths["poses_csv"], header=[0, 1, 2], index_col=0)
    assert csv.index.tolist() == list(range(10))  # untouched while it could not be opened
    recorder.close()
    h5, csv = read_poses(recorder)
    assert h5.index.tolist() == csv.index.tolist() == list(range(20))


def test_memory_stays_constant_without_the_garbage_collector(tmp_path: Path) -> None:
    """Poses, frames and events through many flushes with the cyclic collector off, as it
    nearly is in a long run of a big process (full collections are rare): nothing may be
    kept. The pandas-built flushes of the earlier recorder left ~50 bytes a pose of
    reference cycles here; this one leaves none (well under a byte a pose)."""
    session = Session(bodyparts=BODYPARTS, individuals=INDIVIDUALS[:2], multi_animal=True,
                      scorer=SCORER, cameras=(CameraInfo(32, 24, 200.0),))
    image = np.full((24, 32, 3), 80, np.uint8)
    rng = np.random.default_rng(14)
    pose = make_pose(0, rng, n=2)

    def feed(start: int, n: int, paced: bool) -> None:
        for i in range(start, start + n):
            pose.frame_index = i
            recorder.pose(pose, Frame(image, i, pose.t_capture_ns))
            if i % 50 == 0:
                recorder.event(ActionRecord(i, "rule", "device:ON", i))
            if paced and i % 250 == 249:  # a few flushes behind at most
                wait_for(lambda i=i: recorder.rows_written >= i - 500, timeout=30)

    def lines(key: str) -> int:
        with open(recorder.paths[key]) as fh:
            return sum(1 for _ in fh)

    def written(n: int) -> None:
        """Wait until every file holds the n poses: the writer is idle, holding nothing."""
        wait_for(lambda: recorder.rows_written == n and lines("timing_csv") == n + 1
                 and lines("events_csv") == (n + 49) // 50 + 1, timeout=30)

    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        recorder = opened(tmp_path, session, video=True, flush_s=0.01)
        # Warm-up, unpaced: the writer falls behind, so the pending rows and the video
        # copies reach the most they will ever hold (both are bounded, neither a leak).
        feed(0, 3000, paced=False)
        written(3000)
        before = tracemalloc.get_traced_memory()[0]
        n = 10_000
        feed(3000, n, paced=True)
        written(3000 + n)
        grown = tracemalloc.get_traced_memory()[0] - before
        recorder.close()
    finally:
        tracemalloc.stop()
        if was_enabled:
            gc.enable()
    assert recorder.dropped == 0 and recorder.errors == 0
    assert grown < 5 * n, f"{grown} bytes kept over {n} poses ({grown / n:.1f} bytes a pose)"
