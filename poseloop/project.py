"""DeepLabCut project I/O: config.yaml, labeled frames (CollectedData_*.csv/.h5) and splits.

A project is read once into a ``Project``: its bodyparts, skeleton and pcutoff from
``config.yaml``, and every labeled frame with its keypoints (NaN = unlabeled): K x 2 in a
single-animal project; N x K x 2 (individuals x multianimalbodyparts) plus U x 2 unique
bodyparts in a multi-animal one (``multianimalproject: true``, label files with the four
header rows scorer / individuals / bodyparts / coords; unique bodyparts sit under the
individual ``single``, as DeepLabCut writes them). Errors name the file and the row,
individual, bodypart or column to fix.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import pandas as pd
import yaml

from poseloop.errors import ProjectError
from poseloop.realtime.types import UNIQUE_INDIVIDUAL

#: Labels may lie this fraction of the image size outside it (clicks at the very edge);
#: farther out they are corrupt.
OUTSIDE_MARGIN = 0.1
#: Coordinates this large (or infinite) are not pixels of any image.
MAX_COORDINATE = 1e6



@dataclass(frozen=True)
class LabeledFrame:
    """One labeled image: its path relative to the project and its keypoints (NaN = none).

    keypoints: K x 2 (single-animal) or N x K x 2 (multi-animal: individuals x bodyparts).
    unique: U x 2 unique bodyparts of a multi-animal project (0 x 2 when it has none).
    """

    image: str
    keypoints: np.ndarray
    source: str  # the CollectedData file it came from, for error messages
    unique: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    @property
    def joints(self) -> np.ndarray:
        """Every labeled point as one J x 2 array: the animals' bodyparts then the unique."""
        return np.concatenate([self.keypoints.reshape(-1, 2), self.unique]).astype(np.float32)

    def absolute(self, root: Path) -> Path:
        """The image's path on disk."""
        return root / self.image


