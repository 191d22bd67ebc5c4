"""Shuffles: K runs on reproducible splits, mean ± sd in the JSON, learning curves."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
from poseloop.config import AugmentConfig, TrainConfig  # noqa: E402
from poseloop.errors import ConfigError  # noqa: E402
from poseloop.project import read_project  # noqa: E402
from poseloop.training.run import read_run  # noqa: E402
from poseloop.training.shuffles import mean_sd  # noqa: E402
from poseloop.training.train import train_shuffles  # noqa: E402

TINY = TrainConfig(backbone="mobilenet_v2_0.35", weights="none", iterations=6, batch_size=2,
                   warmup_iterations=1, curve_points=3, seed=5,
                   augment=AugmentConfig(crop_size=(64, 64)))


@pytest.fixture(scope="module")
def shuffled(synthetic_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shuffles") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_shuffles(read_project(synthetic_project), TINY, out, 3, progress=False)
    return out


def test_each_shuffle_is_a_run_on_its_own_reproducible_split(
    shuffled: Path, synthetic_project: Path
) -> None:
    project = read_project(synthetic_project)
    folders = sorted(p.name for p in shuffled.iterdir())
    assert folders == ["shuffle1", "shuffle2", "shuffle3"]
    tests = []
    for k in (1, 2, 3):
        info = read_run(shuffled / f"shuffle{k}")
        assert info.config.seed == 5 + k - 1
        again = project.split(5 + k - 1, None)
        assert (info.split.train, info.split.test) == (again.train, again.test)
        tests.append(tuple(info.split.test))
        curve = pd.read_csv(shuffled / f"shuffle{k}" / "curve.csv")
        assert curve["iteration"].iloc[-1] == 6 and len(curve) >= 3
        assert curve["minutes"].is_monotonic_increasing
        assert curve[["train_rmse", "test_rmse"]].notna().all().all()
        assert (shuffled / f"shuffle{k}" / "learning_curve.png").stat().st_size > 1000
    assert len(set(tests)) == 3  # three different test sets


def test_evaluate_reports_mean_and_sd_over_shuffles(shuffled: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    from poseloop.cli import main

    js = tmp_path / "eval.json"
    assert main(["evaluate", str(shuffled), "--json", str(js), "--plots", "1"]) == 0
    printed = capsys.readouterr().out
    assert "3 shuffles" in printed and "±" in printed
    result = json.loads(js.read_text())
    assert result == json.loads((shuffled / "evaluation" / "summary.json").read_text())
    tests = [r["test_rmse"] for r in result["shuffles"]]
    assert [r["shuffle"] for r in result["shuffles"]] == ["shuffle1", "shuffle2", "shuffle3"]
    assert result["test_rmse"]["mean"] == pytest.approx(np.mean(tests))
    assert result["test_rmse"]["sd"] == pytest.approx(np.std(tests, ddof=1))
    assert result["test_rmse"]["n"] == 3
    snout = [r["per_bodypart"]["snout"]["train_rmse"] for r in result["shuffles"]]
    assert result["per_bodypart"]["snout"]["train_rmse"]["mean"] == pytest.approx(
        np.mean(snout))
    for k in (1, 2, 3):  # each shuffle evaluated into its own folder
        assert (shuffled / f"shuffle{k}" / "evaluation" / "summary.json").is_file()
    assert (shuffled / "learning_curve.png").stat().st_size > 1000


def test_train_command_with_shuffles_and_resume(synthetic_project: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    from poseloop.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("backbone: mobilenet_v2_0.35\nweights: none\nbatch_size: 2\n"
                   "curve_points: 0\naugment: {crop_size: [64, 64]}\n")
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", str(synthetic_project), "--config", str(cfg), "--iterations",
                     "2", "--shuffles", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "shuffle 2/2" in printed and "recipe: scale" in printed
    assert not (out / "shuffle1" / "curve.csv").exists()  # curve_points: 0 measures nothing
    for k in (1, 2):  # resume raises the step count of both shuffles
        path = out / f"shuffle{k}" / "train_config.yaml"
        path.write_text(path.read_text().replace("iterations: 2", "iterations: 3"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--resume", "--out", str(out)]) == 0
    for k in (1, 2):
        assert pd.read_csv(out / f"shuffle{k}" / "loss.csv")["iteration"].max() == 3


def test_bad_shuffle_count_and_mean_sd() -> None:
    with pytest.raises(ConfigError, match="--shuffles must be 1 or more"):
        train_shuffles(None, TINY, Path("unused"), 0)  # type: ignore[arg-type]
    assert mean_sd([1.0, 3.0, None]) == {"mean": 2.0, "sd": pytest.approx(2 ** 0.5), "n": 2}
    assert mean_sd([2.0]) == {"mean": 2.0, "sd": None, "n": 1}
    assert mean_sd([None]) == {"mean": None, "sd": None, "n": 0}
