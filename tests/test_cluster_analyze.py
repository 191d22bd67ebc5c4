"""``poseloop analyze`` over many videos: in this process and on a real 2-worker Dask
LocalCluster (worker processes), killed workers, resume, bad videos, NWB read back with
pynwb and the outputs loaded with movement.

The models are built here with onnx.helper (a stride-8 convolution per output head: poses
that mean nothing, through the real runner, decoders, tracker and recorder), one
single-animal and one two-animal; the videos are short renders of the synthetic scene.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from poseloop.analysis.batch import plan, run
from poseloop.analysis.cluster import ClusterSpec, SlurmOptions, connect, inference_threads
from poseloop.analysis.outputs import PARTIAL
from poseloop.analysis.video_task import VideoResult
from poseloop.errors import ConfigError
from poseloop.modelspec import ModelSpec
from poseloop.realtime.analyze import analyze_video
from poseloop.realtime.runner import RunnerConfig

onnx = pytest.importorskip("onnx")
distributed = pytest.importorskip("distributed")

RUNNER = RunnerConfig(intra_threads=1)
BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
SKELETON = [("snout", "leftear"), ("snout", "rightear"), ("leftear", "tailbase")]
SINGLE = ModelSpec(bodyparts=BODYPARTS, skeleton=SKELETON, stride=8.0, offset=4.0,
                   locref_stdev=7.2801, likelihood="sigmoid", backbone="tiny")
MULTI = ModelSpec(bodyparts=BODYPARTS, skeleton=SKELETON, stride=8.0, offset=4.0,
                  locref_stdev=7.2801, likelihood="sigmoid", backbone="tinyma",
                  individuals=["mouse1", "mouse2"], paf_edges=SKELETON)


def build_model(path: Path, spec: ModelSpec) -> Path:
    """uint8 N x H x W x 3 -> one stride-8 convolution per head (scoremap, locref[, paf])."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(len(spec.individuals))
    k, heads = len(spec.bodyparts), [("scoremap", len(spec.bodyparts))]
    heads.append(("locref", 2 * k))
    if spec.multi_animal:
        heads.append(("paf", 2 * len(spec.paf_edges)))
    nodes = [helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2])]
    weights, outputs = [], []
    for name, channels in heads:
        weights.append(numpy_helper.from_array(
            rng.normal(0, 0.003, (channels, 3, 8, 8)).astype(np.float32), f"w_{name}"))
        nodes.append(helper.make_node("Conv", ["nchw", f"w_{name}"], [name], strides=[8, 8],
                                      kernel_shape=[8, 8]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                     ["N", channels, "h", "w"]))
    graph = helper.make_graph(
        nodes, "tiny_pose",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])],
        outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    helper.set_model_props(model, spec.to_metadata())
    onnx.save(model, path)
    return path


def write_video(path: Path, frames: int, seed: int, size: tuple[int, int] = (160, 120)) -> Path:
    from poseloop.synthetic import SyntheticScene

    scene = SyntheticScene(*size, seed=seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, size)
    for i in range(frames):
        writer.write(scene.render(i / 30)[0])
    writer.release()
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two models and six videos: 160 x 120, 40 frames (``a``, ``b``) or 240
    (``long``); 320 x 240, 900 frames (``slow*``: about a second each to analyse)."""
    root = tmp_path_factory.mktemp("cluster_data")
    found = {"single": build_model(root / "single.onnx", SINGLE),
             "multi": build_model(root / "multi.onnx", MULTI)}
    for name, frames, seed in (("a", 40, 1), ("b", 40, 2), ("long", 240, 3)):
        found[name] = write_video(root / f"{name}.mp4", frames, seed)
    for name, seed in (("slow1", 4), ("slow2", 5), ("slow3", 6)):
        found[name] = write_video(root / f"{name}.mp4", 900, seed, (320, 240))
    return found


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes, 1 thread each, as ``--cluster local:2``."""
    with connect(ClusterSpec.parse("local:2")) as dask_client:
        yield dask_client


def reference(model: Path, video: Path, out: Path) -> pd.DataFrame:
    """Single-process ``analyze`` of ``video``: its poses table."""
    paths, _ = analyze_video(model, video, out, runner=RUNNER, progress=False)
    table = pd.read_hdf(paths["poses_h5"])
    assert isinstance(table, pd.DataFrame)
    return table


