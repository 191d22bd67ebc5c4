"""Offline triangulation of a 2D points table: ``poseloop triangulate``.

Input: a CSV with columns ``frame, animal, camera, bodypart, x, y`` (and optionally
``likelihood``, used as the view's weight), one row per point per view, as in
mouse8cams-SLEAP's ``labels2d.csv``; empty x/y = not seen in that view. Output: ``frame,
animal, bodypart, x, y, z, reprojection_error, n_cameras``, one row per (frame, animal,
bodypart), in the input's order of first appearance. Errors name the file, the row and the
column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from poseloop.errors import ConfigError
from poseloop.threed.calibration import Rig
from poseloop.threed.triangulate import Triangulator

REQUIRED = ("frame", "animal", "camera", "bodypart", "x", "y")
OUTPUT = ("frame", "animal", "bodypart", "x", "y", "z", "reprojection_error", "n_cameras")


def read_points_2d(path: str | Path, rig: Rig) -> tuple[list[tuple], np.ndarray, np.ndarray]:
    """(keys (frame, animal, bodypart), C x P x 2 pixels, C x P weights) of a 2D table."""
    path = Path(path)
    try:
        table = pd.read_csv(path, keep_default_na=True)
    except FileNotFoundError:
        raise ConfigError(f"{path}: points file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a readable CSV table: {e}") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ConfigError(f"{path}: column {missing[0]!r} is missing (needs "
                          f"{', '.join(REQUIRED)}; found {', '.join(map(str, table.columns))})")
    for column in ("x", "y", *(("likelihood",) if "likelihood" in table.columns else ())):
        values = pd.Series(pd.to_numeric(table[column], errors="coerce"), index=table.index)
        bad = values.isna() & table[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ConfigError(f"{path}: row {row + 2}, column {column!r}: "
                              f"{table[column].iloc[row]!r} is not a number")
        table[column] = values
    cameras = table["camera"].astype(str)
    unknown = sorted(set(cameras) - set(rig.names))
    if unknown:
        row = int(np.flatnonzero(cameras == unknown[0])[0])
        raise ConfigError(f"{path}: row {row + 2}, column 'camera': {unknown[0]!r} is not in "
                          f"the calibration (its cameras: {', '.join(rig.names)})")
    keys_col = list(zip(table["frame"], table["animal"].astype(str),
                        table["bodypart"].astype(str), strict=True))
    index: dict[tuple, int] = {}
    for key in keys_col:
        index.setdefault(key, len(index))
    cam_index = {name: i for i, name in enumerate(rig.names)}
    c = cameras.map(cam_index).to_numpy()
    p = np.array([index[k] for k in keys_col], np.int64)
    pixels = np.full((len(rig), len(index), 2), np.nan)
    weights = np.zeros((len(rig), len(index)))
    seen = np.zeros((len(rig), len(index)), np.int64)
    np.add.at(seen, (c, p), 1)
    if (seen > 1).any():
        ci, pi = np.argwhere(seen > 1)[0]
        key = list(index)[pi]
        raise ConfigError(f"{path}: frame {key[0]}, animal {key[1]!r}, bodypart {key[2]!r} "
                          f"appears twice for camera {rig.names[ci]!r}")
    pixels[c, p, 0] = table["x"].to_numpy(float)
    pixels[c, p, 1] = table["y"].to_numpy(float)
    weights[c, p] = (table["likelihood"].to_numpy(float) if "likelihood" in table.columns
                     else 1.0)
    return list(index), pixels, weights


def triangulate_table(rig: Rig, points_2d: str | Path, out: str | Path,
                      min_cameras: int = 2, reject_px: float = 0.0) -> pd.DataFrame:
    """Triangulate a 2D points table (see the module docstring) into ``out``; returns it."""
    keys, pixels, weights = read_points_2d(points_2d, rig)
    points, errors, counts, _ = Triangulator(rig, min_cameras, reject_px)(pixels, weights)
    table = pd.DataFrame(keys, columns=["frame", "animal", "bodypart"])
    table["x"], table["y"], table["z"] = points[:, 0], points[:, 1], points[:, 2]
    table["reprojection_error"] = errors
    table["n_cameras"] = counts
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(out)  # whole or absent: never half a table
    return table
