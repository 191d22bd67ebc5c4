"""Evaluation figures on a hand-made case with known error, and the evaluate command."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseloop.training.evaluate import SplitErrors, point_errors, summarize

PARTS = ["a", "b"]


def _split(labels: np.ndarray, offsets: np.ndarray, likelihood: np.ndarray) -> SplitErrors:
    poses = np.concatenate([labels + offsets, likelihood[..., None]], axis=-1)
    return SplitErrors([f"img{i}.png" for i in range(len(labels))], labels, poses)


def test_known_errors() -> None:
    labels = np.array([[[10, 10], [20, 20]], [[30, 30], [np.nan, np.nan]]], np.float32)
    # errors: 3-4-5 triangle (5 px), 0 px, 1 px; the unlabeled point is ignored
    offsets = np.array([[[3, 4], [0, 0]], [[1, 0], [7, 7]]], np.float32)
    lik = np.array([[0.9, 0.2], [0.8, 0.99]], np.float32)
    train = _split(labels, offsets, lik)
    test = _split(labels, offsets * 2, lik)  # errors 10, 0, 2
    np.testing.assert_allclose(point_errors(train.poses, labels)[:, 0], [5, 1])
    r = summarize(train, test, PARTS, pcutoff=0.5)
    assert r["train_rmse"] == pytest.approx(2.0)  # (5 + 0 + 1) / 3
    assert r["test_rmse"] == pytest.approx(4.0)  # (10 + 0 + 2) / 3
    assert r["test_rmse_pcutoff"] == pytest.approx(6.0)  # (10 + 2) / 2: b's 0.2 dropped
    assert r["per_bodypart"]["a"]["test_rmse"] == pytest.approx(6.0)
    assert r["per_bodypart"]["b"]["test_rmse"] == pytest.approx(0.0)
    assert r["per_bodypart"]["b"]["test_rmse_pcutoff"] is None
    assert (r["n_train"], r["n_test"]) == (2, 2)


@pytest.fixture(scope="module")
def tiny_run(synthetic_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from poseloop.config import AugmentConfig, TrainConfig
    from poseloop.project import read_project
    from poseloop.training.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig(backbone="mobilenet_v2_0.35", weights="none", iterations=3, batch_size=2,
                      warmup_iterations=1, augment=AugmentConfig(crop_size=(64, 64)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(read_project(synthetic_project), cfg, out, progress=False)
    return out


def test_evaluate_command_writes_everything(tiny_run: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    from poseloop.cli import main

    js = tmp_path / "eval.json"
    assert main(["evaluate", str(tiny_run), "--json", str(js), "--plots", "2"]) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "snout" in printed
    result = json.loads(js.read_text())
    for key in ("train_rmse", "test_rmse", "test_rmse_pcutoff", "per_bodypart"):
        assert key in result
    assert set(result["per_bodypart"]) == {"snout", "leftear", "rightear", "tailbase"}
    table = pd.read_csv(tiny_run / "evaluation" / "errors.csv")
    assert set(table["split"]) == {"train", "test"}
    assert len(table) == 4 * (result["n_train"] + result["n_test"])
    # the CSV's errors reproduce the summary
    test_err = table.loc[table["split"] == "test", "error_px"].mean()
    assert test_err == pytest.approx(result["test_rmse"], rel=1e-5)
    assert len(list((tiny_run / "evaluation" / "frames").glob("*.png"))) == 2


def test_evaluate_on_other_project_with_wrong_bodyparts(tiny_run: Path, openfield_copy: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    from poseloop.cli import main

    cfg = openfield_copy / "config.yaml"
    labels = openfield_copy / "labeled-data/m4s1/CollectedData_Pranav.csv"
    labels.write_text("\n".join(labels.read_text().splitlines()[:3 + 8]) + "\n")  # 8 frames
    assert main(["evaluate", str(tiny_run), "--project", str(openfield_copy), "--plots", "1",
                 "--out", str(openfield_copy / "eval")]) == 0
    assert "0 train, 8 test" in capsys.readouterr().out
    cfg.write_text(cfg.read_text().replace("- tailbase", "- tail"))
    (openfield_copy / "labeled-data/m4s1/CollectedData_Pranav.csv").write_text(
        (openfield_copy / "labeled-data/m4s1/CollectedData_Pranav.csv").read_text()
        .replace("tailbase", "tail"))
    assert main(["evaluate", str(tiny_run), "--project", str(openfield_copy)]) == 2
    assert "differ from the model's" in capsys.readouterr().err


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from poseloop.cli import main

    assert main(["train", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a poseloop training run" in capsys.readouterr().err
    bad = tmp_path / "train.yaml"
    bad.write_text("backbone: vgg\nbatch_size: -1\nbogus: 1\n")
    (tmp_path / "config.yaml").write_text("bodyparts: [a]\n")
    assert main(["train", str(tmp_path), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "field 'batch_size'" in err and "field 'bogus'" in err


def test_a_lagging_bodypart_is_named_with_its_worst_frames_and_likely_cause() -> None:
    from poseloop.training.diagnose import advice, weak_bodyparts

    parts = ["snout", "ear", "bar"]
    rng = np.random.default_rng(0)
    train = rng.uniform(1.0, 2.0, (10, 3))
    test = rng.uniform(1.5, 2.5, (4, 3))
    images = {"train": [f"t{i}.png" for i in range(10)], "test": [f"s{i}.png" for i in range(4)]}
    assert weak_bodyparts({"train": train, "test": test}, images, parts) == []

    test_bad = test.copy()
    test_bad[:, 2] = [9.0, 12.0, 8.0, np.nan]  # bar misses on new frames only
    (weak,) = weak_bodyparts({"train": train, "test": test_bad}, images, parts)
    assert weak["bodypart"] == "bar" and weak["cause"] == "new frames"
    assert weak["rmse"] == pytest.approx(29 / 3, abs=0.01)
    assert [w["image"] for w in weak["worst"][:3]] == ["s1.png", "s0.png", "s2.png"]

    train_bad = train.copy()
    train_bad[3, 2] = 40.0  # and on a training frame: the labels disagree
    train_bad[:, 2] += 3.0
    (weak,) = weak_bodyparts({"train": train_bad, "test": test_bad}, images, parts)
    assert weak["cause"] == "labels" and weak["worst"][0] == {
        "image": "t3.png", "split": "train", "error_px": 43.0}
    text = advice(weak, "RUN/evaluation/worst/bar")
    assert "bar is weak" in text and "labels that disagree" in text
    assert "RUN/evaluation/worst/bar" in text and "t3.png (43.0 px)" in text

    # with no test frames the judgement is made on the training frames
    (weak,) = weak_bodyparts({"train": train_bad, "test": np.empty((0, 3))}, images, parts)
    assert weak["split"] == "train"


def test_summary_names_weak_parts() -> None:
    labels = np.zeros((3, 2, 2), np.float32)
    offsets = np.zeros_like(labels)
    offsets[:, 1, 0] = 10.0  # b is 10 px off everywhere, a is exact
    offsets[:, 0, 0] = 0.5
    lik = np.ones((3, 2), np.float32)
    r = summarize(_split(labels, offsets, lik), _split(labels, offsets, lik), PARTS, 0.5)
    assert [w["bodypart"] for w in r["weak_bodyparts"]] == ["b"]
    assert r["weak_bodyparts"][0]["cause"] == "labels"


def test_swapped_left_and_right_labels_are_named() -> None:
    from poseloop.training.diagnose import swap_advice, swapped_labels

    parts = ["snout", "leftear", "rightear", "tailbase"]
    labels = np.array([[[95, 406], [104, 399], [105, 419], [219, 427]],
                       [[50, 50], [60, 45], [60, 55], [150, 50]]], np.float32)
    poses = np.concatenate([labels + 0.5, np.ones((2, 4, 1), np.float32)], axis=-1)
    poses[0, 1, :2], poses[0, 2, :2] = labels[0, 2] + 1.0, labels[0, 1] - 1.0  # ears exchanged
    (swap,) = swapped_labels(poses, labels, ["a.png", "b.png"], parts)
    assert swap["image"] == "a.png" and swap["bodyparts"] == ["leftear", "rightear"]
    assert swap["swapped_error_px"] == pytest.approx(2 ** 0.5, abs=0.01)
    assert "leftear and rightear look swapped" in swap_advice(swap)
    # the same frame labeled right: nothing to say
    poses[0, 1, :2], poses[0, 2, :2] = labels[0, 1], labels[0, 2]
    assert swapped_labels(poses, labels, ["a.png", "b.png"], parts) == []

    # in the summary a weak part in a swapped frame is blamed on the swap
    train = SplitErrors(["t.png"], labels[1:], poses[1:])
    bad = poses[:1].copy()
    bad[0, 1, :2], bad[0, 2, :2] = labels[0, 2], labels[0, 1]
    r = summarize(train, SplitErrors(["a.png"], labels[:1], bad), parts, 0.5)
    assert r["swapped_labels"][0]["split"] == "test"
    assert {w["cause"] for w in r["weak_bodyparts"]} == {"swapped labels"}