def assert_same_table(found: Path, expected: pd.DataFrame) -> None:
    table = pd.read_hdf(found)
    assert isinstance(table, pd.DataFrame)
    assert table.columns.equals(expected.columns)
    assert table.index.tolist() == expected.index.tolist()
    np.testing.assert_array_equal(table.to_numpy(), expected.to_numpy())  # NaN == NaN


def test_cluster_results_equal_single_process(data: dict[str, Path], client,
                                              tmp_path: Path) -> None:
    """Single- and multi-animal videos on 2 worker processes: every output file written,
    poses equal to single-process analyze frame by frame (the .csv byte for byte)."""
    single, _ = plan(data["single"], [data["a"], data["b"], data["long"]], tmp_path / "out",
                     RUNNER)
    multi, _ = plan(data["multi"], [data["a"], data["long"]], tmp_path / "out", RUNNER)
    results = run(single + multi, client)
    assert [r.status for r in results] == ["done"] * 5
    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    assert {r.worker for r in results} == set(pids)  # both worker processes took videos
    for job, result in zip(single + multi, results, strict=True):
        expected = reference(job.model, job.video, tmp_path / "ref" / job.model.stem)
        assert result.frames == len(expected)
        assert job.outputs.complete()
        assert_same_table(job.outputs.files["poses_h5"], expected)
        ref_csv = tmp_path / "ref" / job.model.stem / job.outputs.files["poses_csv"].name
        assert job.outputs.files["poses_csv"].read_bytes() == ref_csv.read_bytes()
    multi_table = pd.read_hdf(multi[1].outputs.files["poses_h5"])
    assert isinstance(multi_table, pd.DataFrame)
    assert list(multi_table.columns.get_level_values("individuals").unique()) == [
        "mouse1", "mouse2"]
    assert not (tmp_path / "out" / PARTIAL).exists()


