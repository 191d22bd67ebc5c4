"""ImageNet backbones from torchvision, cut to a feature extractor at a chosen output stride.

Names: ``mobilenet_v2`` (width 1.0), ``mobilenet_v2_0.75``/``_0.5``/``_0.35``, ``resnet50``,
``efficientnet_b0``. Weights: ``imagenet`` (torchvision's download, which needs internet
once and is then cached), a local file, or ``none`` (random init, with a warning).
"""

from __future__ import annotations

import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from poseloop.config import BACKBONES
from poseloop.errors import WeightsError


@dataclass
class Backbone:
    """A feature extractor and what the head needs to know about it."""

    features: nn.Module
    channels: int
    stride: int


def _full_model(name: str, output_stride: int) -> tuple[nn.Module, nn.Module, int]:
    """(torchvision model, its feature part, feature channels) for a backbone name."""
    if name.startswith("mobilenet_v2"):
        width = float(name.rsplit("_", 1)[1]) if name != "mobilenet_v2" else 1.0
        model = torchvision.models.mobilenet_v2(width_mult=width)
        _dilate(model.features, output_stride)
        return model, model.features, model.last_channel
    if name == "resnet50":
        dilate = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
        model = torchvision.models.resnet50(replace_stride_with_dilation=dilate[output_stride])
        body = nn.Sequential(
            model.conv1, model.bn1, model.relu, model.maxpool,
            model.layer1, model.layer2, model.layer3, model.layer4,
        )
        return model, body, 2048
    if name == "efficientnet_b0":
        model = torchvision.models.efficientnet_b0()
        _dilate(model.features, output_stride)
        return model, model.features, 1280
    raise WeightsError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def _dilate(features: nn.Module, output_stride: int) -> None:
    """Turn stride-2 convolutions past ``output_stride`` into dilated ones (DeepLab style)."""
    stride, dilation = 1, 1
    for m in features.modules():
        if not isinstance(m, nn.Conv2d):
            continue
        k = m.kernel_size[0]
        if m.stride[0] == 2:
            if stride >= output_stride:
                m.stride = (1, 1)
                m.dilation = (dilation, dilation)
                m.padding = (dilation * (k - 1) // 2,) * 2
                dilation *= 2
                continue
            stride *= 2
        elif k > 1 and dilation > 1:
            m.dilation = (dilation, dilation)
            m.padding = (dilation * (k - 1) // 2,) * 2


_IMAGENET = {
    "mobilenet_v2": torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
    "efficientnet_b0": torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1,
}


def _imagenet_state(name: str) -> dict[str, torch.Tensor]:
    if name not in _IMAGENET:
        raise WeightsError(
            f"torchvision has no ImageNet weights for {name}; pass --weights PATH to a "
            f"{name} state dict, or --weights none for random init"
        )
    entry = _IMAGENET[name]
    try:
        return entry.get_state_dict(progress=True)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
        raise WeightsError(
            f"could not download ImageNet weights for {name} ({e}).\n"
            f"This machine seems to have no internet. Either download {entry.url} elsewhere "
            f"and copy it to {cache}, or pass --weights PATH to a local file "
            f"(or --weights none for random init)."
        ) from e


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path}: weights file does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or corrupt files
        raise WeightsError(f"{path}: not a readable torch weights file ({e})") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors")
    return state


def _match_keys(
    state: dict[str, torch.Tensor], model: nn.Module, features: nn.Module
) -> dict[str, torch.Tensor]:
    """Map a state dict's keys onto the torchvision model's.

    Tolerates common prefixes (``module.``, ``backbone.``). Files from older torchvision
    releases name the same tensors differently (``features.1.conv.0`` vs
    ``features.1.conv.0.0``); when names do not fit but the file holds exactly the feature
    part's tensors with the same shapes in the same order, they are matched by position.
    """
    own = model.state_dict()
    out = {}
    for key, value in state.items():
        for prefix in ("", "module.", "backbone.", "model."):
            k = key[len(prefix):] if prefix and key.startswith(prefix) else key
            if k in own:
                out[k] = value
                break
    names = {id(v): k for k, v in model.state_dict(keep_vars=True).items()}
    wanted = [(names[id(v)], v.shape) for k, v in features.state_dict(keep_vars=True).items()
              if not k.endswith("num_batches_tracked")]
    if all(k in out for k, _ in wanted):
        return out
    given = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(given) == len(wanted) and all(
        v.shape == s for (_, v), (_, s) in zip(given, wanted, strict=True)
    ):
        return {k: v for (k, _), (_, v) in zip(wanted, given, strict=True)}
    return out


def build_backbone(
    name: str, weights: str = "imagenet", output_stride: int | None = None
) -> Backbone:
    """A backbone's feature part at ``output_stride`` with the requested weights."""
    if name not in BACKBONES:
        raise WeightsError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if output_stride is None:
        output_stride = 32 if name == "efficientnet_b0" else 16
    model, features, channels = _full_model(name, output_stride)
    if weights == "none":
        warnings.warn(
            f"{name}: random initialisation (--weights none); expect far lower accuracy than "
            "ImageNet-pretrained weights on a few hundred labeled frames",
            stacklevel=2,
        )
    else:
        if weights == "imagenet":
            state, source = _imagenet_state(name), f"torchvision ImageNet weights for {name}"
        else:
            state, source = _load_file(Path(weights)), weights
        matched = _match_keys(state, model, features)
        full_keys = {id(v): k for k, v in model.state_dict(keep_vars=True).items()}
        feature_keys = [full_keys[id(v)] for k, v in features.state_dict(keep_vars=True).items()
                        if not k.endswith("num_batches_tracked")]
        missing = [k for k in feature_keys if k not in matched]
        if missing:
            raise WeightsError(
                f"{source}: does not fit backbone {name}: {len(missing)} of {len(feature_keys)} "
                f"feature tensors missing, e.g. {missing[:3]}"
            )
        bad = [k for k in matched if matched[k].shape != model.state_dict()[k].shape]
        if bad:
            raise WeightsError(
                f"{source}: shapes do not fit backbone {name} (e.g. {bad[0]}: "
                f"{tuple(matched[bad[0]].shape)} vs {tuple(model.state_dict()[bad[0]].shape)}); "
                "is it the right width/variant?"
            )
        model.load_state_dict(matched, strict=False)
    return Backbone(features=features, channels=channels, stride=output_stride)
