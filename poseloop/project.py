"""DeepLabCut project I/O: config.yaml, labeled frames (CollectedData_*.csv/.h5) and splits.

A project is read once into a ``Project``: its bodyparts, skeleton and pcutoff from
``config.yaml``, and every labeled frame with its K x 2 keypoints (NaN = unlabeled).
Errors name the file and the row/column to fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import pandas as pd
import yaml

from poseloop.errors import ProjectError

#: Labels may lie this fraction of the image size outside it (clicks at the very edge);
#: farther out they are corrupt.
OUTSIDE_MARGIN = 0.1
#: Coordinates this large (or infinite) are not pixels of any image.
MAX_COORDINATE = 1e6


@dataclass(frozen=True)
class LabeledFrame:
    """One labeled image: its path relative to the project and K x 2 keypoints (NaN = none)."""

    image: str
    keypoints: np.ndarray
    source: str  # the CollectedData file it came from, for error messages

    def absolute(self, root: Path) -> Path:
        """The image's path on disk."""
        return root / self.image


@dataclass
class Project:
    """A DeepLabCut single-animal project."""

    root: Path
    task: str
    scorer: str
    bodyparts: list[str]
    skeleton: list[tuple[str, str]]
    pcutoff: float
    training_fraction: float
    frames: list[LabeledFrame] = field(default_factory=list)

    @property
    def keypoints(self) -> np.ndarray:
        """All labels as an N x K x 2 array."""
        return np.stack([f.keypoints for f in self.frames]).astype(np.float32)

    def load_image(self, frame: LabeledFrame) -> np.ndarray:
        """The frame's image as RGB uint8 H x W x 3 (grey and RGBA images are converted)."""
        path = frame.absolute(self.root)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ProjectError(f"{path}: image listed in {frame.source} cannot be read")
        h, w = image.shape[:2]
        x, y = frame.keypoints[:, 0], frame.keypoints[:, 1]
        margin = OUTSIDE_MARGIN
        outside = (x < -margin * w) | (x > (1 + margin) * w) \
            | (y < -margin * h) | (y > (1 + margin) * h)
        if outside.any():
            j = int(np.flatnonzero(outside)[0])
            raise ProjectError(
                f"{frame.source}: {frame.image}: label {self.bodyparts[j]} at "
                f"({x[j]:.1f}, {y[j]:.1f}) lies outside the {w} x {h} image"
            )
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def split(self, seed: int = 0, fraction: float | None = None) -> Split:
        """A reproducible train/test split: a seeded permutation, first round(f*N) train."""
        f = self.training_fraction if fraction is None else fraction
        if not 0.0 < f <= 1.0:
            raise ProjectError(f"TrainingFraction must be in (0, 1], got {f}")
        n = len(self.frames)
        order = np.random.default_rng(seed).permutation(n)
        n_train = min(n, max(1, int(round(f * n))))
        images = [self.frames[i].image for i in order]
        return Split(
            seed=seed, fraction=f, train=sorted(images[:n_train]), test=sorted(images[n_train:])
        )

    def subset(self, images: list[str]) -> list[LabeledFrame]:
        """Frames in the order of ``images``; an image not in the project is an error."""
        by_name = {f.image: f for f in self.frames}
        missing = [i for i in images if i not in by_name]
        if missing:
            raise ProjectError(
                f"{self.root}: {len(missing)} image(s) of the split are not labeled in this "
                f"project, e.g. {missing[0]}"
            )
        return [by_name[i] for i in images]


