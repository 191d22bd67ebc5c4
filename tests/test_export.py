"""ONNX export of poseloop runs and DLC3 models: parity, metadata, int8/fp16, bad files."""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from poseloop.cli import main  # noqa: E402
from poseloop.errors import ModelError  # noqa: E402
from poseloop.export import pipeline  # noqa: E402
from poseloop.export.compare import Int8Report  # noqa: E402
from poseloop.export.frames import load_bgr, video_frames  # noqa: E402
from poseloop.export.onnx_export import run_spec  # noqa: E402
from poseloop.export.parity import (  # noqa: E402
    check_parity,
    ort_maps,
    posenet_reference,
)
from poseloop.export.pipeline import (  # noqa: E402
    ExportOptions,
    ExportResult,
    export_run,
    import_dlc,
)
from poseloop.modelspec import PREFIX, ModelSpec, open_session  # noqa: E402
from poseloop.training.run import load_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OPENFIELD = SHARED / "datasets" / "openfield-Pranav"
VIDEO = OPENFIELD / "videos" / "m3v1mp4.mp4"
MODELS = SHARED / "models"
SIZES = [(640, 480), (320, 240), (160, 120)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MobileNetV2-0.35 run folder on the real openfield project, with random weights.

    Export does not care how the weights were learnt, so this skips training. BatchNorm
    statistics are set from a few real frames and the head gets a larger init than
    PoseNet's, so the maps vary over several logits (near-flat maps would make the
    parity check trivially true).
    """
    if not (OPENFIELD / "config.yaml").is_file():
        pytest.skip(f"shared dataset not found at {OPENFIELD}")
    from poseloop.config import AugmentConfig, TrainConfig
    from poseloop.project import read_project
    from poseloop.training.run import build_model
    from poseloop.training.train import prepare_run

    out = tmp_path_factory.mktemp("run") / "tiny"
    cfg = TrainConfig(backbone="mobilenet_v2_0.35", weights="none",
                      augment=AugmentConfig(crop_size=(64, 64), global_scale=0.8))
    project = read_project(OPENFIELD)
    info = prepare_run(project, cfg, out)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init warning
        net = build_model(info)
    images = np.stack([project.load_image(f)[::2, ::2] for f in project.frames[:4]])
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batch below
    with torch.no_grad():
        net.train()(torch.from_numpy(images).permute(0, 3, 1, 2).float())
    for conv in (net.head.scoremap, net.head.locref):
        torch.nn.init.normal_(conv.weight, std=0.01)
    torch.save({"model": net.eval().state_dict(), "iteration": 0}, out / "model.pt")
    return out


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny run exported (default exporter), plus int8 and fp16 copies."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    opts = ExportOptions(int8=True, fp16=True, calibration_frames=8, force=True)
    return export_run(tiny_run, out, opts, log=lambda _: None)


# --- export, parity, dynamic shapes -----------------------------------------------------------


def test_export_parity_on_real_frames(exported) -> None:
    assert exported.path.is_file()
    parity = exported.parity
    assert parity is not None and parity.frames == 4 and parity.sizes == [(512, 384)]
    assert parity.max_xy_px <= 0.05 and parity.max_likelihood <= 1e-4
    assert parity.argmax_flips == 0


def test_dynamic_height_width_and_batch(exported, tiny_run: Path) -> None:
    net, info = load_model(tiny_run)
    from poseloop.project import read_project

    project = read_project(info.project_root)
    full = load_bgr(project, project.subset(info.split.test)[0])
    assert full.shape == (480, 640, 3)
    frames = [np.ascontiguousarray(full[:h, :w]) for w, h in SIZES]
    session = open_session(exported.path)
    parity = check_parity(session, exported.spec, posenet_reference(net), frames, "test")
    assert parity.sizes == sorted(SIZES)
    # A batch of two frames gives the same maps as one at a time.
    scoremap, locref = session.run(None, {"image": np.stack([frames[1], frames[1]])})
    one_s, one_l = ort_maps(session, frames[1], exported.spec)
    np.testing.assert_allclose(scoremap[1], one_s, atol=1e-5)
    np.testing.assert_allclose(locref[0], one_l, atol=1e-5)


def test_parity_failure_names_numbers_and_deletes_file(tiny_run: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def shifted(net):
        run = posenet_reference(net)
        return lambda frame: (lambda s, lr: (s, lr + 0.1))(*run(frame))

    monkeypatch.setattr(pipeline, "posenet_reference", shifted)
    out = tmp_path / "bad.onnx"
    opts = ExportOptions(parity_frames=2)
    with pytest.raises(ModelError, match=r"does not match PyTorch.*max \|dxy\| 7\.2"):
        export_run(tiny_run, out, opts, log=lambda _: None)
    assert not out.exists()


# --- metadata ----------------------------------------------------------------------------------


def test_metadata_round_trip(exported, tiny_run: Path) -> None:
    _, info = load_model(tiny_run)
    spec = ModelSpec.read(exported.path)
    assert spec == run_spec(info) == exported.spec
    assert spec.source == "poseloop" and spec.likelihood == "sigmoid"
    assert spec.input_order == "BGR" and spec.input_scale == pytest.approx(0.8)
    assert spec.image_size == (64, 64) and spec.stride == 8 and spec.offset == 4
    assert spec.bodyparts == info.bodyparts and spec.skeleton == info.skeleton
    props = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    assert props == spec.to_metadata() and all(k.startswith(PREFIX) for k in props)
    assert ModelSpec.from_metadata(props, "x") == spec
    assert spec.heatmap_spec().locref_stdev == pytest.approx(7.2801)


def test_metadata_missing_or_invalid_key_is_named() -> None:
    spec = ModelSpec(bodyparts=["a"], skeleton=[], stride=8, offset=4, locref_stdev=7.2801,
                     likelihood="clip")
    meta = spec.to_metadata()
    del meta[PREFIX + "stride"]
    with pytest.raises(ModelError, match=r"m\.onnx: .*missing key poseloop\.stride"):
        ModelSpec.from_metadata(meta, "m.onnx")
    meta = {**spec.to_metadata(), PREFIX + "likelihood": "softmax"}
    with pytest.raises(ModelError, match="likelihood must be one of"):
        ModelSpec.from_metadata(meta, "m.onnx")
    meta = {**spec.to_metadata(), PREFIX + "bodyparts": "snout"}
    with pytest.raises(ModelError, match=r"poseloop\.bodyparts='snout' is invalid"):
        ModelSpec.from_metadata(meta, "m.onnx")
    with pytest.raises(ModelError, match="not a poseloop model: no poseloop metadata"):
        ModelSpec.from_metadata({"producer": "other"}, "m.onnx")


def test_likelihood_modes() -> None:
    base = dict(bodyparts=["a", "b"], skeleton=[], stride=8, offset=4, locref_stdev=1.0)
    peak = np.array([0.0, 2.5], np.float32)
    sigmoid = ModelSpec(**base, likelihood="sigmoid").likelihood_of(peak)
    np.testing.assert_allclose(sigmoid, [0.5, 1 / (1 + math.exp(-2.5))], rtol=1e-6)
    np.testing.assert_array_equal(ModelSpec(**base, likelihood="clip").likelihood_of(peak),
                                  [0.0, 1.0])
    np.testing.assert_array_equal(ModelSpec(**base, likelihood="raw").likelihood_of(peak), peak)


def test_modelspec_imports_no_torch() -> None:
    code = "import sys, poseloop.modelspec; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- bad files ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="absent.onnx: model file not found"):
        ModelSpec.read(tmp_path / "absent.onnx")


def test_truncated_file(exported, tmp_path: Path) -> None:
    data = exported.path.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated.onnx: ONNX Runtime cannot load it"):
        ModelSpec.read(path)
    path.write_text("not a model\n")
    with pytest.raises(ModelError, match="cannot load it"):
        ModelSpec.read(path)


def test_foreign_onnx(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "foreign", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "foreign.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=r"foreign\.onnx: not a poseloop model.*import-dlc"):
        ModelSpec.read(path)


def test_wrong_input_errors_from_ort(exported) -> None:
    """What ORT raises for inputs that break the contract; the runner must check first.

    The realtime runner should validate frames before ``session.run`` and raise a
    ModelError/ConfigError that says what to fix: ORT's own errors are pybind
    exceptions (``InvalidArgument``, not a ``PoseloopError``) with terse texts.
    """
    session = open_session(exported.path)
    frame = np.zeros((1, 120, 160, 3), np.uint8)
    with pytest.raises(Exception, match=r"expected: \(tensor\(uint8\)\)"):
        session.run(None, {"image": frame.astype(np.float32)})
    with pytest.raises(Exception, match="Invalid rank for input: image Got: 3 Expected: 4"):
        session.run(None, {"image": frame[0]})
    with pytest.raises(Exception, match="Got: 4 Expected: 3"):
        session.run(None, {"image": np.zeros((1, 120, 160, 4), np.uint8)})


# --- int8 and fp16 -----------------------------------------------------------------------------


def test_int8_model_works_and_follows_fp32(exported, tiny_run: Path) -> None:
    """The int8 file runs and its maps follow fp32's.

    Random weights quantize badly (errors do not cancel as in a trained net), so this only
    asks for clearly correlated maps; accuracy on a trained run is what ``export --int8``
    measures and enforces (test RMSE growth <= --int8-tolerance).
    """
    assert exported.int8_path is not None and exported.int8_path.name == "model.int8.onnx"
    model = onnx.load(str(exported.int8_path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    spec = ModelSpec.read(exported.int8_path)
    assert spec == dataclasses.replace(exported.spec, precision="int8")
    report = exported.int8
    assert report.frames == 6 and report.ms_int8 > 0 and report.rmse_int8 is not None
    from poseloop.project import read_project

    _, info = load_model(tiny_run)
    project = read_project(info.project_root)
    frame = load_bgr(project, project.frames[5])[::2, ::2].copy()
    a = ort_maps(open_session(exported.path), frame, exported.spec)
    b = ort_maps(open_session(exported.int8_path), frame, exported.spec)
    for fp32, int8 in zip(a, b, strict=True):
        assert fp32.shape == int8.shape and np.isfinite(int8).all()
        assert np.corrcoef(fp32.ravel(), int8.ravel())[0, 1] > 0.3


def test_int8_refused_beyond_tolerance(exported, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fp32 = tmp_path / "model.onnx"
    shutil.copy(exported.path, fp32)
    monkeypatch.setattr(pipeline, "quantize_int8",
                        lambda src, dst, frames, spec: shutil.copy(src, dst))
    report = Int8Report(frames=6, rmse_fp32=5.0, rmse_int8=6.0, mean_shift_px=2.0,
                        ms_fp32=10.0, ms_int8=5.0)
    monkeypatch.setattr(pipeline, "compare_int8", lambda *args: report)
    result = ExportResult(fp32, exported.spec)
    frame = [np.zeros((48, 64, 3), np.uint8)]
    labels = np.zeros((1, 4, 2))
    with pytest.raises(ModelError, match=r"int8 test RMSE grows by 1\.00 px > tolerance 0\.5 px"
                                         r".*--force"):
        pipeline.add_int8(result, frame, frame, labels, ExportOptions(), log=lambda _: None)
    assert result.int8_path is None and not (tmp_path / "model.int8.onnx").exists()
    pipeline.add_int8(result, frame, frame, labels, ExportOptions(force=True), log=lambda _: None)
    assert result.int8_path == tmp_path / "model.int8.onnx" and result.int8_path.is_file()
    assert report.speedup == 2.0 and report.error_growth == 1.0


def test_fp16_model_runs_on_cpu(exported) -> None:
    """ORT's CPU provider has the fp16 kernels this graph needs (fp16 is meant for GPUs)."""
    assert exported.fp16_path is not None
    assert ModelSpec.read(exported.fp16_path).precision == "fp16"
    assert exported.fp16_parity.frames == 4
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    a = ort_maps(open_session(exported.path), frame, exported.spec)
    b = ort_maps(open_session(exported.fp16_path), frame, exported.spec)
    for fp32, fp16 in zip(a, b, strict=True):
        assert fp16.dtype == np.float32 and fp16.shape == fp32.shape
        assert np.corrcoef(fp32.ravel(), fp16.ravel())[0, 1] > 0.95


