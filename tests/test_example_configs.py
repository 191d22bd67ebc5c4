"""Every example config in configs/ runs out of the box (synthetic camera, demo model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "train.yaml")


def test_there_are_examples() -> None:
    names = {p.stem for p in EXPERIMENTS}
    assert {"zone_trigger", "distance_trigger", "stream_only"} <= names


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_example_runs(config: Path, synthetic_onnx: Path, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from poseloop import synthetic_model
    from poseloop.cli import main

    monkeypatch.setenv("POSELOOP_CACHE", str(tmp_path / "cache"))
    synthetic_model.model_path().parent.mkdir(parents=True)
    shutil.copyfile(synthetic_onnx, synthetic_model.model_path())
    monkeypatch.chdir(tmp_path)  # records land here
    assert main(["run", str(config), "--max-frames", "10"]) == 0
    out = capsys.readouterr().out
    assert "10 frames" in out