@dataclass(frozen=True)
class Split:
    """Which images train and which test; saved with every training run."""

    seed: int
    fraction: float
    train: list[str]
    test: list[str]

    def save(self, path: Path) -> None:
        """Write the split as JSON."""
        path.write_text(json.dumps(self.__dict__, indent=1))

    @classmethod
    def load(cls, path: Path) -> Split:
        """Read a split written by ``save``."""
        try:
            d = json.loads(Path(path).read_text())
            return cls(int(d["seed"]), float(d["fraction"]), list(d["train"]), list(d["test"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ProjectError(f"{path}: not a readable split file ({e})") from e


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise ProjectError(f"{path}: no config.yaml here; is this a DeepLabCut project folder?")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProjectError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(cfg, dict):
        raise ProjectError(f"{path}: expected a mapping of settings, got {type(cfg).__name__}")
    if cfg.get("multianimalproject"):
        raise ProjectError(
            f"{path}: multianimalproject is true; poseloop trains single-animal projects only"
        )
    parts = cfg.get("bodyparts")
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise ProjectError(f"{path}: field 'bodyparts' must be a non-empty list of names")
    if len(set(parts)) != len(parts):
        raise ProjectError(f"{path}: field 'bodyparts' lists a name twice: {parts}")
    return cfg


def _skeleton(cfg: dict, path: Path, bodyparts: list[str]) -> list[tuple[str, str]]:
    out = []
    for i, edge in enumerate(cfg.get("skeleton") or []):
        if not (isinstance(edge, list | tuple) and len(edge) == 2):
            raise ProjectError(f"{path}: skeleton[{i}] must be a pair of bodyparts, got {edge!r}")
        for p in edge:
            if p not in bodyparts:
                raise ProjectError(f"{path}: skeleton[{i}] names '{p}', not in bodyparts")
        out.append((str(edge[0]), str(edge[1])))
    return out


def _number(cfg: dict, key: str, default: float, path: Path) -> float:
    value = cfg.get(key, default)
    if isinstance(value, list):  # TrainingFraction is a list in DeepLabCut
        if not value:
            raise ProjectError(f"{path}: field '{key}' is an empty list")
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        raise ProjectError(f"{path}: field '{key}' must be a number, got {value!r}") from e
    if not math.isfinite(number):
        raise ProjectError(f"{path}: field '{key}' must be finite, got {value!r}")
    return number


def _read_table(path: Path) -> pd.DataFrame:
    """A CollectedData table with a 3-level column index and image paths as index."""
    try:
        if path.suffix == ".h5":
            df = pd.read_hdf(path)
        else:
            df = pd.read_csv(path, header=[0, 1, 2], index_col=None)
    except Exception as e:  # pandas raises many types for a corrupt file
        raise ProjectError(f"{path}: cannot read labels ({type(e).__name__}: {e})") from e
    if not isinstance(df, pd.DataFrame):
        raise ProjectError(f"{path}: expected a table of labels")
    if path.suffix != ".h5":
        # Newer DeepLabCut CSVs spread the image path over several leading columns.
        lead = [c for c in df.columns if str(c[0]).startswith("Unnamed") or c[0] == "scorer"]
        lead = [c for c in lead if str(c[1]).startswith("Unnamed") or c[1] == "bodyparts"]
        if not lead:
            raise ProjectError(f"{path}: no image-path column before the label columns")
        names = df[lead].astype(str).agg("/".join, axis=1)
        df = df.drop(columns=lead)
        df.index = names
    elif isinstance(df.index, pd.MultiIndex):
        df.index = ["/".join(map(str, t)) for t in df.index]
    if df.columns.nlevels == 4:
        raise ProjectError(f"{path}: multi-animal labels (4 header rows) are not supported")
    if df.columns.nlevels != 3:
        raise ProjectError(
            f"{path}: expected 3 header rows (scorer, bodyparts, coords), "
            f"found {df.columns.nlevels}"
        )
    return df


def _frames_from_table(df: pd.DataFrame, path: Path, bodyparts: list[str]) -> list[LabeledFrame]:
    coords_ok = {"x", "y", "likelihood"}
    for scorer, part, coord in df.columns:
        if part not in bodyparts:
            raise ProjectError(
                f"{path}: column ({scorer}, {part}, {coord}): bodypart '{part}' is not in "
                f"config.yaml bodyparts {bodyparts}"
            )
        if coord not in coords_ok:
            raise ProjectError(f"{path}: column ({scorer}, {part}, {coord}): unknown coordinate")
    parts = df.columns.get_level_values(1)
    coords = df.columns.get_level_values(2)
    values = np.full((len(df), len(bodyparts), 2), np.nan, np.float32)
    for j, part in enumerate(bodyparts):
        for c, axis in (("x", 0), ("y", 1)):
            sel = np.flatnonzero((parts == part) & (coords == c))
            if len(sel) == 0:
                continue
            col = df.iloc[:, sel[0]]
            # pandas annotates to_numeric's result loosely; a Series in gives a Series out.
            numeric = cast(pd.Series, pd.to_numeric(col, errors="coerce"))
            number = numeric.to_numpy(np.float64)
            bad = (numeric.isna() & col.notna() & (col.astype(str).str.strip() != "")) \
                | (np.abs(number) >= MAX_COORDINATE)  # inf, or beyond any image
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise ProjectError(
                    f"{path}: row {row + 4} ({df.index[row]}), column {part}/{c}: "
                    f"not a pixel coordinate: {col.iloc[row]!r}"
                )
            values[:, j, axis] = number
    frames = []
    for i, name in enumerate(df.index):
        image = str(name).replace("\\", "/")
        frames.append(LabeledFrame(image=image, keypoints=values[i], source=str(path)))
    return frames


def label_files(root: Path) -> list[Path]:
    """One CollectedData file per labeled-data folder (the .h5 when both exist, as DLC does)."""
    files = []
    for folder in sorted((root / "labeled-data").glob("*")):
        if not folder.is_dir():
            continue
        h5 = sorted(folder.glob("CollectedData_*.h5"))
        csv = sorted(folder.glob("CollectedData_*.csv"))
        if h5 or csv:
            files.append((h5 or csv)[0])
    return files


def read_project(root: str | Path, check_images: bool = True) -> Project:
    """Read a DeepLabCut project folder; raise ProjectError naming what is wrong."""
    root = Path(root).expanduser().resolve()
    cfg_path = root / "config.yaml"
    cfg = _read_config(cfg_path)
    bodyparts = [str(p) for p in cfg["bodyparts"]]
    project = Project(
        root=root,
        task=str(cfg.get("Task") or root.name),
        scorer=str(cfg.get("scorer") or "poseloop"),
        bodyparts=bodyparts,
        skeleton=_skeleton(cfg, cfg_path, bodyparts),
        pcutoff=_number(cfg, "pcutoff", 0.6, cfg_path),
        training_fraction=_number(cfg, "TrainingFraction", 0.95, cfg_path),
    )
    files = label_files(root)
    if not files:
        raise ProjectError(
            f"{root}: no labeled-data/*/CollectedData_*.csv or .h5 found; label frames first"
        )
    seen: dict[str, str] = {}
    for path in files:
        df = _read_table(path)
        for frame in _frames_from_table(df, path, bodyparts):
            if frame.image in seen:
                raise ProjectError(
                    f"{path}: frame {frame.image} is labeled twice (also in {seen[frame.image]})"
                )
            seen[frame.image] = str(path)
            if check_images and not frame.absolute(root).is_file():
                raise ProjectError(f"{path}: row for {frame.image}: image file does not exist")
            if np.isfinite(frame.keypoints).any():
                project.frames.append(frame)
    if not project.frames:
        raise ProjectError(f"{root}: the label files hold no labeled points ({files[0]}, ...)")
    return project
