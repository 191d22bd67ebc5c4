"""DeepLabCut 3 exported models load without DeepLabCut / DLC-Live / timm and match DLC-Live."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from poseloop.errors import ModelError  # noqa: E402
from poseloop.export.dlc3 import build_dlc3, load_dlc3  # noqa: E402
from poseloop.heatmap import HeatmapSpec  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = SHARED / "models"
VIDEO = SHARED / "datasets" / "openfield-Pranav" / "videos" / "m3v1mp4.mp4"
BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _config(backbone: dict, channels: int) -> dict:
    """A minimal single-animal bottom-up DLC3 config (the parts the loader reads)."""
    predictor = {
        "type": "HeatmapPredictor", "apply_sigmoid": False, "clip_scores": True,
        "location_refinement": True, "locref_std": 7.2801,
    }
    head = {
        "type": "HeatmapHead",
        "weight_init": "normal",
        "predictor": predictor,
        "heatmap_config": {"channels": [channels, 4], "kernel_size": [3], "strides": [2]},
        "locref_config": {"channels": [channels, 8], "kernel_size": [3], "strides": [2]},
    }
    return {
        "method": "bu",
        "net_type": "resnet_50",
        "data": {"colormode": "RGB", "inference": {"normalize_images": True}},
        "metadata": {"bodyparts": BODYPARTS, "unique_bodyparts": [], "individuals": ["animal"]},
        "model": {
            "backbone": backbone,
            "backbone_output_channels": channels,
            "heads": {"bodypart": head},
        },
    }


RESNET50_GN = {"type": "ResNet", "model_name": "resnet50_gn", "output_stride": 16,
               "freeze_bn_stats": False, "freeze_bn_weights": False, "pretrained": False}
CSPNEXT_S = {"type": "CSPNeXt", "model_name": "cspnext_s", "deepen_factor": 0.33,
             "widen_factor": 0.5, "freeze_bn_stats": False, "freeze_bn_weights": False,
             "pretrained": False}


def _video_batch(n: int) -> torch.Tensor:
    """DLC-Live's preprocessing of the first ``n`` frames: BGR->RGB, /255, ImageNet norm."""
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(str(VIDEO))
    frames = []
    for _ in range(n):
        ok, frame = cap.read()
        assert ok
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "stride", "map_hw"),
    [("resnet50", 8.0, (61, 81)), ("cspnext_s", 16.0, (31, 41))],
)
def test_shared_model_matches_dlclive_reference(name: str, stride: float, map_hw: tuple) -> None:
    path = MODELS / f"dlc3_{name}_openfield_random.pt"
    ref_path = path.with_name(path.name.replace(".pt", ".reference.npy"))
    if not (path.exists() and ref_path.exists() and VIDEO.exists()):
        pytest.skip("shared DLC3 test models or video not available")
    model, info = load_dlc3(path)
    assert info.bodyparts == BODYPARTS
    assert info.backbone == name and info.stride == stride
    assert (info.apply_sigmoid, info.clip_scores, info.colormode, info.normalize_images) == (
        False, True, "RGB", True)
    assert info.locref_stdev == pytest.approx(7.2801)

    with torch.inference_mode():
        heatmaps, locref = model(_video_batch(10))
    assert heatmaps.shape == (10, 4, *map_hw) and locref.shape == (10, 8, *map_hw)

    spec = HeatmapSpec.for_stride(info.stride, locref_stdev=info.locref_stdev)
    poses = []
    for hm, lr in zip(heatmaps.numpy(), locref.numpy(), strict=True):
        xy, peak = spec.decode(hm, lr)
        score = np.clip(peak, 0.0, 1.0) if info.clip_scores and not info.apply_sigmoid else peak
        poses.append(np.concatenate([xy, score[:, None]], axis=1))
    poses = np.stack(poses)
    reference = np.load(ref_path)
    assert poses.shape == reference.shape == (10, 4, 3)
    np.testing.assert_allclose(poses[..., :2], reference[..., :2], rtol=0, atol=0.1)
    np.testing.assert_allclose(poses[..., 2], reference[..., 2], rtol=0, atol=1e-3)