# --- DLC3 import ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("name", "exporter"), [("cspnext_s", "dynamo"),
                                                 ("resnet50", "torchscript")])
def test_dlc3_import_matches_dlclive_reference(name: str, exporter: str, tmp_path: Path) -> None:
    model = MODELS / f"dlc3_{name}_openfield_random.pt"
    ref_path = MODELS / f"dlc3_{name}_openfield_random.reference.npy"
    if not (model.exists() and ref_path.exists() and VIDEO.exists()):
        pytest.skip("shared DLC3 test models or video not available")
    # The import-time check against PyTorch runs on the cheap model only; the reference
    # comparison below is the stronger check.
    opts = ExportOptions(exporter=exporter, parity_frames=1, parity=name == "cspnext_s")
    result = import_dlc(model, tmp_path / "m.onnx", VIDEO, opts=opts, log=lambda _: None)
    assert result.parity is None or result.parity.max_xy_px <= 0.05
    spec = ModelSpec.read(result.path)
    assert spec.source == "dlc3" and spec.likelihood == "clip" and spec.input_scale == 1.0
    assert spec.stride == (8.0 if name == "resnet50" else 16.0) and spec.offset == spec.stride / 2
    assert spec.bodyparts == ["snout", "leftear", "rightear", "tailbase"]

    session = open_session(result.path)
    poses = np.stack([spec.decode(*ort_maps(session, f, spec)) for f in video_frames(VIDEO, 10)])
    reference = np.load(ref_path)
    np.testing.assert_allclose(poses[..., :2], reference[..., :2], rtol=0, atol=0.1)
    np.testing.assert_allclose(poses[..., 2], reference[..., 2], rtol=0, atol=1e-3)


