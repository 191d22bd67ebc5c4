"""The embedded demo runs the whole closed loop with no camera, data or network access."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest


def test_demo_runs_the_closed_loop(synthetic_onnx: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    from poseloop import synthetic_model
    from poseloop.cli import main

    # The demo builds its model once and caches it; seed the cache with the test model.
    monkeypatch.setenv("POSELOOP_CACHE", str(tmp_path / "cache"))
    cached = synthetic_model.model_path()
    cached.parent.mkdir(parents=True)
    shutil.copyfile(synthetic_onnx, cached)

    assert main(["demo", "--out", str(tmp_path / "demo"), "--seconds", "2", "--fps", "30"]) == 0
    out = capsys.readouterr().out
    for row in ("inference alone", "pose decoded", "subscriber got pose", "device got command"):
        assert row in out
    assert "mean error vs the synthetic ground truth" in out
    poses = pd.read_hdf(next((tmp_path / "demo" / "session").glob("*.h5")))
    assert len(poses) > 0


def test_cached_model_is_reused(synthetic_onnx: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from poseloop import synthetic_model

    monkeypatch.setenv("POSELOOP_CACHE", str(tmp_path))
    path = synthetic_model.model_path()
    shutil.copyfile(synthetic_onnx, path)
    assert synthetic_model.synthetic_model(log=pytest.fail) == path  # no rebuild, no message
