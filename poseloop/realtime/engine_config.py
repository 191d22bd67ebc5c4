"""The experiment config of ``poseloop run``: one YAML file, validated into typed sections.

Every section and option has a working default: ``{}`` runs the synthetic camera through
the demo's synthetic model for ever. Unknown keys and bad values are ``ConfigError``s that
name the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from poseloop.config import Strict, load_yaml, validate
from poseloop.hardware.config import DeviceConfig
from poseloop.realtime.camera_config import CameraConfig, SyntheticConfig
from poseloop.rules import Rule, describe_errors
from poseloop.stream.config import StreamConfig


class RunnerConfig(Strict):
    """ONNX Runtime execution: providers in priority order, threads, TensorRT options."""

    providers: list[Literal["tensorrt", "cuda", "cpu"]] = Field(
        default_factory=lambda: ["cpu"], min_length=1
    )
    allow_fallback: bool = Field(False, description="use what is available instead of failing")
    intra_threads: int | None = Field(None, ge=1, description="None = ORT's default (cores)")
    inter_threads: int | None = Field(None, ge=1)
    device_id: int = Field(0, ge=0)
    trt_cache_dir: str | None = Field(None, description="TensorRT engine cache folder")
    trt_fp16: bool = False


class PreprocessConfig(Strict):
    """Frame -> network input: static crop, extra resize, dynamic crop around the animal."""

    resize: float = Field(1.0, gt=0, le=4, description="extra factor on the model's scale")
    crop: tuple[int, int, int, int] | None = Field(None, description="x1, x2, y1, y2 in px")
    dynamic: bool = Field(False, description="crop around the last confident pose")
    dynamic_pcutoff: float | None = Field(None, ge=0, le=1, description="None = model pcutoff")
    dynamic_margin: float = Field(20.0, ge=0, description="pixels around the bodyparts")


class KalmanConfig(Strict):
    """Latency compensation by Kalman forward prediction (see KalmanPredictor)."""

    type: Literal["kalman"] = "kalman"
    latency_ms: float | None = Field(None, ge=0, description="None = each frame's measured")
    order: Literal[1, 2] = 1
    pcutoff: float | None = Field(None, ge=0, le=1, description="None = model pcutoff")
    measurement_noise: float = Field(3.0, gt=0)
    process_noise: float = Field(3000.0, gt=0)
    max_gap_ms: float = Field(250.0, gt=0)


class PythonProcessorConfig(Strict):
    """Any object with DeepLabCut-Live's ``process(pose, **kwargs)``, by import path."""

    type: Literal["python"] = "python"
    target: str = Field(description="'package.module:ClassName'")
    kwargs: dict[str, Any] = Field(default_factory=dict)


ProcessorConfig = Annotated[KalmanConfig | PythonProcessorConfig, Field(discriminator="type")]


class RecordConfig(Strict):
    """Recording of poses (DeepLabCut layout), per-frame timings and optionally the video."""

    dir: str | None = Field(None, description="output folder; None = do not record")
    name: str = Field("session", min_length=1, description="file stem")
    video: bool = Field(False, description="also record the frames (<name>.mkv, MPEG-4)")
    queue_size: int = Field(4096, ge=1, description="poses in flight before one is dropped")
    flush_s: float = Field(2.0, gt=0, le=3600,
                           description="seconds between appends to the files (crash exposure)")
    if_exists: Literal["number", "overwrite", "error"] = Field(
        "number", description="an earlier recording of this name: keep it and number the new "
        "one (name-2, ...), replace it, or refuse to start"
    )
    on_error: Literal["stop", "continue"] = Field(
        "stop", description="a write error (disk full, ...) stops the run, or is only counted"
    )


class EngineConfig(Strict):
    """A whole live experiment."""

    model: str | None = Field(None, description="exported .onnx; None = the demo's model")
    camera: CameraConfig = Field(default_factory=lambda: CameraConfig(SyntheticConfig()))
    camera_timeout_s: float = Field(2.0, gt=0, description="no frame for this long = error")
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    processors: list[ProcessorConfig] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    devices: list[DeviceConfig] = Field(default_factory=list)
    stream: StreamConfig | None = Field(None, description="publish poses over ZeroMQ")
    record: RecordConfig = Field(default_factory=RecordConfig)
    max_frames: int | None = Field(None, ge=1)
    duration_s: float | None = Field(None, gt=0)
    display: bool = Field(False, description="show frames with the pose drawn (needs a screen)")

    @field_validator("rules", mode="wrap")
    @classmethod
    def _rule_errors(cls, value: Any, handler: Any) -> list[Rule]:
        """Rule errors worded as ``poseloop.rules`` words them (``rules[0].when.all[1]...``)."""
        try:
            return handler(value)
        except ValidationError as e:
            raise ValueError(describe_errors(e, "rules")) from None


def with_overrides(cfg: EngineConfig, source: str = "command line", **updates: Any
                   ) -> EngineConfig:
    """A copy of ``cfg`` with top-level fields replaced (None = keep), validated again."""
    data = cfg.model_dump(by_alias=True)
    data.update({k: v for k, v in updates.items() if v is not None})
    return validate(EngineConfig, data, source)


def load_engine_config(source: str | Path | dict | EngineConfig | None) -> EngineConfig:
    """An EngineConfig from a YAML path, a mapping, or itself (None = all defaults).

    Relative paths in the file (model, video source, record dir) are taken relative to the
    file's folder, so a config runs from any working directory.
    """
    if source is None:
        return EngineConfig()
    if isinstance(source, EngineConfig):
        return source
    if isinstance(source, dict):
        return validate(EngineConfig, source, "engine config")
    path = Path(source)
    cfg = load_yaml(EngineConfig, path)
    base = path.resolve().parent
    if cfg.model and not Path(cfg.model).is_absolute():
        cfg.model = str(base / cfg.model)
    cam = cfg.camera.root
    if getattr(cam, "kind", "") == "opencv" and isinstance(cam.source, str):
        if not Path(cam.source).is_absolute() and (base / cam.source).exists():
            cam.source = str(base / cam.source)
    return cfg
