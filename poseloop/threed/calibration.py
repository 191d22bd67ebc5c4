"""A rig of calibrated cameras, read from and written to anipose's ``calibration.toml``.

The format (aniposelib's ``CameraGroup.dump``): one table per camera, ``[cam_0]``,
``[cam_1]``, ... in the rig's order, each with ``name``, ``size`` ([width, height] px),
``matrix`` (3 x 3 intrinsics), ``distortions`` (OpenCV's k1, k2, p1, p2, k3; fewer are
padded with zeros), ``rotation`` (Rodrigues vector) and ``translation`` (world -> camera, in
the rig's unit); an optional ``[metadata]`` table is kept as it is. Every error names the
file, the camera and the field.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from poseloop.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # pyright: ignore[reportMissingImports]

N_DISTORTIONS = 5  # OpenCV's k1, k2, p1, p2, k3


class CalibrationError(ConfigError):
    """A calibration file that cannot be used; the message names the camera and field."""


@dataclass
class CameraCalibration:
    """One camera: intrinsics, distortion and its pose (world -> camera)."""

    name: str
    size: tuple[int, int]  # width, height in pixels
    matrix: np.ndarray  # 3 x 3
    distortions: np.ndarray  # k1, k2, p1, p2, k3
    rotation: np.ndarray  # Rodrigues vector, world -> camera
    translation: np.ndarray  # world -> camera

    @property
    def rotation_matrix(self) -> np.ndarray:
        return cv2.Rodrigues(np.asarray(self.rotation, np.float64))[0]

    @property
    def extrinsics(self) -> np.ndarray:
        """[R | t], 3 x 4: world point -> this camera's (undistorted, normalised) frame."""
        return np.hstack([self.rotation_matrix, np.asarray(self.translation, float)[:, None]])

    @property
    def center(self) -> np.ndarray:
        """The camera's position in world coordinates."""
        return -self.rotation_matrix.T @ np.asarray(self.translation, float)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (... x 3) -> pixels (... x 2), with distortion (OpenCV's model)."""
        pts = np.asarray(points, np.float64).reshape(-1, 1, 3)
        out, _ = cv2.projectPoints(pts, np.asarray(self.rotation, float),
                                   np.asarray(self.translation, float), self.matrix,
                                   self.distortions)
        return out.reshape(*np.shape(points)[:-1], 2)


@dataclass
class Rig:
    """The calibrated cameras, in the file's order, and the file's metadata table."""

    cameras: list[CameraCalibration]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def index(self, name: str, where: str = "") -> int:
        """The position of camera ``name``; CalibrationError listing the rig's if absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise CalibrationError(f"{where}camera {name!r} is not in the calibration (its "
                                   f"cameras: {', '.join(self.names)})") from None

    def __len__(self) -> int:
        return len(self.cameras)


def read_calibration(path: str | Path) -> Rig:
    """The rig described by an anipose ``calibration.toml`` (see the module docstring)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise CalibrationError(f"{path}: not a readable TOML calibration file: {e}") from None
    sections = [k for k in data if k.startswith("cam_")]
    try:
        order = sorted(sections, key=lambda k: int(k[4:]))
    except ValueError:
        bad = next(k for k in sections if not k[4:].isdigit())
        raise CalibrationError(f"{path}: section [{bad}]: camera sections are [cam_0], "
                               f"[cam_1], ...") from None
    if not order:
        raise CalibrationError(f"{path}: no camera sections ([cam_0], [cam_1], ...)")
    cameras = [_camera(path, key, data[key]) for key in order]
    names = [c.name for c in cameras]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CalibrationError(f"{path}: camera name {repeated[0]!r} is used twice")
    metadata = data.get("metadata", {})
    return Rig(cameras, metadata if isinstance(metadata, dict) else {})


def _camera(path: Path, key: str, table: Any) -> CameraCalibration:
    if not isinstance(table, dict):
        raise CalibrationError(f"{path}: [{key}] must be a table of fields")
    where = f"{path}: camera {table.get('name', key)!r} ([{key}])"

    def array(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in table:
            raise CalibrationError(f"{where}: field '{name}' is missing")
        try:
            value = np.asarray(table[name], np.float64)
        except (TypeError, ValueError):
            raise CalibrationError(f"{where}: field '{name}' must be numbers, got "
                                   f"{table[name]!r}") from None
        if name == "distortions" and value.ndim == 1 and 0 < value.size <= N_DISTORTIONS:
            value = np.pad(value, (0, N_DISTORTIONS - value.size))
        if value.shape != shape:
            raise CalibrationError(f"{where}: field '{name}' must have shape {shape}, got "
                                   f"{value.shape}")
        if not np.isfinite(value).all():
            raise CalibrationError(f"{where}: field '{name}' holds a non-finite value")
        return value

    name = table.get("name", key)
    if not isinstance(name, str) or not name:
        raise CalibrationError(f"{where}: field 'name' must be a non-empty string")
    size = array("size", (2,))
    if (size <= 0).any() or (size != np.round(size)).any():
        raise CalibrationError(f"{where}: field 'size' must be [width, height] in whole "
                               f"pixels, got {table['size']!r}")
    matrix = array("matrix", (3, 3))
    if matrix[0, 0] <= 0 or matrix[1, 1] <= 0 or matrix[2, 2] != 1 \
            or matrix[1, 0] or matrix[2, 0] or matrix[2, 1]:
        raise CalibrationError(f"{where}: field 'matrix' is not an intrinsics matrix "
                               f"[[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
    return CameraCalibration(
        name=name, size=(int(size[0]), int(size[1])), matrix=matrix,
        distortions=array("distortions", (N_DISTORTIONS,)),
        rotation=array("rotation", (3,)), translation=array("translation", (3,)),
    )


def write_calibration(rig: Rig, path: str | Path) -> Path:
    """Write ``rig`` as anipose's calibration.toml (aniposelib reads it back)."""
    lines: list[str] = []
    for i, cam in enumerate(rig.cameras):
        lines += [
            f"[cam_{i}]",
            f"name = {_toml_string(cam.name)}",
            f"size = [ {cam.size[0]}, {cam.size[1]},]",
            f"matrix = {_toml_array(cam.matrix)}",
            f"distortions = {_toml_array(cam.distortions)}",
            f"rotation = {_toml_array(cam.rotation)}",
            f"translation = {_toml_array(cam.translation)}",
            "",
        ]
    if rig.metadata:
        lines.append("[metadata]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in rig.metadata.items()]
        lines.append("")
    path = Path(path)
    path.write_text("\n".join(lines))
    return path


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_array(values: np.ndarray) -> str:
    values = np.asarray(values)
    if values.ndim > 1:
        return "[ " + " ".join(_toml_array(v) + "," for v in values) + "]"
    return "[ " + " ".join(f"{_toml_float(float(v))}," for v in values) + "]"


def _toml_float(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"calibration values must be finite, got {v}")
    return repr(v)


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[ " + " ".join(_toml_value(x) + "," for x in v) + "]"
    raise ValueError(f"metadata value {v!r} cannot be written to TOML")
