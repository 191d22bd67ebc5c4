"""Typed, validated configuration objects loaded from YAML.

Every option has a default that works. Unknown keys, wrong types and out-of-range values
are rejected with a ``ConfigError`` that names the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from poseloop.errors import ConfigError

BACKBONES = (
    "mobilenet_v2",
    "mobilenet_v2_0.75",
    "mobilenet_v2_0.5",
    "mobilenet_v2_0.35",
    "resnet50",
    "efficientnet_b0",
)


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class AugmentConfig(Strict):
    """Label-preserving augmentation applied to every training sample."""

    crop_size: tuple[int, int] | Literal["auto"] = Field(
        default="auto",
        description="training crop (width, height), or 'auto': the labels' spread plus context",
    )
    global_scale: float | Literal["auto"] = Field(
        default="auto", description="scale applied at training and test, or 'auto': from the "
        "labels' spread (see animal_size), never enlarging",
    )
    animal_size: int = Field(
        default=256, ge=32, le=1024,
        description="with global_scale auto: network pixels the labels' spread is scaled to",
    )
    min_part_distance: float = Field(
        default=8.0, ge=0, le=64, description="with global_scale auto: the scale keeps the "
        "typical distance between neighbouring parts at least this many network pixels",
    )
    context: float = Field(
        default=0.25, ge=0, le=2,
        description="with crop_size auto: margin around the labels' spread, per side, in spreads",
    )
    scale_range: float = Field(
        default=0.25, ge=0, lt=1, description="scale jitter: global_scale*(1±r)"
    )
    rotation: float = Field(default=25.0, ge=0, le=180, description="max rotation in degrees")
    crop_on_keypoint: float = Field(
        default=0.7, ge=0, le=1,
        description="probability of a crop around the labeled points (else anywhere)",
    )
    hflip: bool = Field(
        default=False, description="random horizontal flips (needs left/right pairs)"
    )
    flip_pairs: list[tuple[str, str]] | Literal["auto"] = Field(
        default="auto", description="bodyparts swapped by a flip; 'auto' pairs left*/right* names"
    )
    brightness: float = Field(
        default=0.25, ge=0, le=1, description="max relative brightness change"
    )
    contrast: float = Field(default=0.25, ge=0, le=1, description="max relative contrast change")
    blur_prob: float = Field(default=0.2, ge=0, le=1, description="probability of a Gaussian blur")
    noise_std: float = Field(
        default=4.0, ge=0, le=64, description="max std of Gaussian pixel noise"
    )

    @model_validator(mode="after")
    def _crop_multiple_of_32(self) -> AugmentConfig:
        if self.crop_size != "auto":
            for v in self.crop_size:
                if v < 64 or v % 32:
                    raise ValueError(
                        f"crop_size values must be multiples of 32 and >= 64, got {v}"
                    )
        return self

    @property
    def crop(self) -> tuple[int, int]:
        """The crop (width, height) of a resolved config (see poseloop.training.recipe)."""
        if self.crop_size == "auto":
            raise ConfigError("augment.crop_size is 'auto': resolve the recipe first")
        return self.crop_size

    @property
    def scale(self) -> float:
        """The global scale of a resolved config (see poseloop.training.recipe)."""
        if self.global_scale == "auto":
            raise ConfigError("augment.global_scale is 'auto': resolve the recipe first")
        return self.global_scale


#: Steps of a run with neither ``iterations`` nor ``max_minutes`` set.
DEFAULT_ITERATIONS = 3000


class TrainConfig(Strict):
    """Everything a training run needs besides the project; saved in the run folder."""

    backbone: str = Field(default="mobilenet_v2", description=f"one of {', '.join(BACKBONES)}")
    weights: str = Field(
        default="imagenet", description="'imagenet', 'none', or a local weights file"
    )
    output_stride: Literal[8, 16, 32] | None = Field(
        default=None,
        description="backbone stride; None = 16 for mobilenet/resnet, 32 for efficientnet",
    )
    iterations: int | None = Field(
        default=None, ge=1,
        description=f"optimizer steps; None = {DEFAULT_ITERATIONS}, or no limit with max_minutes",
    )
    max_minutes: float | None = Field(
        default=None, gt=0, description="training-time budget; the schedule ends with it"
    )
    batch_size: int = Field(default=8, ge=1, le=256)
    lr: float = Field(default=1e-3, gt=0, lt=1, description="peak learning rate (AdamW)")
    weight_decay: float = Field(default=1e-4, ge=0, lt=1)
    warmup_iterations: int = Field(default=100, ge=0)
    locref_weight: float = Field(default=0.05, ge=0, description="weight of the Huber locref loss")
    pos_dist_thresh: float = Field(default=17.0, gt=0, description="target disk radius in pixels")
    locref_stdev: float = Field(default=7.2801, gt=0)
    paf_width: float = Field(
        default=20.0, gt=0, description="multi-animal: width of a limb's part affinity field (px)"
    )
    paf_weight: float = Field(
        default=0.1, ge=0, description="multi-animal: weight of the part affinity field loss"
    )
    identity_weight: float = Field(
        default=0.1, ge=0, description="multi-animal with identity: weight of the identity loss"
    )
    seed: int = Field(default=0, ge=0, description="seed of the train/test split and of training")
    training_fraction: float | None = Field(
        default=None, gt=0, le=1, description="None = the project's TrainingFraction"
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto",
        description="auto: bf16 autocast for backbones it speeds up (resnet50) on CPUs with "
        "bf16 units, else fp32",
    )
    curve_points: int = Field(
        default=20, ge=0, le=1000,
        description="evaluations of train/test RMSE during training (the learning curve)",
    )
    checkpoint_every: int = Field(default=500, ge=1, description="iterations between checkpoints")
    threads: int | None = Field(
        default=None, ge=1, description="torch threads; None = available cores"
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="after")
    def _known_backbone(self) -> TrainConfig:
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}"
            )
        return self

    @property
    def budget_s(self) -> float:
        """The training-time budget in seconds (infinite without max_minutes)."""
        return self.max_minutes * 60 if self.max_minutes else math.inf

    @property
    def step_limit(self) -> float:
        """Optimizer steps at most: iterations, else unlimited under a time budget."""
        if self.iterations is not None:
            return self.iterations
        return math.inf if self.max_minutes else DEFAULT_ITERATIONS


M = TypeVar("M", bound=BaseModel)


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for e in error.errors():
        # a tagged union puts its tag in the path ("when.all.all.0"): said once is enough
        loc = [p for i, p in enumerate(e["loc"]) if i + 1 == len(e["loc"]) or p != e["loc"][i + 1]]
        where = ".".join(str(p) for p in loc) or "(top level)"
        lines.append(f"{source}: field '{where}': {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def validate(model: type[M], data: Any, source: str = "config") -> M:
    """Validate a mapping into ``model``; raise ConfigError naming source and field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of options, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, source)) from None


def load_yaml(model: type[M], path: str | Path) -> M:
    """Read a YAML file safely and validate it into ``model``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    return validate(model, data, str(path))


def dump_yaml(config: BaseModel, path: str | Path) -> None:
    """Write a config as YAML that ``load_yaml`` reads back to an equal object."""
    data = config.model_dump(mode="json")
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
