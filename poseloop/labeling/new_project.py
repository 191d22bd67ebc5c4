"""``poseloop new``: a DeepLabCut project folder, as ``deeplabcut.create_new_project`` makes.

The folder ``<task>-<scorer>-<YYYY-MM-DD>`` holds ``config.yaml`` (DeepLabCut's fields, so
DeepLabCut and napari-deeplabcut open it), ``videos/`` (links to the videos, or copies),
and one empty ``labeled-data/<video>/`` folder per video for the frames to label. With
``individuals`` it is a multi-animal project (``multianimalproject: true``).
"""

from __future__ import annotations

import datetime
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import yaml

from poseloop.errors import ProjectError
from poseloop.realtime.types import UNIQUE_INDIVIDUAL


def _unique_names(names: Sequence[str], what: str) -> list[str]:
    names = [str(n).strip() for n in names]
    if not names or not all(names):
        raise ProjectError(f"new project: give at least one {what} name (no empty names)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ProjectError(f"new project: {what} {', '.join(twice)} given twice")
    bad = [n for n in names if any(c in n for c in ",/\\") or n == UNIQUE_INDIVIDUAL]
    if bad:
        raise ProjectError(f"new project: {what} name {bad[0]!r} is not allowed (no , / \\; "
                           f"'single' is DeepLabCut's unique-bodypart individual)")
    return names


def video_size(path: Path) -> tuple[int, int, int]:
    """(width, height, frame count) of a video; ProjectError naming it when unreadable."""
    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok or frame is None:
            raise ProjectError(f"{path}: not a readable video (OpenCV cannot decode a frame)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        return frame.shape[1], frame.shape[0], count
    finally:
        capture.release()


def new_project(task: str, videos: Sequence[str | Path], bodyparts: Sequence[str],
                individuals: Sequence[str] = (), scorer: str = "poseloop",
                out: str | Path = ".", copy_videos: bool = False,
                unique_bodyparts: Sequence[str] = (), identity: bool = False) -> Path:
    """Write a new DeepLabCut project and return its folder (ProjectError if it exists)."""
    if not task.strip() or any(c in task for c in "/\\"):
        raise ProjectError(f"new project: task name {task!r} must be a plain name")
    parts = _unique_names(bodyparts, "bodypart")
    animals = _unique_names(individuals, "individual") if individuals else []
    unique = _unique_names(unique_bodyparts, "unique bodypart") if unique_bodyparts else []
    if unique and not animals:
        raise ProjectError("new project: unique bodyparts need --individuals (multi-animal)")
    if not videos:
        raise ProjectError("new project: give at least one video")
    sources = [Path(v).expanduser().resolve() for v in videos]
    stems = [s.stem for s in sources]
    if len(set(stems)) != len(stems):
        raise ProjectError(f"new project: two videos share a name ({stems}); each gets its "
                           "labeled-data folder by name")
    sizes = {}
    for source in sources:
        if not source.is_file():
            raise ProjectError(f"{source}: video not found")
        sizes[source] = video_size(source)
    date = datetime.date.today().isoformat()
    root = Path(out).expanduser().resolve() / f"{task}-{scorer}-{date}"
    if root.exists():
        raise ProjectError(f"{root}: already exists; choose another task, scorer or --out")
    (root / "videos").mkdir(parents=True)
    video_sets = {}
    for source in sources:
        target = root / "videos" / source.name
        if copy_videos:
            shutil.copy2(source, target)
        else:
            target.symlink_to(source)
        (root / "labeled-data" / source.stem).mkdir(parents=True)
        w, h, _ = sizes[source]
        video_sets[str(target)] = {"crop": f"0, {w}, 0, {h}"}
    config = {
        "Task": task, "scorer": scorer, "date": date,
        "multianimalproject": bool(animals), "identity": bool(identity and animals),
        "project_path": str(root), "video_sets": video_sets,
    }
    if animals:
        config.update({"individuals": animals, "uniquebodyparts": unique,
                       "multianimalbodyparts": parts, "bodyparts": "MULTI!"})
    else:
        config["bodyparts"] = parts
    config.update({
        "start": 0, "stop": 1, "numframes2pick": 20, "skeleton": [], "skeleton_color": "black",
        "pcutoff": 0.6, "dotsize": 6, "alphavalue": 0.7, "colormap": "rainbow",
        "TrainingFraction": [0.95], "iteration": 0,
        "default_net_type": "dlcrnet_ms5" if animals else "resnet_50",
        "default_augmenter": "multi-animal-imgaug" if animals else "default",
        "snapshotindex": -1, "batch_size": 8, "cropping": False,
        "x1": 0, "x2": 640, "y1": 277, "y2": 624, "corner2move2": [50, 50],
        "move2corner": True,
    })
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root