def test_resnet50_gn_builds_round_trips_and_runs(tmp_path: Path) -> None:
    cfg = _config(RESNET50_GN, 2048)
    model, info = build_dlc3(copy.deepcopy(cfg))
    assert info.backbone == "resnet50_gn" and info.stride == 8.0
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 53 and all(m.num_groups == 32 for m in norms)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())

    # The keys are timm's resnet50 keys less the BatchNorm buffers.
    state = model.state_dict()
    bn_file = MODELS / "dlc3_resnet50_openfield_random.pt"
    if bn_file.exists():
        bn_state = torch.load(bn_file, map_location="cpu", weights_only=True)["pose"]
        buffers = ("running_mean", "running_var", "num_batches_tracked")
        expected = {k: v.shape for k, v in bn_state.items() if not k.endswith(buffers)}
        assert {k: v.shape for k, v in state.items()} == expected

    # Perturb the weights so GroupNorm's affine parameters are not the trivial init.
    gen = torch.Generator().manual_seed(0)
    state = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in state.items()}
    path = tmp_path / "gn.pt"
    torch.save({"config": cfg, "pose": state}, path)
    loaded, loaded_info = load_dlc3(path)
    assert loaded_info == info
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k

    x = torch.randn(2, 3, 64, 96, generator=gen)
    with torch.inference_mode():
        heatmaps, locref = loaded(x)
    # os16 backbone: 4 x 6 features; ConvTranspose2d(k=3, s=2, p=0) gives 2h+1 x 2w+1.
    assert heatmaps.shape == (2, 4, 9, 13) and locref.shape == (2, 8, 9, 13)
    assert torch.isfinite(heatmaps).all() and torch.isfinite(locref).all()


def test_cspnext_config_round_trips(tmp_path: Path) -> None:
    model, info = build_dlc3(_config(CSPNEXT_S, 512))
    assert info.stride == 16.0
    path = tmp_path / "csp.pt"
    torch.save({"config": _config(CSPNEXT_S, 512), "pose": model.state_dict()}, path)
    loaded, _ = load_dlc3(path)
    with torch.inference_mode():
        heatmaps, locref = loaded(torch.zeros(1, 3, 64, 64))
    assert heatmaps.shape == (1, 4, 5, 5) and locref.shape == (1, 8, 5, 5)


def _save(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "model.pt"
    torch.save(obj, path)
    return path


def test_non_torch_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_text("not a torch file\n")
    with pytest.raises(ModelError, match="cannot be read as a torch file") as err:
        load_dlc3(path)
    assert str(path) in str(err.value)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot be read"):
        load_dlc3(tmp_path / "absent.pt")


def test_dict_without_pose_raises(tmp_path: Path) -> None:
    path = _save(tmp_path, {"config": _config(CSPNEXT_S, 512)})
    with pytest.raises(ModelError, match="'pose'") as err:
        load_dlc3(path)
    assert str(path) in str(err.value)


def test_top_down_method_raises(tmp_path: Path) -> None:
    cfg = _config(CSPNEXT_S, 512)
    cfg["method"] = "td"
    with pytest.raises(ModelError, match="method 'td'"):
        load_dlc3(_save(tmp_path, {"config": cfg, "pose": {}}))


def test_multi_animal_raises(tmp_path: Path) -> None:
    cfg = _config(CSPNEXT_S, 512)
    cfg["metadata"]["individuals"] = ["mouse1", "mouse2"]
    with pytest.raises(ModelError, match="multi-animal"):
        load_dlc3(_save(tmp_path, {"config": cfg, "pose": {}}))


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ({**RESNET50_GN, "model_name": "efficientnet_b0"},
         "model_name 'efficientnet_b0' is not supported.*resnet50, resnet50_gn"),
        ({"type": "HRNet", "model_name": "hrnet_w32"}, "backbone type 'HRNet'.*ResNet, CSPNeXt"),
        ({**RESNET50_GN, "output_stride": 4}, "output_stride 4"),
        ({**CSPNEXT_S, "arch": "P6"}, "arch 'P6'"),
    ],
)
def test_unsupported_backbone_raises(tmp_path: Path, backbone: dict, message: str) -> None:
    path = _save(tmp_path, {"config": _config(backbone, 512), "pose": {}})
    with pytest.raises(ModelError, match=message) as err:
        load_dlc3(path)
    assert str(path) in str(err.value)


def test_unsupported_head_raises(tmp_path: Path) -> None:
    cfg = _config(CSPNEXT_S, 512)
    cfg["model"]["heads"]["unique_bodypart"] = copy.deepcopy(cfg["model"]["heads"]["bodypart"])
    with pytest.raises(ModelError, match="single 'bodypart' HeatmapHead"):
        load_dlc3(_save(tmp_path, {"config": cfg, "pose": {}}))
    cfg = _config(CSPNEXT_S, 512)
    cfg["model"]["heads"]["bodypart"]["type"] = "DEKRHead"
    with pytest.raises(ModelError, match="DEKRHead"):
        load_dlc3(_save(tmp_path, {"config": cfg, "pose": {}}))


def test_state_dict_mismatch_names_keys(tmp_path: Path) -> None:
    cfg = _config(CSPNEXT_S, 512)
    model, _ = build_dlc3(cfg)
    state = model.state_dict()
    del state["backbone.stem.0.conv.weight"]
    state["backbone.extra.weight"] = torch.zeros(1)
    with pytest.raises(ModelError) as err:
        load_dlc3(_save(tmp_path, {"config": cfg, "pose": state}))
    message = str(err.value)
    assert "missing key(s): backbone.stem.0.conv.weight" in message
    assert "unexpected key(s): backbone.extra.weight" in message