@dataclass
class Project:
    """A DeepLabCut project, single- or multi-animal.

    bodyparts: the bodyparts of every animal (``multianimalbodyparts`` in a multi-animal
    project). individuals: the animals' names; empty in a single-animal project.
    unique_bodyparts: points that exist once per frame (multi-animal only).
    identity: whether the animals can be told apart by their looks (DeepLabCut's
    ``identity``: train an identity head).
    """

    root: Path
    task: str
    scorer: str
    bodyparts: list[str]
    skeleton: list[tuple[str, str]]
    pcutoff: float
    training_fraction: float
    frames: list[LabeledFrame] = field(default_factory=list)
    individuals: list[str] = field(default_factory=list)
    unique_bodyparts: list[str] = field(default_factory=list)
    identity: bool = False

    @property
    def multi_animal(self) -> bool:
        """Whether this is a DeepLabCut multi-animal project."""
        return bool(self.individuals)

    @property
    def keypoints(self) -> np.ndarray:
        """All labels as a frames x K x 2 (multi-animal: frames x N x K x 2) array."""
        return np.stack([f.keypoints for f in self.frames]).astype(np.float32)

    def joint_names(self) -> list[str]:
        """Names of the rows of ``LabeledFrame.joints``: ``bodypart`` or ``individual/bodypart``."""
        if not self.multi_animal:
            return list(self.bodyparts)
        return [f"{i}/{b}" for i in self.individuals for b in self.bodyparts] + [
            f"{UNIQUE_INDIVIDUAL}/{u}" for u in self.unique_bodyparts]

    def load_image(self, frame: LabeledFrame) -> np.ndarray:
        """The frame's image as RGB uint8 H x W x 3 (grey and RGBA images are converted)."""
        path = frame.absolute(self.root)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ProjectError(f"{path}: image listed in {frame.source} cannot be read")
        h, w = image.shape[:2]
        joints = frame.joints
        x, y = joints[:, 0], joints[:, 1]
        margin = OUTSIDE_MARGIN
        outside = (x < -margin * w) | (x > (1 + margin) * w) \
            | (y < -margin * h) | (y > (1 + margin) * h)
        if outside.any():
            j = int(np.flatnonzero(outside)[0])
            raise ProjectError(
                f"{frame.source}: {frame.image}: label {self.joint_names()[j]} at "
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


def read_config(root: str | Path) -> dict:
    """A project's ``config.yaml`` as a dict, checked like ``read_project`` checks it (for
    tools that work on a project before it has labels: frame extraction, the labeler)."""
    return _read_config(Path(root).expanduser().resolve() / "config.yaml")


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
        individuals = _names(cfg, "individuals", path)
        if UNIQUE_INDIVIDUAL in individuals:
            raise ProjectError(f"{path}: field 'individuals' may not name "
                               f"'{UNIQUE_INDIVIDUAL}' (DeepLabCut's unique-bodypart column)")
        parts = _names(cfg, "multianimalbodyparts", path)
        unique = _names(cfg, "uniquebodyparts", path, required=False)
        both = sorted(set(parts) & set(unique))
        if both:
            raise ProjectError(f"{path}: {both} listed in both multianimalbodyparts and "
                               f"uniquebodyparts")
    else:
        _names(cfg, "bodyparts", path)
    return cfg


def _names(cfg: dict, key: str, path: Path, required: bool = True) -> list[str]:
    """A config field that lists unique names (a non-empty list when required)."""
    names = cfg.get(key) or []
    if not isinstance(names, list) or not all(isinstance(p, str) for p in names) \
            or (required and not names):
        raise ProjectError(f"{path}: field '{key}' must be a "
                           f"{'non-empty ' if required else ''}list of names")
    if len(set(names)) != len(names):
        raise ProjectError(f"{path}: field '{key}' lists a name twice: {names}")
    return [str(n) for n in names]


def _skeleton(cfg: dict, path: Path, bodyparts: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
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


def header_rows(path: Path) -> int:
    """How many header rows a CollectedData CSV has: 4 with an ``individuals`` row, else 3."""
    try:
        with open(path, newline="") as f:
            first = [next(f, "").split(",", 1)[0].strip() for _ in range(2)]
    except OSError as e:
        raise ProjectError(f"{path}: cannot read labels ({e})") from e
    return 4 if first[1] == "individuals" else 3


def _read_table(path: Path, multi: bool) -> pd.DataFrame:
    """A CollectedData table with image paths as index and 3 column levels (scorer,
    bodyparts, coords), or 4 (scorer, individuals, bodyparts, coords) when ``multi``."""
    levels = 4 if multi else 3
    try:
        if path.suffix == ".h5":
            df = pd.read_hdf(path)
        else:
            rows = header_rows(path)
            df = pd.read_csv(path, header=list(range(rows)), index_col=None)
    except ProjectError:
        raise
    except Exception as e:  # pandas raises many types for a corrupt file
        raise ProjectError(f"{path}: cannot read labels ({type(e).__name__}: {e})") from e
    if not isinstance(df, pd.DataFrame):
        raise ProjectError(f"{path}: expected a table of labels")
    if path.suffix != ".h5":
        # Newer DeepLabCut CSVs spread the image path over several leading columns.
        lead = [c for c in df.columns if str(c[0]).startswith("Unnamed") or c[0] == "scorer"]
        lead = [c for c in lead if str(c[-2]).startswith("Unnamed") or c[-2] == "bodyparts"]
        if not lead:
            raise ProjectError(f"{path}: no image-path column before the label columns")
        names = df[lead].astype(str).agg("/".join, axis=1)
        df = df.drop(columns=lead)
        df.index = names
    elif isinstance(df.index, pd.MultiIndex):
        df.index = ["/".join(map(str, t)) for t in df.index]
    if df.columns.nlevels != levels:
        kind = "multi-animal" if multi else "single-animal"
        want = ("scorer, individuals, bodyparts, coords" if multi
                else "scorer, bodyparts, coords")
        hint = (" (config.yaml says multianimalproject: "
                f"{'true' if multi else 'false'}; is that right?)"
                if df.columns.nlevels in (3, 4) else "")
        raise ProjectError(f"{path}: a {kind} project's labels have {levels} header rows "
                           f"({want}), found {df.columns.nlevels}{hint}")
    return df


def _joint_index(project: Project) -> dict[tuple[str | None, str], int]:
    """(individual, bodypart) -> row of ``LabeledFrame.joints`` (individual None: single)."""
    if not project.multi_animal:
        return {(None, b): j for j, b in enumerate(project.bodyparts)}
    index: dict[tuple[str | None, str], int] = {}
    for i in project.individuals + [UNIQUE_INDIVIDUAL] * bool(project.unique_bodyparts):
        parts = project.unique_bodyparts if i == UNIQUE_INDIVIDUAL else project.bodyparts
        for b in parts:
            index[(i, b)] = len(index)
    return index


def _column_joint(project: Project, column: tuple, path: Path,
                  index: dict[tuple[str | None, str], int]) -> tuple[int, str]:
    """The joint row and coordinate of a label column; ProjectError naming what is wrong."""
    where = f"{path}: column {tuple(map(str, column))}"
    coord = str(column[-1])
    if re.fullmatch(r"(x|y|likelihood)\.\d+", coord):  # pandas renames a repeated header
        first = tuple(map(str, column[:-1])) + (coord.split(".")[0],)
        raise ProjectError(f"{path}: columns {first} appear twice: they would label the same "
                           f"point twice; each individual/bodypart/coordinate is one column")
    if coord not in ("x", "y", "likelihood"):
        raise ProjectError(f"{where}: unknown coordinate '{coord}' (x, y or likelihood)")
    part = str(column[-2])
    if not project.multi_animal:
        if (None, part) not in index:
            raise ProjectError(f"{where}: bodypart '{part}' is not in config.yaml bodyparts "
                               f"{project.bodyparts}")
        return index[(None, part)], coord
    individual = str(column[1])
    known = project.individuals + [UNIQUE_INDIVIDUAL] * bool(project.unique_bodyparts)
    if individual not in known:
        raise ProjectError(f"{where}: individual '{individual}' is not in config.yaml "
                           f"individuals {project.individuals}")
    if (individual, part) not in index:
        field_name = "uniquebodyparts" if individual == UNIQUE_INDIVIDUAL \
            else "multianimalbodyparts"
        parts = project.unique_bodyparts if individual == UNIQUE_INDIVIDUAL \
            else project.bodyparts
        raise ProjectError(f"{where}: individual '{individual}', bodypart '{part}' is not in "
                           f"config.yaml {field_name} {parts}")
    return index[(individual, part)], coord


def _frames_from_table(df: pd.DataFrame, path: Path, project: Project) -> list[LabeledFrame]:
    index = _joint_index(project)
    seen: dict[tuple[int, str], tuple] = {}
    values = np.full((len(df), len(index), 2), np.nan, np.float32)
    header = df.columns.nlevels
    for c, column in enumerate(df.columns):
        j, coord = _column_joint(project, column, path, index)
        if (j, coord) in seen:
            raise ProjectError(f"{path}: columns {tuple(map(str, seen[(j, coord)]))} and "
                               f"{tuple(map(str, column))} label the same point twice")
        seen[(j, coord)] = column
        if coord == "likelihood":
            continue
        col = df.iloc[:, c]
        # pandas annotates to_numeric's result loosely; a Series in gives a Series out.
        numeric = cast(pd.Series, pd.to_numeric(col, errors="coerce"))
        number = numeric.to_numpy(np.float64)
        bad = (numeric.isna() & col.notna() & (col.astype(str).str.strip() != "")) \
            | (np.abs(number) >= MAX_COORDINATE)  # inf, or beyond any image
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            who = f"individual {column[1]}, " if project.multi_animal else ""
            raise ProjectError(
                f"{path}: row {row + header + 1} ({df.index[row]}), {who}bodypart "
                f"{column[-2]}, {coord}: not a pixel coordinate: {col.iloc[row]!r}"
            )
        values[:, j, 0 if coord == "x" else 1] = number
    n, k = len(project.individuals), len(project.bodyparts)
    frames = []
    for i, name in enumerate(df.index):
        image = str(name).replace("\\", "/")
        if project.multi_animal:
            frames.append(LabeledFrame(image=image, keypoints=values[i, :n * k].reshape(n, k, 2),
                                       source=str(path), unique=values[i, n * k:]))
        else:
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
    multi = bool(cfg.get("multianimalproject"))
    bodyparts = [str(p) for p in cfg["multianimalbodyparts" if multi else "bodyparts"]]
    unique = [str(p) for p in cfg.get("uniquebodyparts") or []] if multi else []
    project = Project(
        root=root,
        task=str(cfg.get("Task") or root.name),
        scorer=str(cfg.get("scorer") or "poseloop"),
        bodyparts=bodyparts,
        skeleton=_skeleton(cfg, cfg_path, bodyparts + unique),
        pcutoff=_number(cfg, "pcutoff", 0.6, cfg_path),
        training_fraction=_number(cfg, "TrainingFraction", 0.95, cfg_path),
        individuals=[str(i) for i in cfg["individuals"]] if multi else [],
        unique_bodyparts=unique,
        identity=bool(cfg.get("identity")) if multi else False,
    )
    files = label_files(root)
    if not files:
        raise ProjectError(
            f"{root}: no labeled-data/*/CollectedData_*.csv or .h5 found; label frames first"
        )
    seen: dict[str, str] = {}
    for path in files:
        df = _read_table(path, multi)
        for frame in _frames_from_table(df, path, project):
            if frame.image in seen:
                raise ProjectError(
                    f"{path}: frame {frame.image} is labeled twice (also in {seen[frame.image]})"
                )
            seen[frame.image] = str(path)
            if check_images and not frame.absolute(root).is_file():
                raise ProjectError(f"{path}: row for {frame.image}: image file does not exist")
            if np.isfinite(frame.joints).any():
                project.frames.append(frame)
    if not project.frames:
        raise ProjectError(f"{root}: the label files hold no labeled points ({files[0]}, ...)")
    return project
