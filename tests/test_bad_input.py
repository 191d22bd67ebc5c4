"""Bad input gets a clear error naming the item (issue 6), found by property-based testing.

Configs (random wrong types, unknown keys, out-of-range values in every section), label files
(random text in any cell), models (wrong input rank) and frames (random shapes and dtypes):
each either works or raises the one poseloop error for it, naming the file, field, row or
frame. Hand-written cases for each kind live beside their modules' tests.
"""

from __future__ import annotations

import copy
import shutil
import string
from pathlib import Path
from typing import Any, get_args, get_origin

import numpy as np
import pytest
import yaml
from annotated_types import Ge, Gt, Le, Lt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, RootModel

from poseloop.config import Strict, TrainConfig, load_yaml, validate
from poseloop.errors import ConfigError, FrameError, ModelError, ProjectError
from poseloop.project import read_project
from poseloop.realtime.camera_config import OpenCVConfig, SyntheticConfig
from poseloop.realtime.engine_config import EngineConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FUZZ = settings(deadline=None, max_examples=max(150, settings.default.max_examples))


def _examples() -> list[tuple[type[BaseModel], dict]]:
    """Every shipped config as a plain mapping, with the model it validates into."""
    out: list[tuple[type[BaseModel], dict]] = [(TrainConfig, TrainConfig().model_dump())]
    for path in sorted(CONFIGS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        model = TrainConfig if path.name == "train.yaml" else EngineConfig
        validate(model, data, str(path))  # they are valid to begin with
        out.append((model, data))
    return out


EXAMPLES = _examples()


def _leaves(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every value (leaves and sub-trees) in a nested mapping/list."""
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _leaves(value, (*path, i))
    return found


def _mappings(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every mapping in a nested structure (the root included)."""
    found = [path] if isinstance(node, dict) else []
    children = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in children:
        found += _mappings(value, (*path, key))
    return found


def _get(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


def _named(message: str, path: tuple) -> bool:
    """Whether a ConfigError message names the field at ``path`` (or the mapping holding it,
    for checks across fields): its first key and, when given, its last string key."""
    keys = [k for k in path if isinstance(k, str)]
    return keys[0] in message and (keys[-1] in message or ".".join(map(str, path[:-1]))
                                   in message.replace("[", ".").replace("]", ""))


junk = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(-5, 5), max_size=4), st.dictionaries(st.text(max_size=4),
                                                              st.integers(), max_size=2),
)


@FUZZ
@given(data=st.data())
def test_a_wrong_value_anywhere_is_a_config_error_naming_the_field(data: st.DataObject) -> None:
    model, example = data.draw(st.sampled_from(EXAMPLES), label="config")
    path = data.draw(st.sampled_from(_leaves(example)), label="path")
    value = data.draw(junk, label="value")
    config = copy.deepcopy(example)
    _get(config, path[:-1])[path[-1]] = value
    try:
        validated = validate(model, config, "fuzzed.yaml")
    except ConfigError as e:
        message = str(e)
        assert message.startswith("fuzzed.yaml: field '"), message
        if any(isinstance(k, str) for k in path):
            assert _named(message, path), (path, message)
    else:  # accepted: it must survive a round trip
        assert validate(model, validated.model_dump(mode="json", by_alias=True)) == validated


@FUZZ
@given(data=st.data())
def test_an_unknown_key_anywhere_is_named(data: st.DataObject) -> None:
    model, example = data.draw(st.sampled_from(EXAMPLES), label="config")
    where = data.draw(st.sampled_from(_mappings(example)), label="mapping")
    node = _get(example, where)
    if "kwargs" in where or (where and where[-1] == "outputs"):
        return  # free-form mappings: any key is allowed there
    key = "zz" + data.draw(st.text(string.ascii_lowercase + "_", max_size=8), label="key")
    config = copy.deepcopy(example)
    _get(config, where)[key] = data.draw(junk, label="value")
    assert key not in node
    with pytest.raises(ConfigError, match=key):
        validate(model, config, "fuzzed.yaml")


def _bounded_fields(model: type[BaseModel], path: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, bound) for every numeric bound of a config model and its sections."""
    found = []
    for name, info in model.model_fields.items():
        for bound in info.metadata:
            if isinstance(bound, Ge | Gt | Le | Lt):
                found.append(((*path, name), bound))
        here = (*path, name, 0) if get_origin(info.annotation) is list else (*path, name)
        for sub in (info.annotation, *get_args(info.annotation)):
            if isinstance(sub, type) and issubclass(sub, Strict) and not issubclass(sub, RootModel):
                found += _bounded_fields(sub, here)
    return found


BOUNDED = (
    [(TrainConfig, p, b) for p, b in _bounded_fields(TrainConfig)]
    + [(EngineConfig, p, b) for p, b in _bounded_fields(EngineConfig)]
    + [(EngineConfig, ("camera", *p), b) for cam in (SyntheticConfig, OpenCVConfig)
       for p, b in _bounded_fields(cam)]
)


@FUZZ
@given(data=st.data())
def test_an_out_of_range_number_is_named_with_its_limit(data: st.DataObject) -> None:
    model, path, bound = data.draw(st.sampled_from(BOUNDED), label="field")
    if isinstance(bound, Ge | Gt):
        limit = bound.ge if isinstance(bound, Ge) else bound.gt
        value = data.draw(st.floats(max_value=limit, exclude_max=isinstance(bound, Ge),
                                    min_value=limit - 1e6), label="value")
    else:
        limit = bound.le if isinstance(bound, Le) else bound.lt
        value = data.draw(st.floats(min_value=limit, exclude_min=isinstance(bound, Le),
                                    max_value=limit + 1e6), label="value")
    if isinstance(limit, int) and value == int(value):
        value = int(value)
    config: dict = {}
    node = config
    if path[0] == "camera":
        kind = "synthetic" if path[1] in SyntheticConfig.model_fields else "opencv"
        config["camera"] = node = {"kind": kind}
        path = path[1:]
    for key, after in zip(path[:-1], path[1:], strict=True):
        if isinstance(after, int):
            node = node.setdefault(key, [{}])
        elif isinstance(key, int):
            node = node[key]
        else:
            node = node.setdefault(key, {})
    node[path[-1]] = value
    last = path[-1]  # rule errors are worded as rules[0].when...: the list keeps its index
    with pytest.raises(ConfigError, match=rf"(field '[\w.]*{last}'|\]\.{last}: )"):
        validate(model, config, "fuzzed.yaml")


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=80))
def test_any_yaml_text_is_a_config_or_a_config_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("yaml") / "run.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_yaml(EngineConfig, path)
    except ConfigError as e:
        assert str(path) in str(e)


# --- label files -----------------------------------------------------------------------------

CELL = st.one_of(
    st.text(string.printable.translate(str.maketrans("", "", ',"\n\r\x0b\x0c')), max_size=10),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["NaN", "nan", "", " ", "None", "inf", "-1e9", "1e30", "12.5abc"]),
)


@pytest.fixture(scope="module")
def labels_project(synthetic_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the synthetic project labeled by CSV only."""
    dst = tmp_path_factory.mktemp("labels") / "project"
    shutil.copytree(synthetic_project, dst, ignore=shutil.ignore_patterns("*.h5", "videos"))
    return dst


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_corrupt_label_cell_is_named_by_file_row_and_column(labels_project: Path,
                                                             data: st.DataObject) -> None:
    csv = next(labels_project.glob("labeled-data/*/CollectedData_*.csv"))
    original = csv.read_text()
    lines = original.splitlines()
    row = data.draw(st.integers(3, len(lines) - 1), label="line")
    col = data.draw(st.integers(1, len(lines[row].split(",")) - 1), label="column")
    value = data.draw(CELL, label="value")
    cells = lines[row].split(",")
    cells[col] = value
    lines[row] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    part = lines[1].split(",")[col] + "/" + lines[2].split(",")[col]
    image = cells[0]
    try:
        project = read_project(labels_project)
        frame = next((f for f in project.frames if f.image == image), None)
        if frame is not None:
            project.load_image(frame)  # checks the labels against the image size
    except ProjectError as e:
        message = str(e)
        assert csv.name in message and image in message, message
        assert part in message or part.split("/")[0] in message, message
    finally:
        csv.write_text(original)


# --- models and frames -----------------------------------------------------------------------

def _rank3_model(path: Path, metadata_from: Path | None) -> Path:
    """A valid ONNX graph whose input is H x W x 3 (rank 3), optionally with poseloop's
    metadata copied from another model."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["H", "W", 3])
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["H", "W", 3])
               for n in ("scoremap", "locref")]
    graph = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["scoremap"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["image"], ["locref"], to=TensorProto.FLOAT)],
        "rank3", [image], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata_from is not None:
        for prop in onnx.load(str(metadata_from)).metadata_props:
            model.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("kind", "message"), [
    ("truncated", r"truncated\.onnx: "),
    ("foreign", r"foreign\.onnx: .*poseloop"),
    ("rank3", r"rank3\.onnx: graph input must be one uint8 N x H x W x 3 tensor named 'image', "
              r"found \[\('image'"),
])
def test_a_bad_model_is_refused_naming_the_file(synthetic_onnx: Path, tmp_path: Path,
                                               capsys, kind: str, message: str) -> None:
    pytest.importorskip("onnx")
    import re

    from poseloop.cli import main
    from poseloop.realtime.runner import OrtRunner

    path = tmp_path / f"{kind}.onnx"
    if kind == "truncated":
        data = synthetic_onnx.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        _rank3_model(path, synthetic_onnx if kind == "rank3" else None)
    with pytest.raises(ModelError, match=message):
        OrtRunner(path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": str(path), "max_frames": 5}))
    assert main(["run", str(config)]) == 2  # a clear error, no traceback
    assert re.search(message, capsys.readouterr().err)


DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])


@pytest.fixture(scope="module")
def engine(synthetic_onnx: Path):
    from poseloop.realtime.engine import Engine

    cfg = {"model": str(synthetic_onnx), "runner": {"intra_threads": 1},
           "camera": {"kind": "synthetic", "width": 96, "height": 64}}
    with Engine.from_config(cfg) as engine:
        yield engine


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(0, 130), min_size=0, max_size=4), dtype=DTYPES,
       index=st.integers(0, 10**6))
def test_a_wrong_frame_is_a_frame_error_naming_the_frame(engine, shape: list[int], dtype,
                                                        index: int) -> None:
    from poseloop.realtime.types import Frame

    frame = Frame(np.zeros(shape, dtype), index, 0)
    image_like = dtype is np.uint8 and (len(shape) == 2 or (len(shape) == 3
                                                            and shape[2] in (1, 3, 4)))
    scale = engine.preprocess.scale
    big_enough = len(shape) >= 2 and min(round(shape[0] * scale), round(shape[1] * scale)) >= 32
    try:
        pose = engine.step(frame)  # grey (H x W or x 1) and BGRA frames are converted
    except FrameError as e:
        assert not (image_like and big_enough), e
        assert f"frame {index}" in str(e), e
    else:
        assert image_like and big_enough, shape
        assert pose.frame_index == index and pose.points.shape == (1, 4, 3)
