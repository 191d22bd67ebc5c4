"""Backbones, loss, a short training run that lowers the loss, and resume."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from poseloop.config import AugmentConfig, TrainConfig  # noqa: E402
from poseloop.errors import ConfigError, ModelError, WeightsError  # noqa: E402
from poseloop.heatmap import HeatmapSpec  # noqa: E402
from poseloop.project import read_project  # noqa: E402
from poseloop.training.backbones import build_backbone  # noqa: E402
from poseloop.training.loss import pose_loss  # noqa: E402
from poseloop.training.model import PoseNet  # noqa: E402
from poseloop.training.run import load_model, read_run  # noqa: E402
from poseloop.training.train import learning_rate, train  # noqa: E402


@pytest.mark.parametrize(
    ("name", "stride"),
    [("mobilenet_v2_0.35", 16), ("mobilenet_v2_0.35", 32), ("resnet50", 16), ("resnet50", 8),
     ("efficientnet_b0", 32)],
)
def test_networks_output_stride_8(name: str, stride: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = PoseNet(name, 3, weights="none", output_stride=stride).eval()
    with torch.inference_mode():
        logits, locref = net(torch.zeros(1, 3, 96, 128))
    assert logits.shape == (1, 3, 12, 16)
    assert locref.shape == (1, 6, 12, 16)


def test_random_init_warns() -> None:
    with pytest.warns(UserWarning, match="random initialisation"):
        build_backbone("mobilenet_v2_0.35", "none")


def test_local_imagenet_weights_load(mobilenet_weights: Path) -> None:
    bb = build_backbone("mobilenet_v2", str(mobilenet_weights))
    sd = torch.load(mobilenet_weights, map_location="cpu", weights_only=True)
    first = bb.features[0][0].weight
    assert torch.equal(first, sd["features.0.0.weight"])
    assert torch.equal(bb.features[18][1].running_var, sd["features.18.1.running_var"])


def test_weights_errors(tmp_path: Path, mobilenet_weights: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        build_backbone("mobilenet_v2", str(tmp_path / "nope.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_text("not torch")
    with pytest.raises(WeightsError, match="not a readable torch weights file"):
        build_backbone("mobilenet_v2", str(junk))
    with pytest.raises(WeightsError, match="does not fit backbone resnet50"):
        build_backbone("resnet50", str(mobilenet_weights))
    with pytest.raises(WeightsError, match="no ImageNet weights for mobilenet_v2_0.35"):
        build_backbone("mobilenet_v2_0.35", "imagenet")


def test_loss_masks_unlabeled_parts() -> None:
    spec = HeatmapSpec()
    kp = np.array([[40.0, 40.0], [np.nan, np.nan]], np.float32)
    s, lr, w = spec.targets(kp, (16, 16))
    s, lr, w = (torch.from_numpy(a)[None] for a in (s, lr, w))
    logits = torch.where(s > 0, 10.0, -10.0)
    logits[:, 1] = 10.0  # all wrong for the unlabeled part: must not count
    total, score_loss, locref_loss = pose_loss(logits, lr.clone(), s, lr, w)
    assert score_loss.item() < 1e-3 and locref_loss.item() == 0.0
    worse, _, lr_loss = pose_loss(logits, lr + 1.0, s, lr, w)
    assert lr_loss.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="does not match targets"):
        pose_loss(logits[:, :1], lr, s, lr, w)


def test_learning_rate_schedule_uses_time_budget() -> None:
    cfg = TrainConfig(iterations=1000, warmup_iterations=10, max_minutes=1.0, lr=1e-3)
    assert learning_rate(cfg, 0, 0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 10, 0) == pytest.approx(1e-3, rel=1e-3)
    assert learning_rate(cfg, 10, 30) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert learning_rate(cfg, 10, 60) == pytest.approx(1e-5)


def _tiny(iterations: int) -> TrainConfig:
    return TrainConfig(
        backbone="mobilenet_v2_0.35", weights="none", iterations=iterations, batch_size=4,
        lr=3e-3, warmup_iterations=2, checkpoint_every=15,
        augment=AugmentConfig(  # geometry only: a steady task whose loss must fall
            crop_size=(128, 128), global_scale=1.0, scale_range=0, rotation=0,
            brightness=0, contrast=0, blur_prob=0, noise_std=0,
        ),
    )


def test_short_training_lowers_loss_and_resumes(synthetic_project: Path, tmp_path: Path) -> None:
    project = read_project(synthetic_project)
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(project, _tiny(40), out, progress=False)
    hist = pd.read_csv(out / "loss.csv")
    assert len(hist) == 40
    assert hist["loss"].iloc[-5:].mean() < 0.75 * hist["loss"].iloc[:5].mean()
    for name in ("train_config.yaml", "project.json", "split.json", "model.pt", "loss.png"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == [
        "ckpt-0000015.pt", "ckpt-0000030.pt", "ckpt-0000040.pt"
    ]
    info = read_run(out)
    assert info.bodyparts == project.bodyparts
    assert len(info.split.train) + len(info.split.test) == len(project.frames)

    with pytest.raises(ConfigError, match="already holds a training run"):
        train(project, _tiny(40), out, progress=False)

    # resume continues from the newest checkpoint up to a raised iteration count
    cfg_path = out / "train_config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("iterations: 40", "iterations: 45"))
    (out / "model.pt").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(project, _tiny(45), out, resume=True, progress=False)
    hist = pd.read_csv(out / "loss.csv")
    assert hist["iteration"].tolist() == list(range(1, 46))
    model, _ = load_model(out)
    assert not model.training


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a poseloop training run"):
        load_model(tmp_path)


def test_imagenet_without_internet_says_what_to_do(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    try:
        build_backbone("mobilenet_v2", "imagenet")
    except WeightsError as e:
        text = str(e)
        assert "mobilenet_v2-b0353104.pth" in text and str(tmp_path) in text
        assert "--weights PATH" in text
    else:
        pytest.skip("this machine has internet: the download worked")
