"""``poseloop export`` and ``poseloop import-dlc`` end to end.

export -> parity check on real frames (the file is deleted if it fails) -> optional int8
(refused when it costs more accuracy than allowed) and fp16 variants beside it
(``model.int8.onnx``, ``model.fp16.onnx``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poseloop.errors import ModelError
from poseloop.export.compare import Int8Report, compare_int8
from poseloop.export.dlc3 import load_dlc3
from poseloop.export.frames import load_bgr, pick, read_frames
from poseloop.export.onnx_export import (
    dlc3_spec,
    export_onnx,
    run_spec,
    wrap_dlc3,
    wrap_posenet,
)
from poseloop.export.parity import (
    Parity,
    Reference,
    check_parity,
    dlc3_reference,
    measure_parity,
    posenet_reference,
)
from poseloop.export.quantize import convert_fp16, quantize_int8
from poseloop.modelspec import ModelSpec, check_io, open_session
from poseloop.project import read_project
from poseloop.training.augment import resize_for_inference
from poseloop.training.run import load_model

Log = Callable[[str], None]


@dataclass
class ExportOptions:
    """Choices shared by ``export`` and ``import-dlc``."""

    int8: bool = False
    fp16: bool = False
    opset: int | None = None
    exporter: str = "torchscript"
    parity: bool = True
    parity_frames: int = 4
    calibration_frames: int = 32
    int8_tolerance: float = 0.5  # px of extra test error allowed
    force: bool = False  # keep an int8 model that exceeds the tolerance


@dataclass
class ExportResult:
    """What was written and the figures that justify it."""

    path: Path
    spec: ModelSpec
    parity: Parity | None = None
    int8_path: Path | None = None
    int8: Int8Report | None = None
    fp16_path: Path | None = None
    fp16_parity: Parity | None = None


def variant_path(path: Path, precision: str) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` / ``model.fp16.onnx``."""
    return path.with_name(f"{path.stem}.{precision}{path.suffix}")


def _verify(path: Path, spec: ModelSpec, reference: Reference, frames: list[np.ndarray],
            opts: ExportOptions, log: Log) -> Parity | None:
    """Open the file, check its contract and (unless disabled) parity; delete it on failure."""
    try:
        session = open_session(path)
        check_io(session, str(path))
        if not opts.parity:
            return None
        parity = check_parity(session, spec, reference, frames, str(path))
    except ModelError:
        path.unlink(missing_ok=True)
        raise
    log(f"parity: {parity}")
    return parity


def add_int8(result: ExportResult, calibration: list[np.ndarray], evaluation: list[np.ndarray],
          labels: np.ndarray | None, opts: ExportOptions, log: Log) -> None:
    """Quantize ``result.path``, compare with fp32 and keep the int8 file only if accurate
    enough (error growth <= ``opts.int8_tolerance`` px, or ``opts.force``)."""
    path = variant_path(result.path, "int8")
    log(f"int8: calibrating on {len(calibration)} frames -> {path}")
    quantize_int8(result.path, path, calibration, result.spec)
    report = compare_int8(open_session(result.path), open_session(path), result.spec,
                          evaluation, labels)
    log(str(report))
    result.int8 = report
    if report.error_growth > opts.int8_tolerance:
        what = "test RMSE grows" if labels is not None else "poses move"
        message = (f"{path}: int8 {what} by {report.error_growth:.2f} px > tolerance "
                   f"{opts.int8_tolerance} px ({report})")
        if not opts.force:
            path.unlink(missing_ok=True)
            raise ModelError(message + "; use the fp32 model, raise --int8-tolerance or "
                             "pass --force to keep it")
        log(f"warning: {message}; kept because of --force")
    result.int8_path = path


def add_fp16(result: ExportResult, reference: Reference, frames: list[np.ndarray],
          log: Log) -> None:
    """Convert to fp16 and check that ONNX Runtime (CPU) loads and runs it."""
    path = convert_fp16(result.path, variant_path(result.path, "fp16"), result.spec)
    result.fp16_parity = measure_parity(open_session(path), result.spec, reference, frames)
    result.fp16_path = path
    log(f"fp16: {path} ({result.fp16_parity})")


def export_run(run: str | Path, out: str | Path | None = None,
               opts: ExportOptions | None = None, log: Log = print) -> ExportResult:
    """Export a training run's network (default ``RUN/model.onnx``), checked on its frames."""
    opts = opts or ExportOptions()
    net, info = load_model(run)
    spec = run_spec(info)
    out = Path(out) if out else info.path / "model.onnx"
    project = read_project(info.project_root)
    train = project.subset(info.split.train)
    test = project.subset(info.split.test)
    half = max(1, opts.parity_frames // 2)
    shown = project.subset(pick(info.split.train, half) + pick(info.split.test, half))
    frames = [resize_for_inference(load_bgr(project, f), spec.input_scale)[0] for f in shown]
    log(f"exporting {info.path} ({spec.backbone}, {len(spec.bodyparts)} bodyparts) -> {out}")
    export_onnx(wrap_posenet(net, spec), spec, out, opts.opset, opts.exporter)
    reference = posenet_reference(net)
    result = ExportResult(out, spec, _verify(out, spec, reference, frames, opts, log))
    if opts.int8:
        calib = project.subset(pick(info.split.train, opts.calibration_frames))
        calibration = [resize_for_inference(load_bgr(project, f), spec.input_scale)[0]
                       for f in calib]
        evaluation = test or train
        labels = np.stack([f.keypoints for f in evaluation])
        add_int8(result, calibration, [load_bgr(project, f) for f in evaluation], labels, opts,
              log)
    if opts.fp16:
        add_fp16(result, reference, frames, log)
    return result


def import_dlc(model: str | Path, out: str | Path | None = None,
               frames_path: str | Path | None = None, pcutoff: float = 0.6,
               opts: ExportOptions | None = None, log: Log = print) -> ExportResult:
    """Convert a DeepLabCut 3 ``.pt`` export to a poseloop ONNX file (default ``MODEL.onnx``).

    frames_path: a video or image folder whose first frames are used for the parity check
    (and int8 calibration); without it, parity runs on fixed noise frames.
    """
    opts = opts or ExportOptions()
    net, info = load_dlc3(model)
    spec = dlc3_spec(info, pcutoff)
    out = Path(out) if out else Path(model).with_suffix(".onnx")
    n_eval = 10
    if frames_path is not None:
        wanted = opts.calibration_frames + n_eval if opts.int8 else opts.parity_frames
        frames = read_frames(frames_path, wanted)
    elif opts.int8:
        raise ModelError("--int8 needs --frames VIDEO|FOLDER to calibrate on real frames")
    else:
        log("parity on noise frames: pass --frames VIDEO|FOLDER to check on real ones")
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
                  for _ in range(opts.parity_frames)]
    log(f"importing {model} ({info.backbone}, stride {info.stride:g}, "
        f"likelihood {spec.likelihood}) -> {out}")
    export_onnx(wrap_dlc3(net, info, spec), spec, out, opts.opset, opts.exporter)
    reference = dlc3_reference(net, info)
    parity_frames = frames[:opts.parity_frames]
    result = ExportResult(out, spec, _verify(out, spec, reference, parity_frames, opts, log))
    if opts.int8:
        split = max(1, len(frames) - n_eval)
        add_int8(result, frames[:split], frames[split:] or frames, None, opts, log)
    if opts.fp16:
        add_fp16(result, reference, parity_frames, log)
    return result
