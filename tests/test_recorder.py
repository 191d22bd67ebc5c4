"""Recorder: DeepLabCut pose tables, timing table, video, overflow and write errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from poseloop.realtime.recorder import TIMING_COLUMNS, Recorder
from poseloop.realtime.types import STAGES, Frame, Pose, Sink

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
SCORER = "DLC_poseloop_test"


def make_pose(index: int, rng: np.random.Generator) -> Pose:
    data = rng.uniform(0, 300, (len(BODYPARTS), 3)).astype(np.float32)
    data[:, 2] = rng.uniform(0, 1, len(BODYPARTS))
    t0 = 1_000_000_000 + index * 33_000_000
    return Pose(data, index, t0, {stage: t0 + 1000 * (j + 1) for j, stage in enumerate(STAGES)})


def read_poses(recorder: Recorder) -> tuple[pd.DataFrame, pd.DataFrame]:
    h5 = pd.read_hdf(recorder.paths["poses_h5"], "df_with_missing")
    csv = pd.read_csv(recorder.paths["poses_csv"], header=[0, 1, 2], index_col=0)
    return h5, csv


def wait_for(condition, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_500_poses_in_deeplabcut_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    poses = [make_pose(i, rng) for i in range(500)]
    recorder = Recorder(tmp_path / "out", BODYPARTS, SCORER, name="trial1", flush_s=60)
    assert isinstance(recorder, Sink)
    for pose in poses:
        recorder.submit(pose)
    recorder.close()
    assert recorder.dropped == 0 and recorder.errors == 0 and recorder.error is None
    assert recorder.paths["poses_h5"].name == f"trial1{SCORER}.h5"

    h5, csv = read_poses(recorder)
    assert list(h5.columns.names) == ["scorer", "bodyparts", "coords"]
    assert h5.columns.get_level_values("scorer").unique().tolist() == [SCORER]
    assert h5.columns.get_level_values("bodyparts").unique().tolist() == BODYPARTS
    assert h5.columns.get_level_values("coords").unique().tolist() == ["x", "y", "likelihood"]
    assert h5.shape == (500, 12) and h5.index.tolist() == list(range(500))
    expected = np.stack([p.data for p in poses]).reshape(500, -1)
    np.testing.assert_array_equal(h5.to_numpy(), expected)
    np.testing.assert_array_equal(csv.to_numpy(), expected)
    assert csv.index.tolist() == list(range(500))
    assert h5[SCORER]["tailbase"]["likelihood"].between(0, 1).all()

    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert timing.columns.tolist() == ["frame", *TIMING_COLUMNS]
    assert len(timing) == 500 and timing["frame"].tolist() == list(range(500))
    assert timing["t_capture_ns"].tolist() == [p.t_capture_ns for p in poses]
    for stage in STAGES:
        assert timing[stage].tolist() == [p.timings[stage] for p in poses]
    assert (timing["dropped"] == 0).all() and (timing["lost"] == 0).all()
    assert timing["t_device_ns"].isna().all() and timing["video_frame"].isna().all()


def test_unprocessed_frames_are_absent_and_counted(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    indices = [0, 1, 2, 5, 6, 10]
    recorder = Recorder(tmp_path, BODYPARTS, SCORER, flush_s=60)
    image = np.zeros((8, 8, 3), np.uint8)
    for i in indices:
        pose = make_pose(i, rng)
        recorder.submit(pose, Frame(image, i, pose.t_capture_ns, t_device_ns=7 * i))
    recorder.close()
    h5, _ = read_poses(recorder)
    assert h5.index.tolist() == indices
    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert timing["dropped"].tolist() == [0, 0, 0, 2, 0, 3]
    assert timing["t_device_ns"].tolist() == [7 * i for i in indices]


def test_tables_are_written_periodically(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    recorder = Recorder(tmp_path, BODYPARTS, SCORER, flush_s=0.1)
    for i in range(20):
        recorder.submit(make_pose(i, rng))
    wait_for(lambda: recorder.paths["timing_csv"].exists()
             and len(pd.read_csv(recorder.paths["timing_csv"])) == 20)
    csv = pd.read_csv(recorder.paths["poses_csv"], header=[0, 1, 2], index_col=0)
    assert len(csv) == 20  # readable while recording
    assert not recorder.paths["poses_h5"].exists()  # the .h5 is written at close
    for i in range(20, 50):
        recorder.submit(make_pose(i, rng))
    recorder.close()
    h5, csv = read_poses(recorder)
    assert h5.index.tolist() == csv.index.tolist() == list(range(50))
    assert pd.read_csv(recorder.paths["timing_csv"])["frame"].tolist() == list(range(50))
    assert not list(tmp_path.glob("*.tmp"))


class SlowRecorder(Recorder):
    """A recorder whose writer takes 20 ms per pose."""

    def _store(self, record: tuple) -> None:
        time.sleep(0.02)
        super()._store(record)


def test_queue_overflow_is_counted_not_waited_on(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    poses = [make_pose(i, rng) for i in range(50)]
    recorder = SlowRecorder(tmp_path, BODYPARTS, SCORER, queue_size=2, flush_s=60)
    worst = 0.0
    for pose in poses:
        start = time.perf_counter()
        recorder.submit(pose)
        worst = max(worst, time.perf_counter() - start)
    assert worst < 0.005  # the writer sleeps 20 ms per pose: submit never waited on it
    assert recorder.dropped >= 40
    recorder.close()
    h5, _ = read_poses(recorder)
    assert len(h5) + recorder.dropped == 50
    kept = {int(i) for i in h5.index}
    for pose in poses:  # what was kept is intact (the ring slots were never overwritten)
        if pose.frame_index in kept:
            np.testing.assert_array_equal(h5.loc[pose.frame_index].to_numpy(),
                                          pose.data.reshape(-1))
    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert (timing["dropped"] == 0).all()  # the loop processed every frame
    assert timing["lost"].sum() <= recorder.dropped


def test_video_is_recorded_with_its_frame_numbers(tmp_path: Path) -> None:
    from poseloop.realtime.cameras import SyntheticCamera

    camera = SyntheticCamera(96, 64, paced=False, frames=30)
    camera.open()
    rng = np.random.default_rng(4)
    recorder = Recorder(tmp_path, BODYPARTS, SCORER, video=True, video_fps=30, flush_s=60)
    buffer = np.empty((64, 96, 3), np.uint8)
    while (frame := camera.read(buffer)) is not None:  # one buffer, reused as a loop would
        recorder.submit(make_pose(frame.index, rng), frame)
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
    recorder = Recorder(tmp_path, BODYPARTS, SCORER, flush_s=0.1)
    poses = [make_pose(i, rng) for i in range(60)]
    for pose in poses[:10]:
        recorder.submit(pose)
    wait_for(lambda: recorder.rows_written == 10)
    files = [recorder.paths[k] for k in ("poses_csv", "timing_csv")]
    with unwritable(files):
        start = time.perf_counter()
        for pose in poses[10:30]:
            recorder.submit(pose)
        assert time.perf_counter() - start < 0.05  # the loop never waits on the disk
        wait_for(lambda: recorder.errors >= 2)
        assert str(tmp_path) in recorder.error
        csv = pd.read_csv(recorder.paths["poses_csv"], header=[0, 1, 2], index_col=0)
        assert csv.index.tolist() == list(range(10))  # what was written stays intact
        assert len(pd.read_csv(recorder.paths["timing_csv"])) == 10
    for pose in poses[30:]:  # the disk is back: the held rows are written with the new ones
        recorder.submit(pose)
    recorder.close()
    assert recorder.dropped == 0 and recorder.rows_written == 60
    h5, csv = read_poses(recorder)
    assert h5.index.tolist() == csv.index.tolist() == list(range(60))
    np.testing.assert_array_equal(h5.to_numpy(), np.stack([p.data for p in poses]).reshape(60, -1))
    timing = pd.read_csv(recorder.paths["timing_csv"])
    assert timing["frame"].tolist() == list(range(60)) and (timing["dropped"] == 0).all()
    assert not list(tmp_path.glob("*.tmp"))


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
        recorder = Recorder(disk, BODYPARTS, SCORER, flush_s=0.05)
        for i in range(5000):
            recorder.submit(make_pose(i, rng))
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
            assert "holds the poses" in recorder.error


def test_an_earlier_recording_is_never_overwritten(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    first = Recorder(tmp_path, BODYPARTS, SCORER, name="trial")
    first.submit(make_pose(0, rng))
    first.close()
    second = Recorder(tmp_path, BODYPARTS, SCORER, name="trial")
    second.submit(make_pose(0, rng))
    second.submit(make_pose(1, rng))
    second.close()
    assert second.name == "trial-2" and second.paths["poses_h5"].name == f"trial-2{SCORER}.h5"
    assert len(read_poses(first)[0]) == 1 and len(read_poses(second)[0]) == 2
    with pytest.raises(FileExistsError, match=f"trial{SCORER}"):
        Recorder(tmp_path, BODYPARTS, SCORER, name="trial", if_exists="error")
    third = Recorder(tmp_path, BODYPARTS, SCORER, name="trial", if_exists="overwrite")
    third.close()
    assert third.name == "trial"


def test_submit_checks_the_pose_and_the_state(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, BODYPARTS, SCORER)
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        recorder.submit(Pose(np.zeros((3, 3), np.float32), 0, 0))
    recorder.close()
    with pytest.raises(RuntimeError, match="closed"):
        recorder.submit(make_pose(0, np.random.default_rng(6)))
    assert not recorder.paths["poses_h5"].exists()  # pandas cannot store an empty table
    csv = pd.read_csv(recorder.paths["poses_csv"], header=[0, 1, 2], index_col=0)
    assert csv.empty and list(csv.columns.names) == ["scorer", "bodyparts", "coords"]
    assert pd.read_csv(recorder.paths["timing_csv"]).empty


def test_events_are_recorded(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, BODYPARTS, SCORER)
    recorder.submit(make_pose(0, np.random.default_rng(7)))
    recorder.submit_event(0, "nose_in_zone", "laser:ON 3", 123)
    recorder.submit_event(4, "nose_in_zone", "laser:OFF 3", 456)
    recorder.close()
    events = pd.read_csv(recorder.paths["events_csv"])
    assert events.columns.tolist() == ["frame", "rule", "action", "t_ns"]
    assert events["frame"].tolist() == [0, 4] and events["t_ns"].tolist() == [123, 456]
    assert events["action"].tolist() == ["laser:ON 3", "laser:OFF 3"]


def test_a_file_that_cannot_be_opened_is_left_alone(tmp_path: Path) -> None:
    """Out of file descriptors (EMFILE): the append fails before it starts, and what the file
    holds must not be cut back to the start of an append that never began."""
    import resource

    rng = np.random.default_rng(10)
    recorder = Recorder(tmp_path, BODYPARTS, SCORER, flush_s=0.1)
    for i in range(10):
        recorder.submit(make_pose(i, rng))
    wait_for(lambda: recorder.rows_written == 10)
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
            recorder.submit(make_pose(i, rng))
        wait_for(lambda: recorder.errors > 0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "Too many open files" in recorder.error
    csv = pd.read_csv(recorder.paths["poses_csv"], header=[0, 1, 2], index_col=0)
    assert csv.index.tolist() == list(range(10))  # untouched while it could not be opened
    recorder.close()
    h5, csv = read_poses(recorder)
    assert h5.index.tolist() == csv.index.tolist() == list(range(20))
