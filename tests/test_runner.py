"""OrtRunner on a small real ONNX model built here with onnx.helper (no torch)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from poseloop.errors import ConfigError, FrameError, ModelError, ProviderError
from poseloop.modelspec import ModelSpec
from poseloop.realtime.runner import OrtRunner, RunnerConfig, make_runner
from poseloop.realtime.types import Runner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

K = 3
SPEC = ModelSpec(
    bodyparts=["snout", "leftear", "tailbase"],
    skeleton=[("snout", "leftear")],
    stride=8.0,
    offset=4.0,
    locref_stdev=7.2801,
    likelihood="sigmoid",
    image_size=(64, 48),
)


def build_model(path: Path, metadata: dict[str, str] | None,
                dims: tuple = ("N", "H", "W", 3)) -> Path:
    """uint8 N x H x W x 3 -> cast, NCHW, stride-8 convs to K scoremaps and 2K locref maps."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.01, (c, 3, 8, 8)).astype(np.float32), name)
        for c, name in ((K, "w_score"), (2 * K, "w_locref"))
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w_score"], ["scoremap"], strides=[8, 8],
                         kernel_shape=[8, 8]),
        helper.make_node("Conv", ["nchw", "w_locref"], ["locref"], strides=[8, 8],
                         kernel_shape=[8, 8]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_pose",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, list(dims))],
        [helper.make_tensor_value_info("scoremap", TensorProto.FLOAT, ["N", K, "h", "w"]),
         helper.make_tensor_value_info("locref", TensorProto.FLOAT, ["N", 2 * K, "h", "w"])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "tiny.onnx", SPEC.to_metadata())


def frame(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, h, w, 3), dtype=np.uint8)


