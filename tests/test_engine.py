"""The live engine end to end: real ONNX Runtime sessions, real video files, real recorder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from poseloop.errors import CameraError, ConfigError, FrameError, ProviderError
from poseloop.realtime.analyze import analyze_video
from poseloop.realtime.engine import Engine
from poseloop.realtime.types import Frame


def _config(model: Path, tmp_path: Path, **extra) -> dict:
    cfg = {
        "model": str(model),
        "camera": {"kind": "synthetic", "fps": 1000, "paced": False, "frames": 60},
        "record": {"dir": str(tmp_path / "rec")},
        "runner": {"intra_threads": 1},
    }
    cfg.update(extra)
    return cfg


def test_live_run_records_every_processed_frame(synthetic_onnx: Path, tmp_path: Path) -> None:
    cfg = _config(synthetic_onnx, tmp_path, processors=[{"type": "kalman"}])
    with Engine.from_config(cfg) as engine:
        stats = engine.run()
    assert stats.stopped_by == "end of stream"
    assert stats.frames > 0 and stats.frames + stats.camera_dropped == 60
    paths = engine.sink("recorder").paths
    poses = pd.read_hdf(paths["poses_h5"])
    assert len(poses) == stats.frames
    assert list(poses.columns.names) == ["scorer", "bodyparts", "coords"]
    assert poses.index.is_monotonic_increasing and poses.index.is_unique
    timing = pd.read_csv(paths["timing_csv"])
    assert len(timing) == stats.frames
    assert timing["dropped"].sum() + stats.frames <= 60
    stamps = timing[["t_capture_ns", "grab", "preprocess", "infer", "decode", "publish"]]
    assert (stamps.diff(axis=1).iloc[:, 1:] >= 0).all().all()  # stages in order


def test_step_api_and_bad_frames(synthetic_onnx: Path, tmp_path: Path) -> None:
    engine = Engine.from_config(_config(synthetic_onnx, tmp_path, record={}))
    with engine:
        image = np.zeros((240, 320, 3), np.uint8)
        pose = engine.step(Frame(image, 7, 123))
        assert pose.points.shape == (1, 4, 3) and pose.frame_index == 7
        assert pose.ids.tolist() == [0] and pose.camera == 0
        assert set(pose.timings) >= {"grab", "infer", "decode", "publish"}
        with pytest.raises(FrameError, match="frame 8"):
            engine.step(Frame(image.astype(np.float32), 8, 124))
        with pytest.raises(FrameError, match="frame 9"):
            engine.step(Frame(np.zeros((240, 320), np.uint16), 9, 125))


def test_missing_provider_is_an_error(synthetic_onnx: Path, tmp_path: Path) -> None:
    cfg = _config(synthetic_onnx, tmp_path, runner={"providers": ["cuda"]})
    with pytest.raises(ProviderError, match="CUDAExecutionProvider"):
        Engine.from_config(cfg)
    cfg["runner"]["allow_fallback"] = True
    with pytest.warns(UserWarning):
        engine = Engine.from_config(cfg)
    assert engine.runner.providers == ["CPUExecutionProvider"]


def test_config_errors_name_the_field(synthetic_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="camera"):
        Engine.from_config(_config(synthetic_onnx, tmp_path, camera={"kind": "webcam"}))
    with pytest.raises(ConfigError, match="frames"):
        Engine.from_config(_config(synthetic_onnx, tmp_path, max_frames=0, frames=3))
    path = tmp_path / "run.yaml"
    path.write_text("model: nowhere.onnx\n")
    from poseloop.errors import ModelError

    with pytest.raises(ModelError, match="nowhere.onnx"):
        Engine.from_config(path)


def test_analyze_video_writes_complete_dlc_file(synthetic_onnx: Path, synthetic_project: Path,
                                                tmp_path: Path) -> None:
    video = synthetic_project / "videos" / "synth.mp4"
    n = int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT))
    paths, stats = analyze_video(synthetic_onnx, video, tmp_path, progress=False)
    assert stats.frames == n
    poses = pd.read_hdf(paths["poses_h5"])
    assert poses.index.tolist() == list(range(n))  # every frame, no gaps
    csv = pd.read_csv(paths["poses_csv"], header=[0, 1, 2], index_col=0)
    np.testing.assert_allclose(csv.to_numpy(), poses.to_numpy(), rtol=1e-5)
    assert poses.shape[1] == 4 * 3


def test_analyze_cli_and_unreadable_video(synthetic_onnx: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    from poseloop.cli import main

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert main(["analyze", str(synthetic_onnx), str(bad)]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    with pytest.raises(CameraError, match="not found"):
        analyze_video(synthetic_onnx, tmp_path / "missing.mp4", tmp_path)


def test_run_cli_overrides(synthetic_onnx: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture) -> None:
    import yaml

    from poseloop.cli import main

    cfg = _config(synthetic_onnx, tmp_path)
    cfg["camera"]["frames"] = None
    cfg.pop("record")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--max-frames", "5", "--record", str(tmp_path / "r2")]) == 0
    out = capsys.readouterr().out
    assert "5 frames" in out and "max_frames" in out
    assert len(pd.read_hdf(next((tmp_path / "r2").glob("*.h5")))) == 5


def test_benchmark_json(synthetic_onnx: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture) -> None:
    from poseloop.cli import main

    js = tmp_path / "bench.json"
    args = ["benchmark", str(synthetic_onnx), "--sizes", "160x120", "--frames", "30",
            "--threads", "1", "--json", str(js)]
    assert main(args) == 0
    assert "overhead beyond inference" in capsys.readouterr().out
    result = json.loads(js.read_text())["160x120"]
    for key in ("stages", "inference_p50_ms", "overhead_p50_ms", "fps", "dropped"):
        assert key in result
    assert set(result["stages"]["infer"]) == {"p50_ms", "p95_ms", "p99_ms", "max_ms"}
    assert result["frames"] == 30


def test_a_video_camera_reports_its_own_size_and_rate_to_every_sink(
        synthetic_onnx: Path, tmp_path: Path) -> None:
    """The camera is opened before warm-up: a 320x240, 60-fps file reaches the stream's meta
    and the recorded video at its own size and rate (not a 640x480 / 30 fps fallback)."""
    from poseloop.closed_loop import ANY_PORT, bound_endpoint
    from poseloop.stream.subscriber import PoseSubscriber
    from poseloop.synthetic import SyntheticScene

    video = tmp_path / "small.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 60.0, (320, 240))
    scene = SyntheticScene(320, 240, seed=2)
    for i in range(90):
        writer.write(scene.render(i / 60.0)[0])
    writer.release()
    cfg = _config(synthetic_onnx, tmp_path, camera={"kind": "opencv", "source": str(video),
                                                     "paced": True},
                  stream={"endpoint": ANY_PORT})
    cfg["record"]["video"] = True
    with Engine.from_config(cfg) as engine:
        assert engine.camera_info is not None
        assert (engine.camera_info.width, engine.camera_info.height) == (320, 240)
        with PoseSubscriber(bound_endpoint(engine)) as sub:
            time.sleep(0.3)  # the subscription reaches the publisher
            stats = engine.run()  # 1.5 s paced: meta is repeated every second
            while sub.recv(timeout=0.5) is not None and sub.meta is None:
                pass
            assert sub.meta is not None and tuple(sub.meta.image_size) == (320, 240)
            assert sub.meta.fps == 60.0
    recorded = cv2.VideoCapture(str(engine.sink("recorder").paths["video"]))
    size = (recorded.get(cv2.CAP_PROP_FRAME_WIDTH), recorded.get(cv2.CAP_PROP_FRAME_HEIGHT))
    assert size == (320, 240) and recorded.get(cv2.CAP_PROP_FPS) == 60.0
    count = 0
    while recorded.read()[0]:
        count += 1
    assert count == stats.frames > 0
