"""The labels of a project's frames while they are being labeled, saved after every change.

One ``LabelStore`` per ``labeled-data/<video>/`` folder: its images, their labels read from
``CollectedData_<scorer>.h5`` (else ``.csv``), with draft labels (``machinelabels-iter*``
from ``poseloop extract-outliers``) filling frames not labeled yet. Every :meth:`set` writes
both files in DeepLabCut's layout (single-animal: scorer / bodyparts / coords; multi-animal:
scorer / individuals / bodyparts / coords, unique bodyparts under ``single``), each to a
temporary name renamed over the old one, so a killed server loses at most the change in
flight and DeepLabCut, napari-deeplabcut and ``read_project`` read what it wrote.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from poseloop.errors import ProjectError
from poseloop.project import read_config
from poseloop.realtime.types import UNIQUE_INDIVIDUAL

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class LabelStore:
    """Labels of one labeled-data folder: ``labels[image][(individual, bodypart)] = (x, y)``.

    ``individual`` is ``""`` in a single-animal project and ``single`` for unique bodyparts.
    """

    def __init__(self, project: str | Path, folder: str, scorer: str | None = None) -> None:
        self.root = Path(project).expanduser().resolve()
        config = read_config(self.root)
        self.multi = bool(config.get("multianimalproject"))
        self.bodyparts = [str(b) for b in
                          config["multianimalbodyparts" if self.multi else "bodyparts"]]
        self.individuals = [str(i) for i in config.get("individuals") or []] if self.multi \
            else [""]
        self.unique = [str(u) for u in config.get("uniquebodyparts") or []] if self.multi \
            else []
        self.scorer = scorer or str(config.get("scorer") or "poseloop")
        self.folder = self.root / "labeled-data" / folder
        if not self.folder.is_dir():
            raise ProjectError(f"{self.folder}: no such labeled-data folder; extract frames "
                               "first (poseloop extract-frames)")
        self.images = sorted(p.name for p in self.folder.iterdir()
                             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        self.labels: dict[str, dict[tuple[str, str], tuple[float, float]]] = {
            i: {} for i in self.images}
        self._lock = threading.Lock()
        drafts = sorted(self.folder.glob("machinelabels-iter*.h5"))
        for path in drafts:
            self._load(path)
        own = self.path(".h5") if self.path(".h5").is_file() else self.path(".csv")
        if own.is_file():
            self._load(own, replace=True)

    # -- names -------------------------------------------------------------------------
    def path(self, suffix: str) -> Path:
        return self.folder / f"CollectedData_{self.scorer}{suffix}"

    def keys(self) -> list[tuple[str, str]]:
        """(individual, bodypart) of every point a frame can have, in column order."""
        keys = [(i, b) for i in self.individuals for b in self.bodyparts]
        return keys + [(UNIQUE_INDIVIDUAL, u) for u in self.unique]

    def index_of(self, image: str) -> tuple[str, str, str]:
        return ("labeled-data", self.folder.name, image)

    # -- reading -----------------------------------------------------------------------
    def _load(self, path: Path, replace: bool = False) -> None:
        try:
            if path.suffix == ".h5":
                df = pd.read_hdf(path)
            else:
                df = pd.read_csv(path, header=list(range(4 if self.multi else 3)),
                                 index_col=[0, 1, 2])
        except Exception as e:  # pandas raises many kinds for a broken file
            raise ProjectError(f"{path}: cannot read labels ({type(e).__name__}: {e})") from e
        assert isinstance(df, pd.DataFrame)
        if df.columns.nlevels != (4 if self.multi else 3):
            raise ProjectError(f"{path}: expected {4 if self.multi else 3} header rows, found "
                               f"{df.columns.nlevels}")
        df.columns = df.columns.droplevel(0)  # any scorer
        images = [index[-1] if isinstance(index, tuple) else str(index).replace("\\", "/")
                  .split("/")[-1] for index in df.index]
        for individual, bodypart in self.keys():
            head = (individual, bodypart) if self.multi else (bodypart,)
            if head + ("x",) not in df.columns or head + ("y",) not in df.columns:
                continue
            xs = _numbers(df[head + ("x",)])
            ys = _numbers(df[head + ("y",)])
            for image, x, y in zip(images, xs, ys, strict=True):
                if image not in self.labels:
                    continue
                if replace:
                    self.labels[image].pop((individual, bodypart), None)
                if np.isfinite(x) and np.isfinite(y):
                    self.labels[image][(individual, bodypart)] = (float(x), float(y))

    # -- changing ----------------------------------------------------------------------
    def set(self, image: str, individual: str, bodypart: str, xy: tuple[float, float] | None
            ) -> None:
        """Place (or, with None, remove: not visible) one point and save at once."""
        if image not in self.labels:
            raise ProjectError(f"{self.folder}: no image {image!r}")
        key = (individual if self.multi or individual == UNIQUE_INDIVIDUAL else "", bodypart)
        if key not in self.keys():
            raise ProjectError(f"{self.folder}: no point {individual!r}/{bodypart!r} in this "
                               f"project")
        with self._lock:
            if xy is None:
                self.labels[image].pop(key, None)
            else:
                self.labels[image][key] = (float(xy[0]), float(xy[1]))
            self.save()

    def table(self) -> pd.DataFrame:
        """The labels in DeepLabCut's layout (frames without any point are kept, NaN)."""
        keys = self.keys()
        if self.multi:
            columns = pd.MultiIndex.from_tuples(
                [(self.scorer, i, b, c) for i, b in keys for c in ("x", "y")],
                names=["scorer", "individuals", "bodyparts", "coords"])
        else:
            columns = pd.MultiIndex.from_tuples(
                [(self.scorer, b, c) for _, b in keys for c in ("x", "y")],
                names=["scorer", "bodyparts", "coords"])
        values = np.full((len(self.images), 2 * len(keys)), np.nan)
        for r, image in enumerate(self.images):
            for k, key in enumerate(keys):
                if key in self.labels[image]:
                    values[r, 2 * k: 2 * k + 2] = self.labels[image][key]
        index = pd.MultiIndex.from_tuples([self.index_of(i) for i in self.images])
        return pd.DataFrame(values, index=index, columns=columns)

    def save(self) -> None:
        """Write .h5 and .csv, each to a temporary name renamed over the old file."""
        df = self.table()
        for suffix in (".h5", ".csv"):
            final = self.path(suffix)
            tmp = final.with_name(f".{final.name}.tmp")
            if suffix == ".h5":
                df.to_hdf(tmp, key="df_with_missing", mode="w")
            else:
                df.to_csv(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            tmp.replace(final)

    def as_json(self) -> dict:
        """What the labeler page needs: names and every frame's points."""
        return {
            "folder": self.folder.name, "multi": self.multi, "scorer": self.scorer,
            "bodyparts": self.bodyparts, "individuals": self.individuals if self.multi else [],
            "unique": self.unique, "images": self.images,
            "labels": {image: [[i, b, x, y] for (i, b), (x, y) in points.items()]
                       for image, points in self.labels.items()},
        }


def _numbers(column: object) -> np.ndarray:
    """A label column as float64 (non-numbers: NaN)."""
    return np.asarray(cast(pd.Series, pd.to_numeric(pd.Series(column), errors="coerce")),
                      np.float64)


def folders(project: str | Path) -> list[str]:
    """The project's labeled-data folders that hold images."""
    root = Path(project).expanduser().resolve() / "labeled-data"
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(
        q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir())) if root.is_dir() else []