def test_resume_skips_complete_videos_and_redoes_partial_ones(data: dict[str, Path],
                                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    jobs, skipped = plan(data["single"], [data["a"], data["b"]], out, RUNNER, nwb=True)
    assert not skipped and [r.status for r in run(jobs)] == ["done", "done"]
    done_a, done_b = (job.outputs for job in jobs)
    stamp = done_a.files["poses_h5"].stat().st_mtime_ns
    # b: its .nwb lost and a killed attempt's staging folder left behind
    done_b.files["nwb:animal"].unlink()
    stale = out / PARTIAL / f"{done_b.base}.0123456789ab"
    stale.mkdir(parents=True)
    (stale / "half.csv").write_text("scorer\n")
    jobs, skipped = plan(data["single"], [data["a"], data["b"]], out, RUNNER, nwb=True)
    assert [r.video for r in skipped] == [data["a"]] and [j.video for j in jobs] == [data["b"]]
    assert [r.status for r in run(jobs)] == ["done"]
    assert done_b.complete() and not (out / PARTIAL).exists()
    assert done_a.files["poses_h5"].stat().st_mtime_ns == stamp  # not redone
    jobs, skipped = plan(data["single"], [data["a"], data["b"]], out, RUNNER, nwb=True,
                         overwrite=True)
    assert len(jobs) == 2 and not skipped


def test_bad_videos_are_reported_by_name_while_the_others_finish(
        data: dict[str, Path], client, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Through the command line, on the running scheduler by its address."""
    from poseloop.cli import main

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data["a"].read_bytes()[:3000])
    tiny = tmp_path / "tiny.mp4"
    writer = cv2.VideoWriter(str(tiny), cv2.VideoWriter.fourcc(*"mp4v"), 30, (16, 16))
    for _ in range(3):
        writer.write(np.zeros((16, 16, 3), np.uint8))
    writer.release()
    out = tmp_path / "out"
    videos = [str(v) for v in (broken, data["a"], truncated, tiny, data["b"])]
    status = main(["analyze", str(data["single"]), *videos, "--out", str(out),
                   "--cluster", client.scheduler.address, "--threads", "1", "--no-progress"])
    assert status == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "poseloop analyze: error" in line]
    assert len(errors) == 3
    assert "broken.mp4" in errors[0] and "cannot be opened" in errors[0]
    assert "truncated.mp4" in errors[1] and "cannot be opened" in errors[1]
    assert "tiny.mp4" in errors[2] and "smaller than" in errors[2]
    assert "2 videos analysed, 0 skipped (complete), 3 failed" in captured.out
    assert sorted(p.name for p in out.glob("*.h5")) == [
        "aDLC_poseloop_tiny.h5", "bDLC_poseloop_tiny.h5"]
    assert main(["analyze", str(data["single"]), str(data["a"]), "--out", str(out),
                 "--no-progress"]) == 0
    assert "0 videos analysed, 1 skipped (complete), 0 failed" in capsys.readouterr().out


class KillFirstWorker:
    """Progress that SIGKILLs the worker of the first video to report frames, mid-video."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.killed: tuple[str, Path] | None = None
        self.lock = threading.Lock()

    def frames(self, video: Path, done: int, total: int | None, worker: str) -> None:
        with self.lock:
            if self.killed is None and total and 0 < done < total // 2:
                os.kill(self.pids[worker], signal.SIGKILL)
                self.killed = (worker, video)

    def finished(self, result: VideoResult) -> None:
        pass


def test_a_killed_worker_does_not_stop_the_run(data: dict[str, Path], client,
                                               tmp_path: Path) -> None:
    """SIGKILL a worker while it analyses a video: the scheduler reruns that video on a
    live worker, and every output ends up whole."""
    videos = [data["slow1"], data["slow2"], data["slow3"], data["a"]]
    jobs, _ = plan(data["single"], videos, tmp_path / "out", RUNNER)
    killer = KillFirstWorker(client.run(os.getpid))
    results = run(jobs, client, killer)
    assert killer.killed is not None
    dead, video = killer.killed
    assert [r.status for r in results] == ["done"] * 4
    assert [r.frames for r in results] == [900, 900, 900, 40]
    redone = next(r for r in results if r.video == video)
    assert redone.worker != dead
    assert dead not in client.run(os.getpid)
    for job, result in zip(jobs, results, strict=True):
        assert job.outputs.complete()
        assert len(pd.read_hdf(job.outputs.files["poses_h5"])) == result.frames
        assert len(pd.read_csv(job.outputs.files["timing_csv"])) == result.frames
    job = next(j for j in jobs if j.video == video)
    assert_same_table(job.outputs.files["poses_h5"], reference(job.model, video, tmp_path))
    assert not (tmp_path / "out" / PARTIAL).exists()


def test_nwb_files_read_back_with_pynwb(data: dict[str, Path], tmp_path: Path) -> None:
    """One file per individual (a model's unique bodyparts: ``single``); every series
    equals the DeepLabCut table, timed by the video's frame times; the skeleton, the
    model's description and the source video are there."""
    pynwb = pytest.importorskip("pynwb")
    pytest.importorskip("ndx_pose")
    unique = build_model(tmp_path / "unique.onnx", replace(MULTI, unique_bodyparts=["arena"]))
    edges = [[0, 1], [0, 2], [1, 3]]
    for model, nodes in ((data["single"], {"animal": (BODYPARTS, edges)}),
                         (unique, {"mouse1": (BODYPARTS, edges), "mouse2": (BODYPARTS, edges),
                                   "single": (["arena"], [])})):
        jobs, _ = plan(model, [data["a"]], tmp_path / "out", RUNNER, nwb=True)
        assert [r.status for r in run(jobs)] == ["done"]
        files = jobs[0].outputs.files
        assert sorted(k for k in files if k.startswith("nwb:")) == [f"nwb:{i}" for i in nodes]
        table = pd.read_hdf(files["poses_h5"])
        assert isinstance(table, pd.DataFrame)
        for individual, (bodyparts, skeleton_edges) in nodes.items():
            with pynwb.NWBHDF5IO(str(files[f"nwb:{individual}"]), "r") as io:
                nwbfile = io.read()
                assert nwbfile.identifier == individual
                assert nwbfile.subject.subject_id == individual
                estimation = nwbfile.processing["behavior"]["PoseEstimation"]
                assert estimation.source_software == "poseloop"
                assert model.name in estimation.description
                assert estimation.scorer == "DLC_poseloop_" + ModelSpec.read(model).backbone
                assert list(estimation.skeleton.nodes[:]) == bodyparts
                assert estimation.skeleton.edges[:].tolist() == skeleton_edges
                assert estimation.source_video.external_file[:].tolist() == [
                    os.path.relpath(data["a"], tmp_path / "out")]  # from the .nwb's folder
                for bodypart in bodyparts:
                    series = estimation.pose_estimation_series[bodypart]
                    column = (table.columns[0][0], *(() if table.columns.nlevels == 3
                                                     else (individual,)), bodypart)
                    np.testing.assert_array_equal(
                        series.data[:], table.loc[:, [(*column, "x"), (*column, "y")]])
                    np.testing.assert_array_equal(series.confidence[:],
                                                  table[(*column, "likelihood")])
                    np.testing.assert_allclose(series.timestamps[:],
                                               table.index.to_numpy() / 30, atol=1e-6)


def test_movement_loads_the_outputs(data: dict[str, Path], tmp_path: Path) -> None:
    """The README's check: movement reads the .h5, the .csv and the .nwb files, single-
    and multi-animal, with the same numbers."""
    load = pytest.importorskip("movement.io").load_dataset
    pytest.importorskip("pynwb")
    for model, individuals in ((data["single"], ["animal"]),
                               (data["multi"], ["mouse1", "mouse2"])):
        jobs, _ = plan(model, [data["b"]], tmp_path / "out", RUNNER, nwb=True)
        assert [r.status for r in run(jobs)] == ["done"]
        files = jobs[0].outputs.files
        from_h5 = load(files["poses_h5"], source_software="DeepLabCut", fps=30)
        from_csv = load(files["poses_csv"], source_software="DeepLabCut", fps=30)
        assert from_h5.sizes["time"] == 40 and list(from_h5.keypoints.values) == BODYPARTS
        if individuals != ["animal"]:  # movement names a single animal's track itself
            assert list(from_h5.individuals.values) == individuals
        np.testing.assert_allclose(from_csv.position.values, from_h5.position.values)
        for n, individual in enumerate(individuals):
            from_nwb = load(files[f"nwb:{individual}"], source_software="NWB")
            assert list(from_nwb.individuals.values) == [individual]
            from_nwb = from_nwb.sel(keypoints=BODYPARTS)  # movement sorts them by name
            np.testing.assert_array_equal(from_nwb.position.values[..., 0],
                                          from_h5.position.values[..., n])
            np.testing.assert_array_equal(from_nwb.confidence.values[..., 0],
                                          from_h5.confidence.values[..., n])


def test_cluster_forms_and_slurm_jobs(tmp_path: Path) -> None:
    assert ClusterSpec.parse("local:3") == ClusterSpec("local", 3)
    assert ClusterSpec.parse("local").workers == (os.cpu_count() or 1)
    assert ClusterSpec.parse("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert ClusterSpec.parse("slurm").kind == "slurm"
    for bad in ("local:0", "locale", "sge"):
        with pytest.raises(ConfigError, match="local:N"):
            ClusterSpec.parse(bad)
    assert inference_threads(ClusterSpec("local", 1)) == (os.cpu_count() or 1)
    assert inference_threads(ClusterSpec("slurm")) == 1
    with pytest.raises(ConfigError, match="cores"):
        SlurmOptions(cores=2, processes=4).cluster_kwargs()
    jobqueue = pytest.importorskip("dask_jobqueue.slurm")
    options = SlurmOptions(queue="gpu", account="lab", cores=8, memory="32GB", gpus=1,
                           processes=2, walltime="02:00:00")
    with jobqueue.SLURMCluster(**options.cluster_kwargs(), log_directory=str(tmp_path),
                               scheduler_options={"host": "127.0.0.1",
                                                  "dashboard_address": ":0"}) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p gpu", "#SBATCH -A lab", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --gres=gpu:1", "#SBATCH -t 02:00:00", "--nworkers 2",
                 "--nthreads 4"):
        assert line in script


def test_a_local_cluster_leaves_the_environment_as_it_was() -> None:
    """Dask's nannies set OMP_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_, PYTHONHASHSEED, ... in
    the process that starts them; poseloop puts the environment back, so a live run started
    from the same process later is not throttled."""
    before = dict(os.environ)
    with connect(ClusterSpec.parse("local:1")) as client:
        assert client.submit(lambda: 1 + 1).result(timeout=60) == 2
    assert dict(os.environ) == before
