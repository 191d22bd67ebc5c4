"""ONNX Runtime inference with IO binding: one session, buffers reused across frames.

:class:`OrtRunner` builds the session once with the requested execution providers (a missing
one is a ProviderError unless fallback is allowed), reads the model's :class:`ModelSpec` from
its metadata, and binds the input frame and the output buffers so a frame allocates nothing:

* input: the caller's uint8 array is bound in place (no copy); a different buffer of the same
  shape only re-points the input (~10 µs), a non-contiguous view is copied into a staging
  buffer owned by the runner. On CUDA / TensorRT, ORT copies it to the device (a 640 x 480
  frame is 0.9 MB of uint8: the cast and normalisation run on the GPU, in the graph).
* outputs: preallocated host arrays, bound once per input shape (on a GPU, ORT copies the
  device outputs into them); :meth:`OrtRunner.run` returns them, valid until the next call.
* ``cuda_graph`` (CUDA, TensorRT): input and outputs live in device buffers at fixed
  addresses and the whole network is replayed as one CUDA graph (one launch instead of one
  per kernel); the input size is then fixed by the first frame, and each frame's outputs are
  copied out into new arrays.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import onnxruntime as ort
from pydantic import Field, model_validator

from poseloop.config import Strict
from poseloop.errors import FrameError, ModelError, ProviderError
from poseloop.modelspec import INPUT_NAME, ModelSpec, check_io, open_session, output_names
from poseloop.realtime.types import Runner
from poseloop.registry import Registry

#: Short provider names accepted in configs; full ORT names work too.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
}
_GPU = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def provider_name(name: str) -> str:
    """ORT's name of a provider given by short or full name; ProviderError if unknown."""
    if name in PROVIDERS.values():
        return name
    if name.lower() in PROVIDERS:
        return PROVIDERS[name.lower()]
    raise ProviderError(
        f"unknown execution provider {name!r}; use one of {', '.join(PROVIDERS)} "
        f"or a full ONNX Runtime name"
    )


class RunnerConfig(Strict):
    """Inference: the backend (ONNX Runtime, or OpenVINO on Intel CPUs), ONNX Runtime's
    providers in priority order, threads, TensorRT and CUDA options."""

    backend: str = Field(
        default="onnxruntime",
        description="onnxruntime, or openvino (Intel CPUs: bf16/int8 on AMX; pip install "
        "'poseloop[openvino]')",
    )
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32", description="openvino: bf16 on CPUs with AMX / AVX512-BF16",
    )
    providers: list[Literal["tensorrt", "cuda", "cpu"]] = Field(
        default_factory=lambda: ["cpu"], min_length=1
    )
    allow_fallback: bool = Field(
        default=False, description="use what is available instead of failing"
    )
    intra_threads: int | None = Field(
        default=None, ge=1, description="None = ORT's default (cores)"
    )
    inter_threads: int | None = Field(default=None, ge=1)
    device_id: int = Field(default=0, ge=0)
    trt_cache_dir: str | None = Field(default=None, description="TensorRT engine cache folder")
    trt_fp16: bool = False
    cuda_graph: bool = Field(
        default=False,
        description="CUDA / TensorRT: replay the network as one CUDA graph (fixed input size: "
        "no dynamic crop)",
    )

    @model_validator(mode="after")
    def _cuda_graph_needs_a_gpu(self) -> RunnerConfig:
        if self.cuda_graph and self.providers[0] not in ("cuda", "tensorrt"):
            raise ValueError("cuda_graph needs providers starting with cuda or tensorrt")
        return self

    @model_validator(mode="after")
    def _precision_needs_openvino(self) -> RunnerConfig:
        if self.precision != "fp32" and self.backend != "openvino":
            raise ValueError(f"precision {self.precision} needs backend 'openvino' (ONNX "
                             f"Runtime: export an fp16/int8 model instead)")
        return self


