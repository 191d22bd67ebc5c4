"""Accuracy and speed of two exported variants (fp32 vs int8) on the same real frames.

Poses are computed the way ``poseloop evaluate`` does (resize by the model's input scale,
decode, map back with ``FrameTransform.to_full``), but through ONNX Runtime, so the RMSE
figures are comparable with the training run's evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from poseloop.export.parity import ort_maps
from poseloop.modelspec import ModelSpec
from poseloop.realtime.types import FrameTransform
from poseloop.training.augment import resize_for_inference
from poseloop.training.evaluate import point_errors


def frame_poses(session, spec: ModelSpec, frames: Sequence[np.ndarray]) -> np.ndarray:
    """Poses (x, y, likelihood) in full-frame pixels of BGR frames: frames x K x 3, or for a
    multi-animal model frames x N x K x 3 (assembled as live, strongest animal first)."""
    decoder = None
    if spec.multi_animal:
        from poseloop.realtime.multi_decoder import MultiAnimalDecoder

        decoder = MultiAnimalDecoder(spec)
    poses = []
    for frame in frames:
        image, sx, sy = resize_for_inference(frame, spec.input_scale)
        outputs = ort_maps(session, image, spec)
        if decoder is None:
            pose = spec.decode(outputs[0], outputs[1])
        else:
            pose = decoder.decode(outputs, np.zeros(decoder.shape, np.float32))
        poses.append(FrameTransform(sx=sx, sy=sy).to_full(pose))
    return np.stack(poses)


def matched(poses: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Multi-animal poses (frames x N x K x 3) reordered so that animal n of each frame is
    the one matched to reference animal n (frames x N x K x >= 2); unmatched rows NaN."""
    from poseloop.training.multi_evaluate import matched_to

    return np.stack([matched_to(pred, ref)[0] for pred, ref in
                     zip(poses, reference, strict=True)])


def rmse(poses: np.ndarray, labels: np.ndarray) -> float:
    """Mean pixel distance to the labels over labeled points (DeepLabCut's "RMSE"); animals
    of a multi-animal model are matched to the labeled ones first."""
    if poses.ndim == 4:
        poses = matched(poses, labels)
    err = point_errors(poses, labels)
    finite = np.isfinite(err)
    return float(err[finite].mean()) if finite.any() else float("nan")


def median_ms(session, spec: ModelSpec, frames: Sequence[np.ndarray], repeats: int = 3) -> float:
    """Median inference time (ms) of the graph on the frames' live inputs (after a warm-up)."""
    inputs = [resize_for_inference(f, spec.input_scale)[0] for f in frames]
    ort_maps(session, inputs[0], spec)
    times = []
    for _ in range(repeats):
        for image in inputs:
            t0 = time.perf_counter()
            ort_maps(session, image, spec)
            times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


@dataclass(frozen=True)
class Int8Report:
    """fp32 vs int8 on the same frames; RMSE only where labels were given."""

    frames: int
    rmse_fp32: float | None
    rmse_int8: float | None
    mean_shift_px: float  # mean distance between int8 and fp32 poses
    ms_fp32: float
    ms_int8: float

    @property
    def speedup(self) -> float:
        return self.ms_fp32 / self.ms_int8

    @property
    def error_growth(self) -> float:
        """RMSE increase (px) with labels; without them, the mean shift from fp32. Infinite
        when it cannot be measured (a model that finds nothing), so the check refuses."""
        if self.rmse_fp32 is None or self.rmse_int8 is None:
            growth = self.mean_shift_px
        else:
            growth = self.rmse_int8 - self.rmse_fp32
        return growth if math.isfinite(growth) else math.inf

    def __str__(self) -> str:
        acc = (f"test RMSE fp32 {self.rmse_fp32:.2f} px, int8 {self.rmse_int8:.2f} px "
               f"({self.error_growth:+.2f})" if self.rmse_fp32 is not None
               else "no labels")
        return (f"int8 on {self.frames} frames: {acc}; mean shift from fp32 "
                f"{self.mean_shift_px:.2f} px; median {self.ms_fp32:.1f} -> {self.ms_int8:.1f} ms "
                f"({self.speedup:.2f}x)")


def compare_int8(fp32_session, int8_session, spec: ModelSpec, frames: Sequence[np.ndarray],
                 labels: np.ndarray | None = None) -> Int8Report:
    """Accuracy (vs ``labels`` N x K x 2, if given) and speed of both sessions on ``frames``."""
    a = frame_poses(fp32_session, spec, frames)
    b = frame_poses(int8_session, spec, frames)
    if spec.multi_animal:
        b = matched(b, a)
    distance = np.sqrt(((a[..., :2] - b[..., :2]) ** 2).sum(-1))
    shift = float(distance[np.isfinite(distance)].mean()) if np.isfinite(distance).any() \
        else 0.0
    return Int8Report(
        frames=len(frames),
        rmse_fp32=None if labels is None else rmse(a, labels),
        rmse_int8=None if labels is None else rmse(b, labels),
        mean_shift_px=shift,
        ms_fp32=median_ms(fp32_session, spec, frames),
        ms_int8=median_ms(int8_session, spec, frames),
    )
