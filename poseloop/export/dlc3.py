"""Load a DeepLabCut 3 (PyTorch engine) exported model without DeepLabCut, DLC-Live or timm.

``deeplabcut.export_model`` writes ``torch.save({"config": cfg, "pose": state_dict}, path)``
where ``cfg`` is the ``pytorch_config.yaml`` content. DeepLabCut-Live rebuilds the network
from ``cfg["model"]`` with timm / DLC classes; here the supported architectures are
re-implemented in plain ``torch.nn`` with the *same module names*, so the file's state dict
loads with ``strict=True`` and the outputs match DLC-Live's to float rounding:

* ``ResNet`` backbone = timm ``resnet50`` (BatchNorm) or ``resnet50_gn`` (GroupNorm(32)),
  ``forward_features`` only, with timm's ``output_stride`` rule (stride replaced by dilation
  once the network stride reaches ``output_stride``).
* ``CSPNeXt`` backbone (arch P5) = DLC's ``backbones/cspnext.py`` + ``modules/csp.py``
  (mmdet RTMDet design; SyncBN is BatchNorm2d at inference).
* one ``HeatmapHead`` named ``bodypart``: ``ConvTranspose2d`` heatmap and locref branches.

The model returns raw maps; decode them with :class:`poseloop.heatmap.HeatmapSpec`
(``HeatmapSpec.for_stride(info.stride, locref_stdev=info.locref_stdev)``), which uses the same
``ix * s + s / 2 + locref * std`` convention as DLC's ``HeatmapPredictor``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, cast

import torch
from torch import nn

from poseloop.errors import ModelError

RESNET_MODELS = {"resnet50": "batchnorm", "resnet50_gn": "groupnorm"}
RESNET_LAYERS = {"resnet50": (3, 4, 6, 3), "resnet50_gn": (3, 4, 6, 3)}
RESNET_OUTPUT_STRIDES = (8, 16, 32)
# The CSPNeXt architecture comes from deepen/widen factors; the names only pick DLC's weights.
CSPNEXT_MODELS = ("cspnext_s", "cspnext_m", "cspnext_x")
SUPPORTED_BACKBONES = {"ResNet": tuple(RESNET_MODELS), "CSPNeXt": CSPNEXT_MODELS}

# Backbone config keys that only matter for training (or weight download): ignored here.
_TRAINING_ONLY_KEYS = {
    "type", "model_name", "pretrained", "freeze_bn_stats", "freeze_bn_weights",
    "drop_path_rate", "drop_block_rate",
}
_RESNET_KEYS = _TRAINING_ONLY_KEYS | {"output_stride"}
_CSPNEXT_KEYS = _TRAINING_ONLY_KEYS | {
    "arch", "expand_ratio", "deepen_factor", "widen_factor", "out_indices",
    "channel_attention", "norm_layer", "activation_fn",
}


@dataclass(frozen=True)
class Dlc3Info:
    """What a caller needs besides the network to reproduce DLC-Live's poses.

    stride: input pixels per heatmap cell (backbone stride / head upsampling).
    locref_stdev: pixels per locref unit (DLC ``locref_std``).
    apply_sigmoid / clip_scores: DLC ``HeatmapPredictor`` score post-processing.
    colormode / normalize_images: the expected input (RGB, ImageNet-normalised or not).
    """

    bodyparts: list[str]
    net_type: str
    backbone: str
    stride: float
    locref_stdev: float
    apply_sigmoid: bool
    clip_scores: bool
    colormode: str
    normalize_images: bool


# ---------------------------------------------------------------------------------------------
# timm ResNet (Bottleneck, default 7x7 stem) -- module names follow timm/models/resnet.py
# ---------------------------------------------------------------------------------------------


def _resnet_norm(kind: str, channels: int) -> nn.Module:
    """timm's ``batchnorm`` or ``groupnorm`` (timm GroupNorm: 32 groups, eps 1e-5)."""
    if kind == "groupnorm":
        return nn.GroupNorm(32, channels, eps=1e-5)
    return nn.BatchNorm2d(channels)


