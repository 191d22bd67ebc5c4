"""Prove that an exported ONNX file computes what the PyTorch network does, on real frames.

The reference is the PyTorch path *without* the graph's preprocessing (poseloop's own
``evaluate.predict`` path, or DeepLabCut-Live's per-frame path for DLC3 models), so the
in-graph cast, channel order and normalisation are checked too. Both outputs are decoded
the same way (``ModelSpec.decode``) and compared pose by pose; a multi-animal model's other
outputs (part affinity fields, identity) are compared value by value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from poseloop.errors import ModelError
from poseloop.export.dlc3 import Dlc3Info
from poseloop.export.onnx_export import IMAGENET_MEAN, IMAGENET_STD
from poseloop.modelspec import INPUT_NAME, ModelSpec, output_names

#: BGR uint8 frame H x W x 3 -> (scoremap K x h x w, locref 2K x h x w[, paf[, identity]])
#: as numpy arrays.
Reference = Callable[[np.ndarray], Sequence[np.ndarray]]

XY_TOLERANCE_PX = 0.05
LIKELIHOOD_TOLERANCE = 1e-4
#: Largest difference allowed in a multi-animal model's PAF and identity maps.
EXTRA_TOLERANCE = 1e-3


def posenet_reference(net: nn.Module) -> Reference:
    """poseloop's inference path (as ``evaluate.predict``): RGB floats 0..255 into PoseNet."""

    def run(frame: np.ndarray) -> list[np.ndarray]:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), np.float32))[None]
        with torch.inference_mode():
            outputs = net(x)
        return [o[0].numpy() for o in outputs]

    return run


def dlc3_reference(net: nn.Module, info: Dlc3Info) -> Reference:
    """DeepLabCut-Live's per-frame path: BGR->RGB, x / 255, ImageNet Normalize, model."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def run(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if info.colormode.upper() == "RGB":
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        x = torch.from_numpy(frame).permute(2, 0, 1).to(torch.float32) / 255.0
        if info.normalize_images:
            x = (x - mean) / std
        with torch.inference_mode():
            scoremap, locref = net(x[None])
        return scoremap[0].numpy(), locref[0].numpy()

    return run


def ort_maps(session, frame: np.ndarray, spec: ModelSpec) -> list[np.ndarray]:
    """One frame's outputs (scoremap, locref, ...) from an ONNX Runtime session."""
    return [o[0] for o in session.run(list(output_names(spec)), {INPUT_NAME: frame[None]})]


@dataclass(frozen=True)
class Parity:
    """Largest ONNX-vs-PyTorch deviations over the checked frames."""

    frames: int
    sizes: list[tuple[int, int]]  # distinct (width, height) of the frames
    max_xy_px: float
    max_likelihood: float
    max_scoremap: float  # raw map values (logits or heatmap)
    max_locref: float
    argmax_flips: int  # bodyparts whose peak cell differs
    max_extra: float = 0.0  # multi-animal: part affinity fields and identity logits

    def ok(self, xy_tol: float = XY_TOLERANCE_PX, lik_tol: float = LIKELIHOOD_TOLERANCE) -> bool:
        """Whether poses, likelihoods (and PAF / identity maps) agree within tolerances."""
        return self.max_xy_px <= xy_tol and self.max_likelihood <= lik_tol \
            and self.max_extra <= EXTRA_TOLERANCE

    def __str__(self) -> str:
        sizes = ", ".join(f"{w}x{h}" for w, h in self.sizes)
        return (f"ONNX vs PyTorch on {self.frames} frames ({sizes}): max |dxy| "
                f"{self.max_xy_px:.2e} px, max |dlikelihood| {self.max_likelihood:.2e}, "
                f"max |dscoremap| {self.max_scoremap:.2e}, max |dlocref| {self.max_locref:.2e}, "
                f"{self.argmax_flips} argmax flips"
                + (f", max |dpaf, identity| {self.max_extra:.2e}" if self.max_extra else ""))


def measure_parity(session, spec: ModelSpec, reference: Reference,
                   frames: Sequence[np.ndarray]) -> Parity:
    """Run both on every frame (BGR uint8, as the graph takes it) and compare."""
    dxy = dlik = dmap = dlr = extra = 0.0
    flips = 0
    for frame in frames:
        ort_out, ref_out = ort_maps(session, frame, spec), list(reference(frame))
        (ort_s, ort_l), (ref_s, ref_l) = ort_out[:2], ref_out[:2]
        for a, b in zip(ort_out[2:], ref_out[2:], strict=True):
            if a.shape != b.shape:
                raise ModelError(f"ONNX output shape {a.shape} differs from PyTorch {b.shape}")
            extra = max(extra, float(np.abs(a - b).max()))
        if ort_s.shape != ref_s.shape or ort_l.shape != ref_l.shape:
            raise ModelError(f"ONNX map shapes {ort_s.shape}/{ort_l.shape} differ from PyTorch "
                             f"{ref_s.shape}/{ref_l.shape} on a {frame.shape} frame")
        a, b = spec.decode(ort_s, ort_l), spec.decode(ref_s, ref_l)
        dxy = max(dxy, float(np.abs(a[:, :2] - b[:, :2]).max()))
        dlik = max(dlik, float(np.abs(a[:, 2] - b[:, 2]).max()))
        dmap = max(dmap, float(np.abs(ort_s - ref_s).max()))
        dlr = max(dlr, float(np.abs(ort_l - ref_l).max()))
        k = ort_s.shape[0]
        flips += int((ort_s.reshape(k, -1).argmax(1) != ref_s.reshape(k, -1).argmax(1)).sum())
    sizes = sorted({(f.shape[1], f.shape[0]) for f in frames})
    return Parity(len(frames), sizes, dxy, dlik, dmap, dlr, flips, extra)


def check_parity(session, spec: ModelSpec, reference: Reference, frames: Sequence[np.ndarray],
                 source: str, xy_tol: float = XY_TOLERANCE_PX,
                 lik_tol: float = LIKELIHOOD_TOLERANCE) -> Parity:
    """``measure_parity``, raising ModelError with the numbers when out of tolerance."""
    if not frames:
        raise ModelError(f"{source}: no frames to check ONNX/PyTorch parity on")
    parity = measure_parity(session, spec, reference, frames)
    if not parity.ok(xy_tol, lik_tol):
        raise ModelError(
            f"{source}: ONNX output does not match PyTorch (tolerance {xy_tol} px, "
            f"{lik_tol} likelihood): {parity}"
        )
    return parity