def direct(model: Path, image: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(["scoremap", "locref"], {"image": image})


def test_outputs_equal_a_direct_session_run(model: Path) -> None:
    runner = OrtRunner(model, intra_threads=1)
    assert isinstance(runner, Runner)
    assert runner.spec == SPEC and runner.providers == ["CPUExecutionProvider"]
    image = frame()
    scoremap, locref = runner.run(image)
    expected = direct(model, image)
    assert scoremap.shape == (1, K, 6, 8) and locref.shape == (1, 2 * K, 6, 8)
    np.testing.assert_allclose(scoremap, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(locref, expected[1], rtol=1e-5, atol=1e-6)


def test_buffers_reused_and_rebound_on_a_new_shape(model: Path) -> None:
    runner = OrtRunner(model)
    image = frame()
    first = [a.ctypes.data for a in runner.run(image)]
    image[...] = frame(seed=1)  # same buffer, new content: the binding reads it afresh
    scoremap, locref = runner.run(image)
    assert [scoremap.ctypes.data, locref.ctypes.data] == first
    np.testing.assert_allclose(scoremap, direct(model, image)[0], rtol=1e-5, atol=1e-6)
    other = frame(seed=2)  # another buffer of the same shape: outputs stay where they are
    scoremap, _ = runner.run(other[0])  # H x W x 3 works too
    assert scoremap.ctypes.data == first[0]
    np.testing.assert_allclose(scoremap, direct(model, other)[0], rtol=1e-5, atol=1e-6)
    bigger = frame(96, 128, seed=3)
    scoremap, locref = runner.run(bigger)
    assert scoremap.shape == (1, K, 12, 16) and locref.shape == (1, 2 * K, 12, 16)
    np.testing.assert_allclose(locref, direct(model, bigger)[1], rtol=1e-5, atol=1e-6)
    again = [a.ctypes.data for a in runner.run(bigger)]
    assert again == [scoremap.ctypes.data, locref.ctypes.data]


def test_non_contiguous_crop_is_staged(model: Path) -> None:
    runner = OrtRunner(model)
    big = frame(100, 100, seed=4)
    crop = big[:, 10:58, 20:84]
    scoremap, _ = runner.run(crop)
    expected = direct(model, np.ascontiguousarray(crop))[0]
    np.testing.assert_allclose(scoremap, expected, rtol=1e-5, atol=1e-6)


def test_warmup_uses_the_training_size(model: Path) -> None:
    runner = OrtRunner(model)
    runner.warmup()
    scoremap, _ = runner.run(frame())  # the warmup shape: no rebind
    assert scoremap.shape == (1, K, 6, 8)
    runner.warmup((32, 32), runs=1)


@pytest.mark.parametrize("providers", [("tensorrt", "cuda", "cpu"), ("cuda",)])
def test_missing_provider_is_an_error(model: Path, providers: tuple[str, ...]) -> None:
    missing = [p for p in providers if p != "cpu"]
    names = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
    if all(names[p] in ort.get_available_providers() for p in missing):
        pytest.skip("this onnxruntime has the GPU providers")
    with pytest.raises(ProviderError, match=r"ExecutionProvider.*available: .*CPUExecution"):
        OrtRunner(model, providers=providers)


def test_unknown_provider_name(model: Path) -> None:
    with pytest.raises(ProviderError, match="unknown execution provider 'gpu'"):
        OrtRunner(model, providers=("gpu",))


def test_fallback_runs_on_cpu_and_says_so(model: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.warns(UserWarning, match="falling back to CPUExecutionProvider"):
        runner = OrtRunner(model, providers=("cuda",), allow_fallback=True)
    assert runner.providers == ["CPUExecutionProvider"] and not runner.on_gpu
    scoremap, _ = runner.run(frame())
    np.testing.assert_allclose(scoremap, direct(model, frame())[0], rtol=1e-5, atol=1e-6)


def test_foreign_or_missing_model_is_a_model_error(tmp_path: Path) -> None:
    foreign = build_model(tmp_path / "foreign.onnx", None)
    with pytest.raises(ModelError, match="foreign.onnx.*not a poseloop model"):
        OrtRunner(foreign)
    with pytest.raises(ModelError, match="not found"):
        OrtRunner(tmp_path / "nothing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="junk.onnx.*cannot load"):
        OrtRunner(junk)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((1, 48, 64, 3), np.float32),
        np.zeros((48, 64), np.uint8),
        np.zeros((1, 48, 64, 4), np.uint8),
        np.zeros((1, 1, 48, 64, 3), np.uint8),
    ],
    ids=["float32", "rank2", "4channels", "rank5"],
)
def test_wrong_frames_are_frame_errors(model: Path, bad: np.ndarray) -> None:
    runner = OrtRunner(model)
    with pytest.raises(FrameError, match=r"tiny.onnx needs uint8 H x W x 3 .*BGR"):
        runner.run(bad)


def test_fixed_size_model_names_the_size_it_needs(tmp_path: Path) -> None:
    fixed = build_model(tmp_path / "fixed.onnx", SPEC.to_metadata(), dims=(1, 48, 64, 3))
    runner = OrtRunner(fixed)
    runner.warmup()
    with pytest.raises(FrameError, match=r"needs input shape \[1, 48, 64, 3\].*axis 1 is 32"):
        runner.run(frame(32, 64))


def test_cuda_graph_needs_a_gpu_provider(model: Path) -> None:
    with pytest.raises(ValueError, match="cuda_graph needs providers starting with cuda"):
        RunnerConfig(cuda_graph=True)
    RunnerConfig(providers=["cuda", "cpu"], cuda_graph=True)  # valid; the GPU is checked at open
    with pytest.raises(ProviderError, match="cuda_graph needs the CUDA or TensorRT provider"):
        OrtRunner(model, cuda_graph=True)


def test_backends_are_registered_and_unknown_ones_named(model: Path) -> None:
    assert isinstance(make_runner(model, RunnerConfig()), OrtRunner)
    with pytest.raises(ConfigError, match="unknown runner backend 'tflite'.*onnxruntime"):
        make_runner(model, RunnerConfig(backend="tflite"))
    with pytest.raises(ValueError, match="precision bf16 needs backend 'openvino'"):
        RunnerConfig(precision="bf16")


def test_openvino_backend_matches_onnx_runtime(model: Path) -> None:
    """OpenVINO on the same file: same outputs (fp32), its errors named; a second frame
    size runs on the dynamic-shape compile."""
    if importlib.util.find_spec("openvino") is None:  # not importorskip: see import_openvino
        pytest.skip("openvino is not installed")
    from poseloop.realtime.openvino_runner import OpenVinoRunner

    runner = make_runner(model, RunnerConfig(backend="openvino", intra_threads=1))
    assert isinstance(runner, OpenVinoRunner) and runner.spec.bodyparts
    for image in (frame(), frame(), frame(64, 96, seed=3)):
        got = runner.run(image)
        for a, b in zip(got, direct(model, image), strict=True):
            assert a.shape == b.shape and np.allclose(a, b, atol=1e-4)
    with pytest.raises(FrameError, match="needs uint8 H x W x 3"):
        runner.run(np.zeros((48, 64), np.float32))
    with pytest.raises(ConfigError, match="runs on the CPU"):
        make_runner(model, RunnerConfig(backend="openvino", providers=["cuda"]))
