"""DeepLabCut pose tables (``.h5`` or ``.csv``; single- or multi-animal) read back as arrays.

``poseloop analyze`` and live recordings write these; labeled videos, plots and outlier
extraction read them as a ``PoseTable``: ``points`` frames x N x K x 3 (x, y, likelihood)
with the frame index of every row, the individuals and bodyparts. Unique bodyparts of a
multi-animal table (individual ``single``) are kept apart in ``unique``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from poseloop.errors import ProjectError
from poseloop.project import header_rows
from poseloop.realtime.types import UNIQUE_INDIVIDUAL


@dataclass
class PoseTable:
    """Poses of a video: rows are frames (``frames`` holds each row's frame index)."""

    points: np.ndarray  # frames x N x K x 3
    frames: np.ndarray  # frame index of each row
    individuals: list[str]
    bodyparts: list[str]
    scorer: str
    multi_animal: bool
    unique: np.ndarray | None = None  # frames x U x 3
    unique_bodyparts: tuple[str, ...] = ()

    def row_of(self) -> dict[int, int]:
        """Frame index -> row."""
        return {int(f): i for i, f in enumerate(self.frames)}


def read_pose_table(path: str | Path) -> PoseTable:
    """Read a pose table; ProjectError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: pose file not found")
    try:
        if path.suffix == ".h5":
            df = pd.read_hdf(path)
        else:
            df = pd.read_csv(path, header=list(range(header_rows(path))), index_col=0)
    except Exception as e:  # pandas raises many kinds for a file that is not a table
        raise ProjectError(f"{path}: not a readable pose table ({type(e).__name__}: {e})") from e
    if not isinstance(df, pd.DataFrame) or df.columns.nlevels not in (3, 4):
        raise ProjectError(f"{path}: expected DeepLabCut's pose table (scorer[, individuals], "
                           "bodyparts, coords columns)")
    multi = df.columns.nlevels == 4
    scorer = str(df.columns.get_level_values(0)[0])
    coords = df.columns.get_level_values(-1)
    if set(coords) - {"x", "y", "likelihood"}:
        raise ProjectError(f"{path}: unknown coordinate columns {sorted(set(coords))}")
    if not multi:
        parts = list(dict.fromkeys(df.columns.get_level_values(1)))
        points = _block(df, path, parts)[:, None]
        return PoseTable(points, _frames(df), ["animal"], parts, scorer, False)
    who = df.columns.get_level_values(1)
    individuals = [i for i in dict.fromkeys(who) if i != UNIQUE_INDIVIDUAL]
    first = df.loc[:, who == individuals[0]]
    parts = list(dict.fromkeys(first.columns.get_level_values(2)))
    points = np.stack([_block(df.loc[:, who == i], path, parts) for i in individuals], axis=1)
    unique = None
    unique_parts: tuple[str, ...] = ()
    if UNIQUE_INDIVIDUAL in set(who):
        block = df.loc[:, who == UNIQUE_INDIVIDUAL]
        unique_parts = tuple(dict.fromkeys(block.columns.get_level_values(2)))
        unique = _block(block, path, list(unique_parts))
    return PoseTable(points, _frames(df), individuals, parts, scorer, True, unique,
                     unique_parts)


def _frames(df: pd.DataFrame) -> np.ndarray:
    try:
        return np.asarray(df.index, np.int64)
    except (TypeError, ValueError):  # image paths: rows in order
        return np.arange(len(df), dtype=np.int64)


def _block(df: pd.DataFrame, path: Path, parts: list[str]) -> np.ndarray:
    """frames x K x 3 of one individual's columns, likelihood 1 where the table has none."""
    out = np.full((len(df), len(parts), 3), np.nan, np.float32)
    levels = df.columns
    for k, part in enumerate(parts):
        for c, coord in enumerate(("x", "y", "likelihood")):
            sel = np.flatnonzero((levels.get_level_values(-2) == part)
                                 & (levels.get_level_values(-1) == coord))
            if len(sel):
                # pandas annotates to_numeric loosely; a Series in gives a Series out
                numeric = cast(pd.Series, pd.to_numeric(df.iloc[:, sel[0]], errors="coerce"))
                out[:, k, c] = numeric.to_numpy(np.float64)
            elif coord == "likelihood":
                out[:, k, c] = np.where(np.isfinite(out[:, k, 0]), 1.0, 0.0)
            else:
                raise ProjectError(f"{path}: no {coord} column for bodypart {part}")
    return out
