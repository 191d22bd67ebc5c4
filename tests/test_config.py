"""Config files: the shipped example loads; bad values name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from poseloop.config import TrainConfig, dump_yaml, load_yaml
from poseloop.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_example_train_config_is_the_default() -> None:
    assert load_yaml(TrainConfig, CONFIGS / "train.yaml") == TrainConfig()


def test_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig(backbone="resnet50", output_stride=8, max_minutes=3)
    dump_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(TrainConfig, tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("backbone: vgg16\n", "backbone must be one of"),
        ("batch_size: 0\n", "field 'batch_size'"),
        ("iterations: many\n", "field 'iterations'"),
        ("augment: {crop_size: [100, 100]}\n", "multiples of 32"),
        ("augment: {rotation: 400}\n", "field 'augment.rotation'"),
        ("augment: {colour: 1}\n", "field 'augment.colour'"),
        ("learning_rate: 1\n", "field 'learning_rate'"),
        ("output_stride: 12\n", "field 'output_stride'"),
        ("[1, 2]\n", "expected a mapping"),
        ("a: [\n", "invalid YAML"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field) as e:
        load_yaml(TrainConfig, path)
    assert str(path) in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_yaml(TrainConfig, tmp_path / "none.yaml")