class _Bottleneck(nn.Module):
    """timm ``Bottleneck`` (expansion 4, stride and dilation on the 3x3 conv)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int, first_dilation: int,
        downsample: nn.Module | None, norm: str,
    ) -> None:
        super().__init__()
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _resnet_norm(norm, planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=first_dilation, dilation=first_dilation,
            bias=False,
        )
        self.bn2 = _resnet_norm(norm, planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, outplanes, 1, bias=False)
        self.bn3 = _resnet_norm(norm, outplanes)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


class _TimmResNet(nn.Module):
    """timm ``ResNet`` without the classifier; ``forward`` is timm's ``forward_features``."""

    # Registered with add_module (timm's names); declared so their type is known.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, layers: tuple[int, ...], output_stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _resnet_norm(norm, 64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        # timm make_blocks: once the net stride reaches output_stride, stride -> dilation.
        inplanes, net_stride, dilation, prev_dilation = 64, 4, 1, 1
        for i, (planes, n_blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if i == 0 else 2
            if net_stride >= output_stride:
                dilation *= stride
                stride = 1
            else:
                net_stride *= stride
            downsample = None
            if stride != 1 or inplanes != planes * _Bottleneck.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                    _resnet_norm(norm, planes * 4),
                )
            blocks = []
            for b in range(n_blocks):
                blocks.append(
                    _Bottleneck(
                        inplanes, planes, stride if b == 0 else 1, prev_dilation,
                        downsample if b == 0 else None, norm,
                    )
                )
                prev_dilation = dilation
                inplanes = planes * _Bottleneck.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class _ResNetBackbone(nn.Module):
    """DLC ``ResNet`` backbone: the timm model lives under ``.model`` (state-dict prefix)."""

    def __init__(self, model_name: str, output_stride: int) -> None:
        super().__init__()
        self.stride = output_stride
        self.model = _TimmResNet(RESNET_LAYERS[model_name], output_stride,
                                 RESNET_MODELS[model_name])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ---------------------------------------------------------------------------------------------
# CSPNeXt -- module names follow deeplabcut/pose_estimation_pytorch/models/modules/csp.py
# ---------------------------------------------------------------------------------------------


def _activation(name: str) -> nn.Module:
    return nn.SiLU() if name == "SiLU" else nn.ReLU()


class _ConvModule(nn.Module):
    """DLC ``CSPConvModule``: conv (no bias) -> BatchNorm -> activation."""

    def __init__(
        self, cin: int, cout: int, k: int, act: str, stride: int = 1, padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups,
                              bias=False)
        self.norm = nn.BatchNorm2d(cout)  # SyncBatchNorm == BatchNorm2d in eval
        self.activate = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.norm(self.conv(x)))


class _DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k ``_ConvModule`` followed by a pointwise 1x1 ``_ConvModule``."""

    def __init__(self, cin: int, cout: int, k: int, act: str) -> None:
        super().__init__()
        self.depthwise_conv = _ConvModule(cin, cin, k, act, padding=k // 2, groups=cin)
        self.pointwise_conv = _ConvModule(cin, cout, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class _CSPNeXtBlock(nn.Module):
    """3x3 conv then 5x5 depthwise-separable conv, with an identity shortcut if asked."""

    def __init__(self, channels: int, add_identity: bool, act: str) -> None:
        super().__init__()
        self.conv1 = _ConvModule(channels, channels, 3, act, padding=1)
        self.conv2 = _DepthwiseSeparableConv(channels, channels, 5, act)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class _ChannelAttention(nn.Module):
    """Global average pool -> 1x1 conv -> hard sigmoid, used as a channel gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.act(self.fc(self.global_avgpool(x)))


class _SPPBottleneck(nn.Module):
    """1x1 conv, concat with max-pools (5, 9, 13), 1x1 conv."""

    def __init__(self, cin: int, cout: int, act: str, kernels: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        mid = cin // 2
        self.conv1 = _ConvModule(cin, mid, 1, act)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernels)
        self.conv2 = _ConvModule(mid * (len(kernels) + 1), cout, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))


