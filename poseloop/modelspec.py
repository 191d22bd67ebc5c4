"""What an exported model file says about itself: ``ModelSpec``, read from ONNX metadata.

Every poseloop ONNX file (``poseloop export`` of a training run, ``poseloop import-dlc`` of a
DeepLabCut 3 model) has one graph contract and carries its facts as string
``metadata_props`` named ``poseloop.<field>`` (lists as JSON), so a model file alone is
enough to run and decode:

* input ``image``: uint8 N x H x W x 3 in ``input_order`` (BGR: OpenCV frames go in as they
  are), any N, H, W; cast, channel order and normalisation happen inside the graph.
* outputs ``scoremap`` (N x K x h x w, raw: logits for poseloop models) and ``locref``
  (N x 2K x h x w, interleaved dx, dy in ``locref_stdev`` units). A multi-animal model's
  scoremap and locref hold its K bodyparts then its U unique bodyparts, and it adds ``paf``
  (N x 2E x h x w: x, y of each edge of ``paf_edges``) and, with ``identity``, ``identity``
  (N x individuals x h x w logits).

This module imports no torch (and no onnx): the realtime runner reads the spec from its
ONNX Runtime session with :meth:`ModelSpec.from_metadata`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poseloop.errors import ModelError
from poseloop.heatmap import LIKELIHOOD_MODES, HeatmapSpec
from poseloop.realtime.types import SINGLE_ANIMAL

PREFIX = "poseloop."
FORMAT_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAMES = ("scoremap", "locref")
#: The outputs a multi-animal model adds, in order (``identity`` only with an identity head).
MULTI_OUTPUT_NAMES = ("paf", "identity")

INPUT_ORDERS = ("BGR", "RGB")
SOURCES = ("poseloop", "dlc3")
PRECISIONS = ("fp32", "int8", "fp16")

NOT_POSELOOP = (
    "not a poseloop model: no poseloop metadata; export it with `poseloop export` or import "
    "it with `poseloop import-dlc`"
)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to feed an exported model and decode its outputs.

    stride, offset, locref_stdev: output geometry (see :class:`poseloop.heatmap.HeatmapSpec`).
    likelihood: one of ``LIKELIHOOD_MODES``.
    input_order: channel order of the graph input (``BGR`` = OpenCV frames untouched).
    input_scale: frames are resized by this factor before inference (the training scale).
    image_size: training image (crop) size as (width, height), or None if unknown.
    individuals: names of the N animals of a multi-animal model; empty for a single-animal
        one (N = 1). unique_bodyparts: DeepLabCut's bodyparts that exist once per frame.
    paf_edges: the bodypart pairs with a part affinity field (multi-animal), in channel order.
    identity: whether the model has an identity head (individuals told apart by looks).
    """

    bodyparts: list[str]
    skeleton: list[tuple[str, str]]
    stride: float
    offset: float
    locref_stdev: float
    likelihood: str
    input_order: str = "BGR"
    input_scale: float = 1.0
    image_size: tuple[int, int] | None = None
    pcutoff: float = 0.6
    backbone: str = ""
    source: str = "poseloop"
    precision: str = "fp32"
    poseloop_version: str = ""
    format_version: int = FORMAT_VERSION
    individuals: list[str] = field(default_factory=list)
    unique_bodyparts: list[str] = field(default_factory=list)
    paf_edges: list[tuple[str, str]] = field(default_factory=list)
    identity: bool = False

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("likelihood", self.likelihood, LIKELIHOOD_MODES),
            ("input_order", self.input_order, INPUT_ORDERS),
            ("source", self.source, SOURCES),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise ModelError(f"model spec: {name} must be one of {allowed}, got {value!r}")
        if self.stride <= 0 or self.locref_stdev <= 0 or self.input_scale <= 0:
            raise ModelError("model spec: stride, locref_stdev and input_scale must be > 0")

    def heatmap_spec(self) -> HeatmapSpec:
        """The output geometry and likelihood mapping: the one decode contract."""
        return HeatmapSpec(stride=self.stride, offset=self.offset,
                           locref_stdev=self.locref_stdev, likelihood=self.likelihood)

    @property
    def multi_animal(self) -> bool:
        """Whether the model names its individuals (DeepLabCut multi-animal layout)."""
        return bool(self.individuals)

    @property
    def decoder(self) -> str:
        """The registered decoder kind for this model's outputs (``DECODERS``)."""
        return "multi_animal" if self.individuals else "single_animal"

    @property
    def individual_names(self) -> tuple[str, ...]:
        """Names of the N rows of a pose: the individuals, or ("animal",) for N = 1."""
        return tuple(self.individuals) if self.individuals else SINGLE_ANIMAL

    def likelihood_of(self, peak: np.ndarray) -> np.ndarray:
        """Likelihoods (float32) from the scoremap values at the peaks."""
        return self.heatmap_spec().likelihood_of(peak)

    def decode(self, scoremap: np.ndarray, locref: np.ndarray) -> np.ndarray:
        """Pose K x 3 (x, y, likelihood) in graph-input pixels of one image's maps."""
        return self.heatmap_spec().decode_pose(scoremap, locref)

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries (all strings, ``poseloop.`` prefix)."""
        values = asdict(self)
        values["skeleton"] = [list(e) for e in self.skeleton]
        values["paf_edges"] = [list(e) for e in self.paf_edges]
        values["image_size"] = list(self.image_size) if self.image_size else None
        return {PREFIX + k: _encode(v) for k, v in values.items()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source_name: str) -> ModelSpec:
        """Parse ``metadata_props`` (e.g. ORT's ``custom_metadata_map``).

        Raises ModelError naming ``source_name`` and the missing or invalid key.
        """
        own = {k[len(PREFIX):]: v for k, v in metadata.items() if k.startswith(PREFIX)}
        if not own:
            raise ModelError(f"{source_name}: {NOT_POSELOOP}")
        try:
            version = int(own.get("format_version", "0"))
        except ValueError:
            version = 0
        if version > FORMAT_VERSION:
            raise ModelError(
                f"{source_name}: metadata format {version} is newer than this poseloop reads "
                f"({FORMAT_VERSION}); upgrade poseloop"
            )
        missing = [k for k in _REQUIRED if k not in own]
        if missing:
            raise ModelError(
                f"{source_name}: poseloop metadata is incomplete: missing key "
                f"{', '.join(PREFIX + k for k in missing)}; export the model again"
            )
        values: dict[str, Any] = {}
        for key, parse in _PARSERS.items():
            if key not in own:
                continue
            try:
                values[key] = parse(own[key])
            except (ValueError, TypeError) as e:
                raise ModelError(
                    f"{source_name}: metadata {PREFIX}{key}={own[key]!r} is invalid ({e})"
                ) from e
        try:
            return cls(**values)
        except ModelError as e:
            raise ModelError(f"{source_name}: {e}") from e

    @classmethod
    def read(cls, path: str | Path) -> ModelSpec:
        """The spec of an ONNX file, read with ONNX Runtime (clear ModelError if it is not one)."""
        session = open_session(path, optimize=False)
        spec = cls.from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
        check_io(session, str(path))
        return spec


def _encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _str_list(text: str) -> list[str]:
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a JSON list of strings")
    return value


def _skeleton(text: str) -> list[tuple[str, str]]:
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(e, list) and len(e) == 2 for e in value):
        raise ValueError("expected a JSON list of [bodypart, bodypart] pairs")
    return [(str(a), str(b)) for a, b in value]


def _size(text: str) -> tuple[int, int] | None:
    value = json.loads(text)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("expected null or [width, height]")
    return int(value[0]), int(value[1])


_PARSERS = {
    "bodyparts": _str_list,
    "skeleton": _skeleton,
    "stride": float,
    "offset": float,
    "locref_stdev": float,
    "likelihood": str,
    "input_order": str,
    "input_scale": float,
    "image_size": _size,
    "pcutoff": float,
    "backbone": str,
    "source": str,
    "precision": str,
    "poseloop_version": str,
    "format_version": int,
    "individuals": _str_list,
    "unique_bodyparts": _str_list,
    "paf_edges": _skeleton,
    "identity": json.loads,
}
_REQUIRED = ("bodyparts", "stride", "offset", "locref_stdev", "likelihood", "input_order",
             "input_scale", "source")


def open_session(path: str | Path, optimize: bool = True, threads: int | None = None,
                 providers: Sequence[str | tuple[str, dict]] = ("CPUExecutionProvider",),
                 inter_threads: int | None = None):
    """An ONNX Runtime session of ``path``; ModelError for a missing or unreadable file.

    optimize=False skips graph optimisation (fast, for reading metadata only). providers:
    names or (name, options) pairs, in priority order.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if inter_threads:
        options.inter_op_num_threads = inter_threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as e:  # ORT raises several pybind types (InvalidProtobuf, Fail, ...)
        first = (str(e).splitlines() or [""])[0]
        raise ModelError(
            f"{path}: ONNX Runtime cannot load it (not an ONNX model, truncated or corrupt, "
            f"or an operator the providers lack?): {first}"
        ) from e


def check_io(session: Any, source_name: str) -> None:
    """Raise ModelError unless the session has poseloop's graph contract (see module doc)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    found = [(i.name, i.type, i.shape) for i in inputs]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(uint8)" \
            or len(inputs[0].shape) != 4 or inputs[0].shape[3] != 3:
        raise ModelError(
            f"{source_name}: graph input must be one uint8 N x H x W x 3 tensor named "
            f"{INPUT_NAME!r}, found {found}"
        )
    names = tuple(o.name for o in outputs)
    if names[:2] != OUTPUT_NAMES:
        raise ModelError(f"{source_name}: graph outputs must be {OUTPUT_NAMES}, found {names}")


def output_names(spec: ModelSpec) -> tuple[str, ...]:
    """The graph outputs a model of ``spec`` has, in order."""
    if not spec.multi_animal:
        return OUTPUT_NAMES
    return OUTPUT_NAMES + MULTI_OUTPUT_NAMES[: 1 + spec.identity]
