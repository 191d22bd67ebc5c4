"""The experiment config of ``poseloop run``: one YAML file, validated into typed sections.

Every section and option has a working default, defined once, in the section's class beside
the part it configures: ``{}`` runs the synthetic camera through the demo's synthetic model
for ever. Unknown keys and bad values are ``ConfigError``s that name the file and the field.

Sinks are registered (:data:`poseloop.realtime.sinks.SINKS`): each registered name is a
top-level section (``record:``, ``stream:``, ``lsl:``, ``display:``) validated by the sink's
own config class. A section that is absent, ``null`` or ``false`` is off; ``true`` is on with
its defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SerializationInfo,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import LiteralString

from poseloop.config import load_yaml, validate
from poseloop.hardware.config import DeviceConfig
from poseloop.realtime.camera_config import CameraConfig, OpenCVConfig, SyntheticConfig
from poseloop.realtime.cameras.group import GroupConfig
from poseloop.realtime.engine import LoopConfig
from poseloop.realtime.preprocess import PreprocessConfig
from poseloop.realtime.processors import ProcessorConfig
from poseloop.realtime.runner import RunnerConfig
from poseloop.realtime.sinks import SINKS, load_sinks
from poseloop.rules import Rule, describe_errors

load_sinks()


class EngineConfig(LoopConfig):
    """A whole live experiment: the parts and, as top-level sections, the sinks."""

    model: str | None = Field(default=None, description="exported .onnx; None = the demo's model")
    camera: CameraConfig = Field(default_factory=lambda: CameraConfig(SyntheticConfig()))
    group: GroupConfig | None = Field(
        default=None, description="several calibrated cameras -> 3D poses (instead of camera)")
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    processors: list[ProcessorConfig] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    devices: list[DeviceConfig] = Field(default_factory=list)
    _sinks: dict[str, BaseModel | None] = PrivateAttr(default_factory=dict)

    @property
    def sinks(self) -> dict[str, BaseModel | None]:
        """Every registered sink's section by name; None = that sink is off."""
        return dict(self._sinks)

    @model_validator(mode="after")
    def _one_source(self) -> EngineConfig:
        if self.group is not None and "camera" in self.model_fields_set:
            raise ValueError("give camera (one camera) or group (several), not both")
        return self

    @field_validator("rules", mode="wrap")
    @classmethod
    def _rule_errors(cls, value: Any, handler: Any) -> list[Rule]:
        """Rule errors worded as ``poseloop.rules`` words them (``rules[0].when.all[1]...``)."""
        try:
            return handler(value)
        except ValidationError as e:
            raise ValueError(describe_errors(e, "rules")) from None

    @model_validator(mode="wrap")
    @classmethod
    def _sink_sections(cls, data: Any, handler: Any) -> Any:
        """Validate the registered sink sections with their own classes, errors with paths."""
        if not isinstance(data, dict):
            return handler(data)
        data = dict(data)
        sections: dict[str, BaseModel | None] = {entry.name: None for entry in SINKS}
        errors: list[InitErrorDetails] = []
        for entry in SINKS:
            raw = data.pop(entry.name, None)
            if raw is None or raw is False:
                continue
            assert entry.config is not None, f"sink {entry.name} has no config section"
            try:
                sections[entry.name] = entry.config.model_validate({} if raw is True else raw)
            except ValidationError as e:
                errors += _located(e, (entry.name,))
        try:
            config = handler(data)
        except ValidationError as e:
            raise ValidationError.from_exception_data(cls.__name__, _located(e) + errors) from None
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        config._sinks = sections
        return config

    @model_serializer(mode="wrap")
    def _dump_sinks(self, handler: Any, info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        if self.group is not None:  # the camera is the group's: a dump reads back
            data.pop("camera", None)
        for name, section in self.sinks.items():
            data[name] = None if section is None else section.model_dump(
                mode=info.mode, by_alias=bool(info.by_alias))
        return data


def _located(error: ValidationError, prefix: tuple[str, ...] = ()) -> list[InitErrorDetails]:
    """The error's details again, each located under ``prefix``, with its message as it was
    (custom error types, e.g. a camera's, cannot be re-raised by their type name)."""
    return [{"type": PydanticCustomError(cast(LiteralString, e["type"]),
                                         cast(LiteralString, e["msg"])),
             "loc": (*prefix, *e["loc"]), "input": e["input"]} for e in error.errors()]


def with_overrides(cfg: EngineConfig, source: str = "command line", **updates: Any
                   ) -> EngineConfig:
    """A copy of ``cfg`` with top-level fields or sink sections replaced (None = keep),
    validated again."""
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
    cameras = [cfg.camera] if cfg.group is None else cfg.group.cameras
    for section in cameras:
        cam = section.root
        if isinstance(cam, OpenCVConfig) and isinstance(cam.source, str):
            if not Path(cam.source).is_absolute() and (base / cam.source).exists():
                cam.source = str(base / cam.source)
    if cfg.group is not None:
        tri = cfg.group.triangulation
        if not Path(tri.calibration).is_absolute():
            tri.calibration = str(base / tri.calibration)
    return cfg
