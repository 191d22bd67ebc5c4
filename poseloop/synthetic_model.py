"""The demo's synthetic model: trained once on the synthetic scene, exported, and cached.

Example configs that name no model, and ``poseloop demo``, run this ONNX file on the
synthetic camera. Building it needs the ``train`` extra (torch) and a minute or two of CPU;
afterwards only the cached file is read. Cache folder: ``$POSELOOP_CACHE`` or
``~/.cache/poseloop``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from poseloop import __version__
from poseloop.errors import ModelError


def cache_dir() -> Path:
    """Where built artefacts are cached."""
    return Path(os.environ.get("POSELOOP_CACHE", Path.home() / ".cache" / "poseloop"))


def model_path() -> Path:
    """The cached model's path (one per poseloop version: retrain after an upgrade)."""
    return cache_dir() / f"synthetic-{__version__}.onnx"


def synthetic_model(log: Callable[[str], None] = print) -> Path:
    """The synthetic model's ONNX path, training and exporting it on first use."""
    path = model_path()
    if path.is_file():
        return path
    try:
        from poseloop.demo import train_synthetic
        from poseloop.export.pipeline import export_run
    except ImportError as e:
        raise ModelError(
            "no model given and the demo's synthetic model is not built yet; building it "
            "needs the training extra: pip install 'poseloop[train]' (or name a model)"
        ) from e
    log(f"building the synthetic demo model once (a minute or two of training) -> {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="poseloop-synth-") as tmp:
        run = train_synthetic(Path(tmp))
        result = export_run(run, Path(tmp) / "model.onnx", log=lambda _msg: None)
        partial = path.with_suffix(".partial")
        shutil.copyfile(result.path, partial)
        partial.replace(path)  # never leave a half-written model where it would be used
    return path