class OrtRunner:
    """Runs a poseloop ONNX model on uint8 frames; see the module docstring.

    providers: in priority order, e.g. ("cpu",), ("cuda",), ("tensorrt", "cuda", "cpu").
    allow_fallback: use what is available (with a warning) instead of raising ProviderError.
    intra_threads / inter_threads: ORT thread pools (None = ORT's default).
    device_id: GPU for CUDA / TensorRT.
    trt_cache_dir, trt_fp16, trt_workspace_bytes: TensorRT engine cache, fp16, workspace.
    cuda_graph: CUDA / TensorRT: replay the network as one CUDA graph (see module docstring).

    ``providers`` (after construction) are the providers the session actually uses and
    ``spec`` the model's metadata.
    """

    def __init__(
        self,
        model_path: str | Path,
        providers: Sequence[str] = ("cpu",),
        allow_fallback: bool = False,
        intra_threads: int | None = None,
        inter_threads: int | None = None,
        device_id: int = 0,
        trt_cache_dir: str | Path | None = None,
        trt_fp16: bool = False,
        trt_workspace_bytes: int | None = None,
        cuda_graph: bool = False,
    ) -> None:
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        wanted = [provider_name(p) for p in providers] or [PROVIDERS["cpu"]]
        chosen = self._available(wanted, allow_fallback)
        options = {
            "CUDAExecutionProvider": {"device_id": device_id,
                                      **({"enable_cuda_graph": "1"} if cuda_graph else {})},
            "TensorrtExecutionProvider": _trt_options(
                device_id, trt_cache_dir, trt_fp16, trt_workspace_bytes, cuda_graph
            ),
        }
        self.session = open_session(
            self.path, threads=intra_threads, inter_threads=inter_threads,
            providers=[(p, options.get(p, {})) for p in chosen],
        )
        #: The providers the session actually uses, in priority order.
        self.providers: list[str] = list(self.session.get_providers())
        self._check_started(chosen, allow_fallback)
        self.spec = ModelSpec.from_metadata(
            self.session.get_modelmeta().custom_metadata_map, str(self.path)
        )
        check_io(self.session, str(self.path))
        #: The graph outputs run() returns, in order (scoremap, locref[, paf[, identity]]).
        self.outputs: tuple[str, ...] = output_names(self.spec)
        found = tuple(o.name for o in self.session.get_outputs())
        if found[:len(self.outputs)] != self.outputs:
            raise ModelError(f"{self.path}: a {'multi' if self.spec.multi_animal else 'single'}"
                             f"-animal model needs graph outputs {self.outputs}, found {found}")
        self.on_gpu = self.providers[0] in _GPU
        if cuda_graph and not self.on_gpu:
            raise ProviderError(f"{self.path}: cuda_graph needs the CUDA or TensorRT provider; "
                                f"the session runs on {', '.join(self.providers)}")
        self.cuda_graph = cuda_graph
        self._device_id = device_id if self.on_gpu else 0
        self._device_values: tuple[Any, tuple[Any, ...]] | None = None  # cuda_graph buffers
        self._dims = self.session.get_inputs()[0].shape
        self._binding = self.session.io_binding()
        self._shape: tuple[int, ...] | None = None
        self._input: np.ndarray | None = None  # the array bound as input (kept alive)
        self._pointer = 0
        self._staging: np.ndarray | None = None
        self._outputs: tuple[np.ndarray, ...] | None = None

    def __repr__(self) -> str:
        return f"OrtRunner({self.path.name}, providers {self.providers})"

    @classmethod
    def from_config(cls, model_path: str | Path, config: RunnerConfig) -> OrtRunner:
        """A runner of ``model_path`` set up by a validated ``RunnerConfig``."""
        return cls(model_path, providers=config.providers, allow_fallback=config.allow_fallback,
                   intra_threads=config.intra_threads, inter_threads=config.inter_threads,
                   device_id=config.device_id, trt_cache_dir=config.trt_cache_dir,
                   trt_fp16=config.trt_fp16, cuda_graph=config.cuda_graph)

    @staticmethod
    def _available(wanted: list[str], allow_fallback: bool) -> list[str]:
        available = ort.get_available_providers()
        missing = [p for p in wanted if p not in available]
        if not missing:
            return wanted
        message = (
            f"execution provider {', '.join(missing)} is not available in this onnxruntime "
            f"{ort.__version__} (available: {', '.join(available)})"
        )
        if not allow_fallback:
            raise ProviderError(
                f"{message}; for CUDA/TensorRT replace onnxruntime by onnxruntime-gpu "
                f"(pip uninstall -y onnxruntime && pip install 'poseloop[gpu]'), or allow "
                f"fallback"
            )
        chosen = [p for p in wanted if p in available] or [PROVIDERS["cpu"]]
        warnings.warn(f"{message}; falling back to {', '.join(chosen)}", stacklevel=3)
        return chosen

    def _check_started(self, chosen: list[str], allow_fallback: bool) -> None:
        """ORT quietly drops a provider that fails to start (e.g. no CUDA libraries)."""
        failed = [p for p in chosen if p not in self.providers]
        if not failed:
            return
        message = (
            f"{self.path}: {', '.join(failed)} is installed but did not start (GPU driver, "
            f"CUDA/cuDNN or TensorRT libraries missing?); the session runs on "
            f"{', '.join(self.providers)}"
        )
        if not allow_fallback:
            raise ProviderError(message)
        warnings.warn(message, stacklevel=3)

    def _check_dims(self, shape: tuple[int, ...]) -> None:
        """FrameError unless ``shape`` fits the model's fixed input dimensions."""
        for axis, (want, have) in enumerate(zip(self._dims, shape, strict=True)):
            if isinstance(want, int) and want != have:
                raise FrameError(
                    f"{self.path.name} needs input shape {self._dims}; got {shape} "
                    f"(axis {axis} is {have}, not {want})"
                )

    def run(self, image: np.ndarray) -> tuple[np.ndarray, ...]:
        """(scoremap N x K x h x w, locref N x 2K x h x w[, paf[, identity]]) of a uint8
        (N x) H x W x 3 image (the outputs ``self.outputs`` names).

        On CPU the arrays are the runner's bound buffers: valid until the next call.
        """
        x = as_batch(image, self.path.name, self.spec.input_order)
        if not x.flags.c_contiguous:
            if self._staging is None or self._staging.shape != x.shape:
                self._staging = np.empty(x.shape, np.uint8)
            np.copyto(self._staging, x)
            x = self._staging
        binding = self._binding
        if self.cuda_graph:
            return self._run_graph(x)
        if x.shape != self._shape:
            return self._rebind(x)
        pointer = x.ctypes.data
        if pointer != self._pointer:
            binding.bind_input(INPUT_NAME, "cpu", 0, np.uint8, x.shape, pointer)
            self._input, self._pointer = x, pointer
        self.session.run_with_iobinding(binding)
        assert self._outputs is not None
        return self._outputs

    def _run_graph(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """cuda_graph: copy the frame into the device input, replay, copy the outputs out."""
        if self._device_values is None:
            self._bind_device(x)
        elif x.shape != self._shape:
            raise FrameError(
                f"{self.path.name}: with cuda_graph the input size is fixed by the first frame "
                f"({self._shape}); got {x.shape} (turn dynamic cropping off, or cuda_graph)")
        assert self._device_values is not None
        value_in, values_out = self._device_values
        value_in.update_inplace(x)
        self.session.run_with_iobinding(self._binding)  # the first run captures the graph
        return tuple(v.numpy() for v in values_out)

    def _bind_device(self, x: np.ndarray) -> None:
        """cuda_graph: device buffers for the input and outputs, bound once, at fixed addresses."""
        self._check_dims(x.shape)
        shapes = _output_shapes(self.path, x.shape, self.outputs)
        on = ("cuda", self._device_id)
        value_in = ort.OrtValue.ortvalue_from_shape_and_type(x.shape, np.uint8, *on)
        values_out = tuple(ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, *on)
                           for shape in shapes)
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_ortvalue_input(INPUT_NAME, value_in)
        for name, value in zip(self.outputs, values_out, strict=True):
            binding.bind_ortvalue_output(name, value)
        self._device_values = (value_in, values_out)
        self._shape = x.shape

    def _rebind(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Bind a new input shape: let ORT allocate the outputs once, then keep them."""
        self._check_dims(x.shape)
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        self._input, self._pointer, self._shape = x, x.ctypes.data, x.shape
        binding.bind_input(INPUT_NAME, "cpu", 0, np.uint8, x.shape, self._pointer)
        for name in self.outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        arrays = tuple(np.ascontiguousarray(a)
                       for a in binding.copy_outputs_to_cpu()[:len(self.outputs)])
        binding.clear_binding_outputs()
        for name, array in zip(self.outputs, arrays, strict=True):
            binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        self._outputs = arrays
        return self._outputs

    def warmup(self, shape: tuple[int, int] | None = None, runs: int = 3) -> None:
        """Run ``runs`` blank frames of (height, width) ``shape`` so the first real one is fast.

        The default shape is the model's fixed input size, else its training image size.
        """
        if shape is None:
            shape = default_shape(self._dims, self.spec)
        frame = np.zeros((1, *shape, 3), np.uint8)
        for _ in range(runs):
            self.run(frame)


class ModelRunner(Runner, Protocol):
    """A Runner that knows its model (what the builder needs of any backend)."""

    spec: ModelSpec
    outputs: tuple[str, ...]
    providers: list[str]


#: Inference backends by ``RunnerConfig.backend``: name -> factory(model path, config). A
#: backend is one file that registers itself here (and is listed in BUILTIN_RUNNERS).
RUNNERS: Registry[Callable[[Path, RunnerConfig], ModelRunner]] = Registry("runner backend")
BUILTIN_RUNNERS = ("poseloop.realtime.openvino_runner",)


def make_runner(model_path: str | Path, config: RunnerConfig) -> ModelRunner:
    """The runner of ``config.backend`` (ConfigError listing the known ones if unknown)."""
    for module in BUILTIN_RUNNERS:
        importlib.import_module(module)
    return RUNNERS[config.backend].factory(Path(model_path), config)


def as_batch(image: np.ndarray, model_name: str, input_order: str) -> np.ndarray:
    """The image as N x H x W x 3 (a view), or FrameError naming what the model needs."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 \
            or image.ndim not in (3, 4) or image.shape[-1] != 3 or 0 in image.shape:
        got = (f"{image.dtype} array of shape {image.shape}"
               if isinstance(image, np.ndarray) else type(image).__name__)
        raise FrameError(
            f"{model_name} needs uint8 H x W x 3 (or N x H x W x 3) {input_order} images; "
            f"got a {got}"
        )
    return image if image.ndim == 4 else image[None]


def default_shape(dims: list[Any], spec: ModelSpec) -> tuple[int, int]:
    if isinstance(dims[1], int) and isinstance(dims[2], int):
        return dims[1], dims[2]
    if spec.image_size is not None:
        return spec.image_size[1], spec.image_size[0]
    raise ModelError("the model has no fixed input size or training image size: pass a shape")


def _output_shapes(path: Path, shape: tuple[int, ...],
                   outputs: tuple[str, ...]) -> list[tuple[int, ...]]:
    """The output shapes for an input of ``shape``: one blank frame through a CPU session."""
    session = open_session(path, threads=1)
    found = session.run(list(outputs), {INPUT_NAME: np.zeros(shape, np.uint8)})
    return [tuple(np.asarray(a).shape) for a in found]


def _trt_options(device_id: int, cache_dir: str | Path | None, fp16: bool,
                 workspace_bytes: int | None, cuda_graph: bool = False) -> dict[str, Any]:
    options: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": fp16}
    if cuda_graph:
        options["trt_cuda_graph_enable"] = True
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        options["trt_engine_cache_enable"] = True
        options["trt_engine_cache_path"] = str(cache_dir)
    if workspace_bytes is not None:
        options["trt_max_workspace_size"] = workspace_bytes
    return options


RUNNERS.register("onnxruntime")(OrtRunner.from_config)