def test_dlc3_int8_needs_frames(tmp_path: Path) -> None:
    model = MODELS / "dlc3_cspnext_s_openfield_random.pt"
    if not model.exists():
        pytest.skip("shared DLC3 test model not available")
    with pytest.raises(ModelError, match="--int8 needs --frames"):
        import_dlc(model, tmp_path / "m.onnx", None, opts=ExportOptions(int8=True))


def test_read_frames_from_folder_and_errors(tmp_path: Path) -> None:
    import cv2

    from poseloop.export.frames import read_frames

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((24, 32, 3), i, np.uint8))
    frames = read_frames(tmp_path, 2)
    assert len(frames) == 2 and frames[1].shape == (24, 32, 3) and frames[1][0, 0, 0] == 2
    with pytest.raises(ModelError, match="frames not found"):
        read_frames(tmp_path / "absent.mp4", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no readable images"):
        read_frames(tmp_path / "empty", 2)


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_export_and_errors(tiny_run: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", str(tiny_run), "--out", str(out), "--no-parity"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert ModelSpec.read(out).backbone == "mobilenet_v2_0.35"
    assert main(["export", str(tmp_path / "norun")]) == 2
    assert "not a poseloop training run" in capsys.readouterr().err
    assert main(["import-dlc", str(tmp_path / "absent.pt")]) == 2
    assert "cannot be read" in capsys.readouterr().err