class _CSPLayer(nn.Module):
    """Cross-stage-partial layer: blocks on one half, concat with a shortcut half."""

    def __init__(
        self, cin: int, cout: int, expand_ratio: float, num_blocks: int, add_identity: bool,
        channel_attention: bool, act: str,
    ) -> None:
        super().__init__()
        mid = int(cout * expand_ratio)
        self.channel_attention = channel_attention
        self.main_conv = _ConvModule(cin, mid, 1, act)
        self.short_conv = _ConvModule(cin, mid, 1, act)
        self.final_conv = _ConvModule(2 * mid, cout, 1, act)
        self.blocks = nn.Sequential(
            *(_CSPNeXtBlock(mid, add_identity, act) for _ in range(num_blocks))
        )
        if channel_attention:
            self.attention = _ChannelAttention(2 * mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        if self.channel_attention:
            out = self.attention(out)
        return self.final_conv(out)


# (in_channels, out_channels, num_blocks, add_identity, use_spp) of DLC's CSPNeXt.ARCH["P5"]
_CSPNEXT_P5 = (
    (64, 128, 3, True, False),
    (128, 256, 6, True, False),
    (256, 512, 6, True, False),
    (512, 1024, 3, False, True),
)


class _CSPNeXt(nn.Module):
    """DLC ``CSPNeXt`` backbone (arch P5, last stage output only); stride 32."""

    # Registered with add_module (DLC's names); declared so their type is known.
    stage1: nn.Sequential
    stage2: nn.Sequential
    stage3: nn.Sequential
    stage4: nn.Sequential

    def __init__(
        self, deepen_factor: float, widen_factor: float, expand_ratio: float,
        channel_attention: bool, act: str,
    ) -> None:
        super().__init__()
        self.stride = 32
        stem = int(64 * widen_factor // 2)
        self.stem = nn.Sequential(
            _ConvModule(3, stem, 3, act, stride=2, padding=1),
            _ConvModule(stem, stem, 3, act, padding=1),
            _ConvModule(stem, int(64 * widen_factor), 3, act, padding=1),
        )
        for i, (cin, cout, n, add_identity, use_spp) in enumerate(_CSPNEXT_P5):
            cin, cout = int(cin * widen_factor), int(cout * widen_factor)
            stage: list[nn.Module] = [_ConvModule(cin, cout, 3, act, stride=2, padding=1)]
            if use_spp:
                stage.append(_SPPBottleneck(cout, cout, act))
            stage.append(
                _CSPLayer(cout, cout, expand_ratio, max(round(n * deepen_factor), 1),
                          add_identity, channel_attention, act)
            )
            self.add_module(f"stage{i + 1}", nn.Sequential(*stage))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.stage4(self.stage3(self.stage2(self.stage1(x))))


# ---------------------------------------------------------------------------------------------
# HeatmapHead and the whole model
# ---------------------------------------------------------------------------------------------


class _DeconvModule(nn.Module):
    """DLC ``DeconvModule``: ConvTranspose2d layers (padding 0) with ReLU between them."""

    def __init__(
        self, channels: list[int], kernel_size: list[int], strides: list[int],
        final_conv: dict | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout, k, s in zip(channels[:-1], channels[1:], kernel_size, strides,
                                   strict=True):
            layers += [nn.ConvTranspose2d(cin, cout, kernel_size=k, stride=s), nn.ReLU()]
        self.deconv_layers = nn.Sequential(*layers[:-1]) if layers else nn.Identity()
        self.stride = math.prod(strides)
        self.final_conv: nn.Module = nn.Identity()
        if final_conv:
            self.final_conv = nn.Conv2d(channels[-1], final_conv["out_channels"],
                                        final_conv["kernel_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.deconv_layers(x))


class _HeatmapHead(nn.Module):
    """DLC ``HeatmapHead``: a heatmap branch and an optional locref branch."""

    def __init__(self, heatmap_config: dict, locref_config: dict | None) -> None:
        super().__init__()
        self.heatmap_head = _DeconvModule(**heatmap_config)
        self.locref_head = _DeconvModule(**locref_config) if locref_config else None


class Dlc3PoseModel(nn.Module):
    """Backbone + the ``bodypart`` HeatmapHead of a single-animal DLC3 model.

    ``forward(x)``: x is float32 N x 3 x H x W, RGB scaled to [0, 1] and ImageNet-normalised
    (as DLC-Live does when ``info.normalize_images``). Returns ``(heatmaps N x K x h x w,
    locref N x 2K x h x w)``, both raw (no sigmoid); locref channels are (dx, dy) per joint.
    Without location refinement (no locref branch, or the predictor's
    ``location_refinement: false``) the locref maps are zeros, which decodes like DLC does.
    """

    def __init__(self, backbone: nn.Module, head: _HeatmapHead, use_locref: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({"bodypart": head})
        self.use_locref = use_locref and head.locref_head is not None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        # ModuleDict items are typed as plain Modules; this one is the head given to __init__.
        head = cast(_HeatmapHead, self.heads["bodypart"])
        heatmaps = head.heatmap_head(features)
        if not self.use_locref:
            n, k, h, w = heatmaps.shape
            return heatmaps, heatmaps.new_zeros((n, 2 * k, h, w))
        # use_locref is only set when the head has a locref branch.
        return heatmaps, cast(_DeconvModule, head.locref_head)(features)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _build_backbone(
    cfg: dict, fail: Callable[[str], NoReturn]
) -> tuple[_ResNetBackbone | _CSPNeXt, str]:
    """The backbone module and its model_name, or ModelError via ``fail``."""
    kind, name = cfg.get("type"), cfg.get("model_name")
    if kind not in SUPPORTED_BACKBONES:
        fail(f"backbone type {kind!r} is not supported (supported: "
             f"{', '.join(SUPPORTED_BACKBONES)})")
    if name not in SUPPORTED_BACKBONES[kind]:
        fail(f"{kind} model_name {name!r} is not supported (supported: "
             f"{', '.join(SUPPORTED_BACKBONES[kind])})")
    assert isinstance(name, str)  # it is one of the supported names
    allowed = _RESNET_KEYS if kind == "ResNet" else _CSPNEXT_KEYS
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        fail(f"{kind} backbone option(s) {unknown} are not supported")
    if kind == "ResNet":
        output_stride = cfg.get("output_stride", 32)
        if output_stride not in RESNET_OUTPUT_STRIDES:
            fail(f"ResNet output_stride {output_stride!r} is not supported "
                 f"(supported: {RESNET_OUTPUT_STRIDES})")
        return _ResNetBackbone(name, int(output_stride)), name
    # option: (DLC's default, supported values); SyncBN is plain BatchNorm at inference.
    choices = {
        "arch": ("P5", ("P5",)),
        "out_indices": (-1, (-1,)),
        "norm_layer": ("SyncBN", ("SyncBN", "BN")),
        "activation_fn": ("SiLU", ("SiLU", "ReLU")),
    }
    for key, (default, supported) in choices.items():
        if cfg.get(key, default) not in supported:
            fail(f"CSPNeXt {key} {cfg[key]!r} is not supported (supported: {supported})")
    backbone = _CSPNeXt(
        deepen_factor=float(cfg.get("deepen_factor", 0.67)),
        widen_factor=float(cfg.get("widen_factor", 0.75)),
        expand_ratio=float(cfg.get("expand_ratio", 0.5)),
        channel_attention=bool(cfg.get("channel_attention", True)),
        act=cfg.get("activation_fn", "SiLU"),
    )
    return backbone, name


def _out_channels(deconv_cfg: dict) -> int:
    """Number of maps a ``DeconvModule`` config produces."""
    final = deconv_cfg.get("final_conv")
    return int(final["out_channels"]) if final else int(deconv_cfg["channels"][-1])


def _check_state_dict(model: nn.Module, state: dict, fail: Callable[[str], NoReturn]) -> None:
    """Raise (via ``fail``) naming a few missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = []
    for k, ref in own.items():
        value = state.get(k)
        if value is not None and not isinstance(value, torch.Tensor):
            wrong.append(f"{k} is a {type(value).__name__}")
        elif value is not None and value.shape != ref.shape:
            wrong.append(f"{k} {tuple(value.shape)} != {tuple(ref.shape)}")
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            problems.append(f"{len(items)} {label} key(s): {', '.join(items[:5])}{more}")
    if problems:
        fail("state dict does not fit the architecture in its config; " + "; ".join(problems))


def _failer(source: str) -> Callable[[str], NoReturn]:
    """A function raising ModelError with ``source`` (the file) named in the message."""

    def fail(msg: str) -> NoReturn:
        raise ModelError(f"DeepLabCut 3 model {source}: {msg}")

    return fail


def build_dlc3(config: dict, source: str = "<config>") -> tuple[Dlc3PoseModel, Dlc3Info]:
    """Validate a DLC3 ``pytorch_config`` dict and build its network (untrained, eval mode).

    ``source`` names the model in error messages. :func:`load_dlc3` uses this and then loads
    the weights; on its own it is useful for tests and for checking a config.
    """
    fail = _failer(source)
    cfg = config
    method = cfg.get("method", "bu")
    if str(method).lower() != "bu" or cfg.get("detector"):
        fail(f"method {method!r} (top-down with a detector) is not supported; only "
             "single-animal bottom-up ('bu') models are")
    meta = cfg.get("metadata") or {}
    individuals = meta.get("individuals") or ["animal"]
    if len(individuals) > 1 or meta.get("unique_bodyparts"):
        fail(f"multi-animal models are not supported ({len(individuals)} individuals, "
             f"unique_bodyparts={meta.get('unique_bodyparts')!r})")
    bodyparts = [str(b) for b in meta.get("bodyparts") or []]

    model_cfg = cfg.get("model")
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("backbone"), dict):
        fail("config has no model.backbone section")
    if model_cfg.get("neck"):
        fail(f"necks are not supported (found {model_cfg['neck'].get('type')!r})")
    heads = model_cfg.get("heads") or {}
    head_cfg = heads.get("bodypart") or {}
    if list(heads) != ["bodypart"] or head_cfg.get("type") != "HeatmapHead":
        found = {name: (h or {}).get("type") for name, h in heads.items()}
        fail(f"heads {found} are not supported; only a single 'bodypart' HeatmapHead is")
    predictor = head_cfg.get("predictor") or {}
    if predictor.get("type") != "HeatmapPredictor":
        fail(f"predictor {predictor.get('type')!r} is not supported (only HeatmapPredictor)")
    data = cfg.get("data") or {}
    auto_padding = (data.get("inference") or {}).get("auto_padding")
    if auto_padding:
        fail(f"data.inference.auto_padding {auto_padding!r} is not supported")

    backbone, backbone_name = _build_backbone(model_cfg["backbone"], fail)
    try:
        head = _HeatmapHead(head_cfg["heatmap_config"], head_cfg.get("locref_config"))
        n_maps = _out_channels(head_cfg["heatmap_config"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        fail(f"invalid HeatmapHead heatmap_config/locref_config ({exc!r})")
    if head.locref_head is not None and head.locref_head.stride != head.heatmap_head.stride:
        fail("heatmap and locref branches have different strides")
    if bodyparts and n_maps != len(bodyparts):
        fail(f"the head predicts {n_maps} heatmaps for {len(bodyparts)} bodyparts")
    model = Dlc3PoseModel(backbone, head, bool(predictor.get("location_refinement", True)))
    model.eval()
    # Defaults are those of DLC's HeatmapPredictor and DLC-Live's runner.
    info = Dlc3Info(
        bodyparts=bodyparts,
        net_type=str(cfg.get("net_type", "")),
        backbone=backbone_name,
        stride=float(backbone.stride) / float(head.heatmap_head.stride),
        locref_stdev=float(predictor.get("locref_std", 7.2801)),
        apply_sigmoid=bool(predictor.get("apply_sigmoid", True)),
        clip_scores=bool(predictor.get("clip_scores", False)),
        colormode=str(data.get("colormode", "RGB")),
        normalize_images=bool((data.get("inference") or {}).get("normalize_images", False)),
    )
    return model, info


def load_dlc3(path: str | Path) -> tuple[Dlc3PoseModel, Dlc3Info]:
    """Load a DLC3 exported ``.pt`` file into a :class:`Dlc3PoseModel` (eval mode, CPU).

    Reads with ``torch.load(map_location="cpu", weights_only=True)`` (no code execution),
    validates that it is a single-animal bottom-up backbone + HeatmapHead model of a
    supported architecture, builds it and loads the weights with ``strict=True``.
    Raises ModelError naming the file and the unsupported part otherwise.
    """
    path = Path(path)
    fail = _failer(str(path))
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure means "not a readable torch file"
        first_line = (str(exc).splitlines() or [""])[0]
        raise ModelError(
            f"DeepLabCut 3 model {path}: cannot be read as a torch file "
            f"({type(exc).__name__}: {first_line})"
        ) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict) \
            or not isinstance(raw.get("pose"), dict):
        fail("not a DeepLabCut export: expected a dict with 'config' (dict) and 'pose' "
             "(state dict) entries")
    if raw.get("detector") is not None:
        fail("it holds a detector (top-down model); only single-animal bottom-up models "
             "are supported")
    model, info = build_dlc3(raw["config"], source=str(path))
    _check_state_dict(model, raw["pose"], fail)
    model.load_state_dict(raw["pose"], strict=True)
    model.eval()
    return model, info
