"""The files one video's analysis leaves behind, written whole or not at all.

A video's outputs are its DeepLabCut tables as the recorder names them (``<stem><scorer>.h5``
/ ``.csv``, ``_timing.csv``, ``_events.csv``) and, with NWB, one ``.nwb`` per individual
(:func:`nwb_names`). They are written into a staging folder of their own
(``<out>/.poseloop-partial/<stem><scorer>.<random>``, on the same file system) and renamed into
the output folder only once every one is complete, the ``.h5`` last. So a file under its
final name is always whole, and a video counts as done (skipped on a rerun) exactly when
all its files are there. A staging folder left by a killed worker is removed when the video
is next analysed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from poseloop.modelspec import ModelSpec
from poseloop.realtime.builder import scorer_of
from poseloop.realtime.types import UNIQUE_INDIVIDUAL

#: The hidden folder, inside the output folder, that holds videos' outputs being written.
PARTIAL = ".poseloop-partial"
#: The recorder's files of one video (keys of ``Recorder.paths``) and their suffixes.
TABLES = {"poses_csv": ".csv", "timing_csv": "_timing.csv", "events_csv": "_events.csv",
          "poses_h5": ".h5"}


def nwb_names(spec: ModelSpec) -> dict[str, str]:
    """Individual -> suffix of its NWB file: one file per individual, as DeepLabCut's
    dlc2nwb and movement write them (``.nwb`` alone for a single animal)."""
    if not spec.multi_animal:
        return {spec.individual_names[0]: ".nwb"}
    names = list(spec.individuals)
    if spec.unique_bodyparts:
        names.append(UNIQUE_INDIVIDUAL)
    return {name: f"_{name}.nwb" for name in names}


@dataclass(frozen=True)
class VideoOutputs:
    """Where one video's outputs go: ``files`` maps a kind (the recorder's keys, and
    ``nwb:<individual>``) to its final path, in the order they are committed; ``base`` is
    their common stem (the video's stem and the scorer)."""

    out_dir: Path
    base: str
    files: dict[str, Path]

    @classmethod
    def of(cls, video: Path, out_dir: Path, spec: ModelSpec, nwb: bool) -> VideoOutputs:
        """The outputs of ``video`` analysed by a model of ``spec`` into ``out_dir``."""
        base = f"{video.stem}{scorer_of(spec)}"
        files = {kind: out_dir / f"{base}{suffix}" for kind, suffix in TABLES.items()
                 if kind != "poses_h5"}
        if nwb:
            files.update({f"nwb:{who}": out_dir / f"{base}{suffix}"
                          for who, suffix in nwb_names(spec).items()})
        files["poses_h5"] = out_dir / f"{base}{TABLES['poses_h5']}"
        return cls(out_dir, base, files)

    def complete(self) -> bool:
        """Whether every output is in place (each one is whole: see the module doc)."""
        return all(path.is_file() for path in self.files.values())

    def staging(self) -> Path:
        """A new, empty staging folder for these outputs; earlier ones of them (from a killed
        attempt) are removed. OSError naming the folder if it cannot be made."""
        parent = self.out_dir / PARTIAL
        if parent.is_dir():
            for old in parent.iterdir():
                if old.name.rpartition(".")[0] == self.base:
                    shutil.rmtree(old, ignore_errors=True)
        folder = parent / f"{self.base}.{uuid.uuid4().hex[:12]}"
        try:
            folder.mkdir(parents=True)
        except OSError as e:
            raise OSError(f"{folder}: cannot create the staging folder ({e})") from e
        return folder

    def commit(self, staging: Path) -> None:
        """Rename the files staged under their final names in ``staging`` into the output
        folder, the ``.h5`` last, then remove the staging folder. OSError naming what is
        missing."""
        missing = [p.name for p in self.files.values() if not (staging / p.name).is_file()]
        if missing:
            raise OSError(f"{staging}: not written: {', '.join(missing)}")
        for path in self.files.values():
            os.replace(staging / path.name, path)
        discard(staging)


def discard(staging: Path) -> None:
    """Remove a staging folder (its parent stays: other videos may be starting there)."""
    shutil.rmtree(staging, ignore_errors=True)


def tidy(out_dir: Path) -> None:
    """Remove the output folder's partial folder if nothing is staged in it (end of a run)."""
    with contextlib.suppress(OSError):
        (out_dir / PARTIAL).rmdir()
