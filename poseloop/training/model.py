"""The DeepLabCut network: ImageNet backbone + transposed-convolution head to stride 8.

``PoseNet`` takes RGB float images in 0..255 (N x 3 x H x W), normalises them inside the
network (so export can feed raw camera pixels) and returns scoremap *logits* (N x K x h x w)
and locref (N x 2K x h x w, interleaved dx, dy per bodypart, in locref_stdev units); a
multi-animal network adds part affinity fields (N x 2E x h x w) and, with an identity head,
identity logits (N x individuals x h x w), in that order.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from poseloop.heatmap import HeatmapSpec
from poseloop.training.backbones import build_backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_STRIDE = 8
#: Input channels of the multi-animal heads (PAF, identity) at most: wider features first
#: go through a 1x1 convolution to this many.
EXTRA_BOTTLENECK = 128


class DeconvHead(nn.Module):
    """Upsample backbone features to stride 8 and predict scoremaps and locref.

    One transposed convolution per factor of two, as in DeepLabCut; with more than one,
    the first ones are shared (256 channels, BN, ReLU) and the last is per output.
    """

    def __init__(self, in_channels: int, num_parts: int, upsamplings: int, mid: int = 256,
                 extra: tuple[int, ...] = ()):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for _ in range(max(upsamplings - 1, 0)):
            layers += [
                nn.ConvTranspose2d(ch, mid, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True),
            ]
            ch = mid
        self.shared = nn.Sequential(*layers)

        def out(channels: int, source: int = ch) -> nn.Conv2d | nn.ConvTranspose2d:
            if upsamplings == 0:
                return nn.Conv2d(source, channels, 3, padding=1)
            return nn.ConvTranspose2d(source, channels, 4, stride=2, padding=1)

        self.scoremap = out(num_parts)
        self.locref = out(2 * num_parts)
        # Multi-animal outputs (PAFs, identity) read the features through a 1x1 bottleneck
        # when they are wide (MobileNetV2's 1280, ResNet-50's 2048 channels): a transposed
        # convolution's cost grows with its input channels, and a 46-channel PAF head
        # straight from 1280 channels costs a third of MobileNetV2's whole backbone.
        narrow = ch if ch <= EXTRA_BOTTLENECK else EXTRA_BOTTLENECK
        self.bottleneck = nn.Sequential(
            nn.Conv2d(ch, narrow, 1, bias=False), nn.BatchNorm2d(narrow), nn.ReLU(inplace=True)
        ) if extra and narrow < ch else nn.Identity()
        extras = [out(c, narrow) for c in extra]
        #: Multi-animal outputs after scoremap and locref (PAFs, identity), in order.
        self.extra = nn.ModuleList(extras)
        for conv in (self.scoremap, self.locref, *extras):
            nn.init.normal_(conv.weight, std=0.001)
        for conv in extras:
            assert conv.bias is not None  # built with bias=True
            nn.init.zeros_(conv.bias)
        score_bias, locref_bias = self.scoremap.bias, self.locref.bias
        assert score_bias is not None and locref_bias is not None  # built with bias=True
        # Start scoremaps at a ~1% prior so early training is not swamped by negatives.
        nn.init.constant_(score_bias, -math.log(99.0))
        nn.init.zeros_(locref_bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.shared(x)
        if not self.extra:
            return self.scoremap(x), self.locref(x)
        narrow = self.bottleneck(x)
        return (self.scoremap(x), self.locref(x), *(conv(narrow) for conv in self.extra))


class PoseNet(nn.Module):
    """Backbone + DeepLabCut head; input RGB 0..255 floats, output (logits, locref, ...).

    paf_edges: part affinity fields to predict (2 channels each; multi-animal models).
    identities: individuals of an identity head (0 = none).
    """

    # Buffers registered in __init__; declared so their type is known.
    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(
        self,
        backbone: str,
        num_parts: int,
        weights: str = "imagenet",
        output_stride: int | None = None,
        paf_edges: int = 0,
        identities: int = 0,
    ):
        super().__init__()
        bb = build_backbone(backbone, weights, output_stride)
        self.backbone_name = backbone
        self.output_stride = bb.stride
        self.backbone = bb.features
        up = int(round(math.log2(bb.stride / HEAD_STRIDE)))
        extra = ((2 * paf_edges,) if paf_edges else ()) + ((identities,) if identities else ())
        self.head = DeconvHead(bb.channels, num_parts, up, extra=extra)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (image - self.mean) * self.inv_std
        return self.head(self.backbone(x))


def heatmap_spec(locref_stdev: float, pos_dist_thresh: float) -> HeatmapSpec:
    """The geometry of every PoseNet's outputs (stride 8, DeepLabCut's half-stride offset)."""
    return HeatmapSpec.for_stride(
        HEAD_STRIDE, locref_stdev=locref_stdev, pos_dist_thresh=pos_dist_thresh
    )
