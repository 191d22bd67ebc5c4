"""Multi-animal end to end on the real twoflies project: train a few steps, evaluate, export
(parity-checked), analyse video frames through the live engine with tracking into
DeepLabCut's multi-animal table, and fire per-animal rules with a real recorder."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseloop.config import TrainConfig
from poseloop.modelspec import ModelSpec
from poseloop.project import read_project

SHARED = Path(__file__).resolve().parents[2] / "shared"
TWOFLIES = SHARED / "datasets" / "twoflies-SLEAP"
VIDEO = TWOFLIES / "videos" / "centered_pair.mp4"

pytestmark = pytest.mark.skipif(not TWOFLIES.is_dir(), reason="shared twoflies-SLEAP missing")


@pytest.fixture(scope="module")
def flies_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from poseloop.training.train import train

    out = tmp_path_factory.mktemp("flies") / "run"
    cfg = TrainConfig(backbone="mobilenet_v2_0.35", weights="none", iterations=3, batch_size=2,
                      curve_points=1, warmup_iterations=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(read_project(TWOFLIES), cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def flies_onnx(flies_run: Path) -> Path:
    from poseloop.export.pipeline import ExportOptions, export_run

    result = export_run(flies_run, opts=ExportOptions(parity_frames=4), log=lambda _: None)
    return result.path


def test_run_folder_and_evaluation(flies_run: Path) -> None:
    from poseloop.training.evaluate import evaluate, format_summary
    from poseloop.training.run import read_run

    info = read_run(flies_run)
    assert info.multi_animal and info.individuals == ["fly1", "fly2"]
    assert len(info.paf_edges) == 23  # the skeleton is a tree over the 24 parts
    curve = pd.read_csv(flies_run / "curve.csv")  # matched RMSE while training (NaN: 3 steps
    assert len(curve) == 1 and {"train_rmse", "test_rmse"} <= set(curve.columns)  # find none)
    assert (flies_run / "learning_curve.png").is_file()
    result = evaluate(flies_run, plots=2)
    for key in ("train_rmse", "test_rmse", "test_map", "test_found"):
        assert key in result
    assert result["n_test"] == 10 and result["n_train"] == 190
    assert len(list((flies_run / "evaluation" / "frames").glob("*.png"))) == 2
    assert "mAP (OKS)" in format_summary(result)


def test_int8_export_of_a_multi_animal_model(flies_run: Path, tmp_path: Path) -> None:
    """int8: quantized, checked on matched animals against the test labels, reported."""
    from poseloop.export.pipeline import ExportOptions, export_run

    result = export_run(flies_run, tmp_path / "m.onnx", log=lambda _: None,
                        opts=ExportOptions(parity_frames=2, int8=True, calibration_frames=4,
                                           force=True))
    assert result.int8_path is not None and result.int8_path.is_file()
    report = result.int8
    assert report is not None and report.frames == 10 and report.ms_int8 > 0
    assert ModelSpec.read(result.int8_path).precision == "int8"


def test_export_carries_multi_animal_outputs(flies_onnx: Path) -> None:
    from poseloop.modelspec import open_session

    spec = ModelSpec.read(flies_onnx)
    assert spec.individuals == ["fly1", "fly2"] and spec.decoder == "multi_animal"
    assert len(spec.paf_edges) == 23 and spec.identity is False
    names = [o.name for o in open_session(flies_onnx, optimize=False).get_outputs()]
    assert names == ["scoremap", "locref", "paf"]


def test_analyze_writes_multi_animal_table(flies_onnx: Path, tmp_path: Path) -> None:
    from poseloop.realtime.analyze import analyze_video

    paths, stats = analyze_video(flies_onnx, VIDEO, out=tmp_path, max_frames=12, progress=False)
    df = pd.read_hdf(paths["poses_h5"])
    assert isinstance(df, pd.DataFrame) and len(df) == 12
    assert list(df.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert list(df.columns.get_level_values("individuals").unique()) == ["fly1", "fly2"]
    assert set(stats.tracks) == {"new", "lost", "refound"}
    timing = pd.read_csv(paths["timing_csv"])
    assert {"id_fly1", "id_fly2"} <= set(timing.columns)


def test_live_rules_name_animals(flies_onnx: Path, tmp_path: Path) -> None:
    """Per-animal rules on a multi-animal model in the live engine, recorded with animals."""
    from poseloop.realtime.builder import build_engine
    from poseloop.realtime.cameras import OpenCVCamera
    from poseloop.realtime.engine_config import EngineConfig

    cfg = EngineConfig.model_validate({
        "model": str(flies_onnx),
        "devices": [{"name": "stim", "port": "emulator"}],
        "rules": [{"name": "anywhere", "mode": "level", "actions": [
            {"device": "stim", "command": "ON 1"}], "when": {
            "type": "likelihood", "part": "head", "p": 0.0, "animal": "any"}}],
        "record": {"dir": str(tmp_path), "name": "live"},
    })
    engine = build_engine(cfg, camera=OpenCVCamera(VIDEO))
    with engine:
        camera = OpenCVCamera(VIDEO)
        camera.open()
        for _ in range(5):
            frame = camera.read()
            assert frame is not None
            pose = engine.step(frame)
            assert pose.points.shape == (2, 24, 3)
        camera.close()
    events = pd.read_csv(next(tmp_path.glob("*_events.csv")))
    # p >= 0 holds for both rows (found or not): one event a frame naming both flies
    assert list(events["animals"]) == ["fly1,fly2"] * 5
    assert list(events["action"]) == ["stim:ON 1"] * 5
    assert engine.stats.frames == 5


def test_identity_head_end_to_end(tmp_path: Path) -> None:
    """identity: true -> an identity head trained, exported and read by the decoder."""
    import shutil

    import yaml

    from poseloop.export.pipeline import ExportOptions, export_run
    from poseloop.realtime.multi_decoder import MultiAnimalDecoder
    from poseloop.realtime.runner import OrtRunner
    from poseloop.training.train import train

    root = tmp_path / "flies"
    shutil.copytree(TWOFLIES, root, ignore=shutil.ignore_patterns("videos"))
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["identity"] = True
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    cfg = TrainConfig(backbone="mobilenet_v2_0.35", weights="none", iterations=2, batch_size=2,
                      curve_points=0, warmup_iterations=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(read_project(root), cfg, tmp_path / "run", progress=False)
    result = export_run(tmp_path / "run", opts=ExportOptions(parity_frames=2), log=lambda _: None)
    runner = OrtRunner(result.path)
    assert runner.outputs == ("scoremap", "locref", "paf", "identity")
    decoder = MultiAnimalDecoder(runner.spec)
    outputs = runner.run(np.zeros((384, 384, 3), np.uint8))
    assert outputs[3].shape[1] == 2
    decoder.decode(outputs, np.zeros(decoder.shape, np.float32))
    assert decoder.identity is not None and decoder.identity.shape == (2, 2)


def test_weak_parts_and_swapped_labels_per_animal(flies_run: Path, tmp_path: Path) -> None:
    from poseloop.training.multi_evaluate import diagnose
    from poseloop.training.run import read_run

    info = read_run(flies_run)
    project = read_project(TWOFLIES)
    frames = project.frames[:6]
    labels = np.stack([f.keypoints for f in frames])  # 6 x 2 x 24 x 2
    rng = np.random.default_rng(0)
    poses = np.concatenate([labels + rng.normal(0, 0.5, labels.shape),
                            np.ones(labels.shape[:-1] + (1,))], -1).astype(np.float32)
    tip = info.bodyparts.index("hindlegL3")
    poses[:, :, tip, :2] += 12.0  # one part far off on every animal
    head, neck = info.bodyparts.index("head"), info.bodyparts.index("neck")
    poses[0, 1, [head, neck], :2] = labels[0, 1, [neck, head]]  # fly2's head/neck exchanged
    split = {"images": [f.image for f in frames], "poses": poses, "labels": labels}
    empty = {"images": [], "poses": poses[:0], "labels": labels[:0]}
    result = diagnose(split, empty, info, project, tmp_path)
    weak = {w["bodypart"]: w for w in result["weak_bodyparts"]}
    assert "hindlegL3" in weak and weak["hindlegL3"]["cause"] == "labels"
    assert weak["hindlegL3"]["worst"][0]["image"].endswith(("(fly1)", "(fly2)"))
    assert list((tmp_path / "worst" / "hindlegL3").glob("*.png"))
    swaps = result["swapped_labels"]
    assert [(s["image"], s["bodyparts"]) for s in swaps] == [
        (f"{frames[0].image} (fly2)", ["head", "neck"])]
