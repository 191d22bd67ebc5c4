"""Smaller/faster variants of an exported model: static int8 (QDQ) and fp16.

int8 uses ONNX Runtime's static quantization (QDQ format, per-channel int8 weights, uint8
activations), calibrated on real frames fed exactly as the live loop feeds them. The
in-graph preprocessing (uint8 input, cast, channel order, normalisation) stays float: it
is cheap, and quantizing the normalised image right before the first convolution is all
the network needs. fp16 is for GPU providers.
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from poseloop.errors import ModelError
from poseloop.export.onnx_export import write_metadata
from poseloop.modelspec import INPUT_NAME, ModelSpec

_FIRST_NETWORK_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


class FrameReader(CalibrationDataReader):
    """Feeds BGR uint8 frames (H x W x 3) to the calibrator one at a time."""

    def __init__(self, frames: Iterable[np.ndarray]):
        self._frames = iter(frames)

    def get_next(self) -> dict[str, np.ndarray] | None:
        frame = next(self._frames, None)
        return None if frame is None else {INPUT_NAME: np.ascontiguousarray(frame[None])}


def preprocessing_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes between the graph input and the first convolution.

    Followed from the input rather than taken by position: exporters put weight-sharing
    ``Identity`` nodes before everything else.
    """
    reached = {INPUT_NAME}
    names = []
    for node in model.graph.node:  # ONNX graphs are stored in topological order
        if node.op_type in _FIRST_NETWORK_OPS or not reached.intersection(node.input):
            continue
        names.append(node.name)
        reached.update(node.output)
    return names


def quantize_int8(fp32: str | Path, out: str | Path, frames: list[np.ndarray],
                  spec: ModelSpec) -> Path:
    """Write a static-int8 copy of ``fp32`` to ``out``, calibrated on ``frames``."""
    if not frames:
        raise ModelError("int8 quantization needs calibration frames")
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        quantize_static(
            model, str(out), FrameReader(frames),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=preprocessing_nodes(model),
            calibrate_method=CalibrationMethod.MinMax,
        )
    quantized = onnx.load(str(out))
    write_metadata(quantized, dataclasses.replace(spec, precision="int8"))
    onnx.save(quantized, str(out))
    return out


def convert_fp16(fp32: str | Path, out: str | Path, spec: ModelSpec) -> Path:
    """Write an fp16 copy of ``fp32`` (uint8 input and float32 outputs kept) to ``out``."""
    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise ModelError(
            "--fp16 needs onnxconverter-common: pip install 'poseloop[train]'"
        ) from e
    model = onnx.load(str(fp32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "float32 number ... truncated": tiny weights -> 0
        model = float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=preprocessing_nodes(model)
        )
    write_metadata(model, dataclasses.replace(spec, precision="fp16"))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return Path(out)
