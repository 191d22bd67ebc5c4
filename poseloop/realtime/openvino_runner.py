"""OpenVINO's own runtime on the same poseloop .onnx file (``runner.backend: openvino``).

Measured on an Intel Xeon with AMX (benchmarks/vs_dlclive.py, benchmarks/runtimes.py), where
OpenVINO's CPU plugin runs bf16 (``precision: bf16``) and int8 (the QDQ model of
``poseloop export --int8``) on the AMX tile units: ResNet-50 at 640 x 480 in ~50 ms bf16 and
~22 ms int8 against ONNX Runtime's ~257 ms fp32 and ~80 ms int8. On CPUs without those units
(AMD, older Intel) it measured 0.70-1.00x of ONNX Runtime: keep the default there. Nothing
falls back silently: a missing ``openvino`` package or a bf16 request on a CPU without bf16
units is an error.

The input is the caller's uint8 array, shared with OpenVINO (no copy); the outputs are
OpenVINO's own buffers, valid until the next :meth:`OpenVinoRunner.run`. A model is compiled
for the first frame size it sees (static shapes are ~8 % faster) and once with dynamic shapes
for the others (dynamic crops), each only once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from poseloop.errors import ConfigError, ModelError, ProviderError
from poseloop.modelspec import ModelSpec, open_session, output_names
from poseloop.realtime.runner import RUNNERS, RunnerConfig, as_batch, default_shape

#: poseloop precision names -> OpenVINO's INFERENCE_PRECISION_HINT.
_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def import_openvino() -> Any:
    """The ``openvino`` module, imported without its usage telemetry.

    At import OpenVINO sends telemetry from a forked process unless the user opted out
    (``opt_in_out --opt_out``) or ``CI=true``; forked from a threaded process (the live
    loop's, a test run's) that child can deadlock, and the interpreter then hangs at exit
    waiting for it — on an offline lab rig, always. The import runs with ``CI=true`` (the
    opt-out its telemetry checks), the environment put back afterwards.
    """
    saved = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        import openvino as ov
    except ImportError as e:
        raise ProviderError("runner backend 'openvino' needs the openvino package (pip "
                            "install 'poseloop[openvino]')") from e
    finally:
        if saved is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = saved
    return ov


class OpenVinoRunner:
    """Runs a poseloop ONNX model with OpenVINO on the CPU; see the module docstring.

    precision: ``fp32`` or ``bf16`` (bf16 needs a CPU with AVX512-BF16 or AMX). int8 comes
    from the model: give it the ``.int8.onnx`` file. threads: None = OpenVINO's default.
    """

    def __init__(self, model_path: str | Path, precision: str = "fp32",
                 threads: int | None = None) -> None:
        ov = import_openvino()
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        if precision not in _PRECISIONS:
            raise ConfigError(f"runner precision must be one of {tuple(_PRECISIONS)}, "
                              f"got {precision!r}")
        self._ov = ov
        self.core = ov.Core()
        if precision == "bf16" and "BF16" not in self.core.get_property(
                "CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ProviderError(
                f"{self.path.name}: precision bf16 needs a CPU with bf16 units (AVX512-BF16 or "
                f"AMX: Intel Xeon 4th generation or newer); this one has none: use fp32")
        session = open_session(self.path, optimize=False)  # the metadata, read as ORT reads it
        self.spec = ModelSpec.from_metadata(session.get_modelmeta().custom_metadata_map,
                                            str(self.path))
        self._dims = session.get_inputs()[0].shape
        #: The graph outputs run() returns, in order (as OrtRunner.outputs).
        self.outputs: tuple[str, ...] = output_names(self.spec)
        #: Where the model runs, for reports (as OrtRunner.providers).
        self.providers = [f"OpenVINO {ov.__version__} CPU {precision}"]
        self.precision = precision
        self._config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _PRECISIONS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if threads is not None:
            self._config["INFERENCE_NUM_THREADS"] = threads
        try:
            self._model = self.core.read_model(str(self.path))
        except RuntimeError as e:
            raise ModelError(f"{self.path}: OpenVINO cannot read it: "
                             f"{(str(e).splitlines() or [''])[0]}") from e
        found = tuple(o.get_any_name() for o in self._model.outputs)
        if found[:len(self.outputs)] != self.outputs:
            raise ModelError(f"{self.path}: needs graph outputs {self.outputs}, found {found}")
        self._static: tuple[tuple[int, ...], Any] | None = None  # (shape, infer request)
        self._dynamic: Any = None

    def __repr__(self) -> str:
        return f"OpenVinoRunner({self.path.name}, {self.precision})"

    @classmethod
    def from_config(cls, model_path: str | Path, config: RunnerConfig) -> OpenVinoRunner:
        """A runner of ``model_path`` set up by a validated ``RunnerConfig``."""
        if config.providers != ["cpu"]:
            raise ConfigError(f"runner backend 'openvino' runs on the CPU; providers "
                              f"{config.providers} are ONNX Runtime's (leave them out)")
        return cls(model_path, config.precision, config.intra_threads)

    def _request(self, shape: tuple[int, ...]) -> Any:
        """The infer request for an input of ``shape``: static for the first, else dynamic."""
        if self._static is None:
            model = self._model.clone()
            model.reshape({0: list(shape)})
            self._static = (shape, self._compile(model).create_infer_request())
        if self._static[0] == shape:
            return self._static[1]
        if self._dynamic is None:
            self._dynamic = self._compile(self._model).create_infer_request()
        return self._dynamic

    def _compile(self, model: Any) -> Any:
        try:
            return self.core.compile_model(model, "CPU", self._config)
        except RuntimeError as e:
            raise ModelError(f"{self.path}: OpenVINO cannot compile it: "
                             f"{(str(e).splitlines() or [''])[0]}") from e

    def run(self, image: np.ndarray) -> tuple[np.ndarray, ...]:
        """(scoremap N x K x h x w, locref N x 2K x h x w[, paf[, identity]]) of a uint8
        (N x) H x W x 3 image; OpenVINO's buffers, valid until the next call."""
        x = np.ascontiguousarray(as_batch(image, self.path.name, self.spec.input_order))
        request = self._request(x.shape)
        request.set_input_tensor(self._ov.Tensor(x, shared_memory=True))
        request.infer()
        return tuple(request.get_output_tensor(i).data for i in range(len(self.outputs)))

    def warmup(self, shape: tuple[int, int] | None = None, runs: int = 3) -> None:
        """Compile for (height, width) ``shape`` and run it ``runs`` times (see OrtRunner)."""
        if shape is None:
            shape = default_shape(self._dims, self.spec)
        frame = np.zeros((1, *shape, 3), np.uint8)
        for _ in range(runs):
            self.run(frame)


RUNNERS.register("openvino")(OpenVinoRunner.from_config)
