"""torch -> ONNX with poseloop's graph contract: uint8 camera frames in, raw maps out.

The network is wrapped in :class:`FrameInput` so the graph takes the frame exactly as the
camera gives it (uint8 N x H x W x 3, BGR) and does the cast, NHWC -> NCHW transpose,
channel reorder and normalisation itself; the live loop copies nothing. The model's
:class:`~poseloop.modelspec.ModelSpec` is written into the file's ``metadata_props``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from poseloop import __version__
from poseloop.errors import ModelError
from poseloop.export.dlc3 import Dlc3Info
from poseloop.modelspec import INPUT_NAME, ModelSpec, output_names
from poseloop.training.run import RunInfo

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXPORTERS = ("torchscript", "dynamo")
# The example frame traced at export; H and W stay dynamic (checked by the tests).
_EXAMPLE_HW = (256, 320)


class FrameInput(nn.Module):
    """Camera frames (uint8 N x H x W x 3) -> float N x 3 x H x W -> ``net``.

    swap_channels: reverse the channel order (BGR frames into an RGB network).
    shift, scale: per-channel ``(x - shift) * scale`` on 0..255 values (None = identity).
    """

    # Buffers registered in __init__ when normalising; declared so their type is known.
    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, net: nn.Module, swap_channels: bool,
                 shift: Sequence[float] | None = None, scale: Sequence[float] | None = None):
        super().__init__()
        self.net = net
        self.swap_channels = swap_channels
        self.normalise = shift is not None
        if self.normalise:
            self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1))
            self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = image.permute(0, 3, 1, 2)
        if self.swap_channels:
            x = x[:, [2, 1, 0]]  # not flip(): torch.export rejects it with a dynamic batch
        x = x.to(torch.float32)
        if self.normalise:
            x = (x - self.shift) * self.scale
        return self.net(x)


def wrap_posenet(net: nn.Module, spec: ModelSpec) -> FrameInput:
    """A poseloop PoseNet (RGB 0..255 in, normalises itself) behind the frame input."""
    return FrameInput(net.eval(), swap_channels=spec.input_order != "RGB")


def wrap_dlc3(net: nn.Module, info: Dlc3Info, spec: ModelSpec) -> FrameInput:
    """A DLC3 model (x / 255, ImageNet-normalised if ``normalize_images``) behind the frames."""
    if info.normalize_images:
        shift = [255.0 * m for m in IMAGENET_MEAN]
        scale = [1.0 / (255.0 * s) for s in IMAGENET_STD]
    else:
        shift, scale = [0.0] * 3, [1.0 / 255.0] * 3
    swap = spec.input_order != info.colormode.upper()
    return FrameInput(net.eval(), swap_channels=swap, shift=shift, scale=scale)


def run_spec(info: RunInfo) -> ModelSpec:
    """The ModelSpec of a poseloop training run's network (graph outputs logits)."""
    geometry = info.spec
    return ModelSpec(
        bodyparts=list(info.bodyparts), skeleton=list(info.skeleton),
        stride=geometry.stride, offset=geometry.offset, locref_stdev=geometry.locref_stdev,
        likelihood="sigmoid", input_order="BGR",
        input_scale=info.config.augment.scale,
        image_size=info.config.augment.crop, pcutoff=info.pcutoff,
        backbone=info.config.backbone, source="poseloop", poseloop_version=__version__,
        individuals=list(info.individuals), unique_bodyparts=list(info.unique_bodyparts),
        paf_edges=list(info.paf_edges), identity=info.identity,
    )


def dlc3_spec(info: Dlc3Info, pcutoff: float = 0.6) -> ModelSpec:
    """The ModelSpec of an imported DLC3 model (raw heatmaps; DLC's score post-processing).

    DLC's HeatmapPredictor takes sigmoid(heatmap) when ``apply_sigmoid`` (the argmax is the
    same, so the graph keeps the raw map and the decoder applies the sigmoid to the peak),
    else clips the peak to [0, 1] when ``clip_scores``.
    """
    if info.apply_sigmoid:
        likelihood = "sigmoid"
    else:
        likelihood = "clip" if info.clip_scores else "raw"
    return ModelSpec(
        bodyparts=list(info.bodyparts), skeleton=[], stride=info.stride,
        offset=info.stride / 2.0, locref_stdev=info.locref_stdev, likelihood=likelihood,
        input_order="BGR", input_scale=1.0, image_size=None, pcutoff=pcutoff,
        backbone=info.backbone, source="dlc3", poseloop_version=__version__,
    )


def _torch_export(model: FrameInput, path: Path, opset: int | None, exporter: str,
                  names: tuple[str, ...]) -> None:
    example = (torch.zeros(1, *_EXAMPLE_HW, 3, dtype=torch.uint8),)
    common = {"input_names": [INPUT_NAME], "output_names": list(names),
              "opset_version": opset, "external_data": False}
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")  # deprecation / tracer chatter, not actionable here
        if exporter == "dynamo":
            dims = {0: torch.export.Dim("batch", min=1, max=1024),
                    1: torch.export.Dim("height", min=32, max=16384),
                    2: torch.export.Dim("width", min=32, max=16384)}
            torch.onnx.export(model, example, str(path), dynamo=True, verbose=False,
                              dynamic_shapes={"image": dims}, **common)
        else:
            axes = {INPUT_NAME: {0: "batch", 1: "height", 2: "width"}}
            axes.update({name: {0: "batch", 2: "map_height", 3: "map_width"}
                         for name in names})
            torch.onnx.export(model, example, str(path), dynamo=False, dynamic_axes=axes,
                              **common)


def write_metadata(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Replace the model's ``metadata_props`` with the spec's entries."""
    onnx.helper.set_model_props(model, spec.to_metadata())
    model.producer_name = "poseloop"
    model.producer_version = __version__


def export_onnx(model: FrameInput, spec: ModelSpec, out: str | Path, opset: int | None = None,
                exporter: str = "torchscript") -> Path:
    """Export the wrapped network to ``out`` with ``spec`` as metadata; onnx.checker-checked.

    exporter: ``torchscript`` (torch's legacy tracer) or ``dynamo`` (torch.export, torch's
    own default). With torch 2.14 both give the same graph speed and outputs with dynamic
    N, H and W, but dynamo spends 10-40 s per export on decompositions and shape guards
    (the tracer < 3 s), so the tracer is the default here while torch keeps it.
    The file appears only when export and check succeeded.
    """
    if exporter not in EXPORTERS:
        raise ModelError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        _torch_export(model.eval(), tmp, opset, exporter, output_names(spec))
        proto = onnx.load(str(tmp))
        write_metadata(proto, spec)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        tmp.replace(out)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"{out}: exported graph fails onnx.checker: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return out
