"""``poseloop extract-outliers`` and ``poseloop merge``: the refinement loop of DeepLabCut.

Outlier frames are picked from a pose table (``analyze`` output or a live recording) by
DeepLabCut's criteria:

- ``jump``: a bodypart (likelihood >= p_bound in both frames) moved more than ``epsilon``
  px since the previous frame;
- ``uncertain``: a bodypart's likelihood is below ``p_bound``;
- ``fitting``: a bodypart lies more than ``epsilon`` px from its smoothed trajectory (a
  running median over ``FIT_WINDOW`` frames; DeepLabCut fits an ARIMA model instead);
- ``events`` (live recordings): a frame where a rule fired while a bodypart was below the
  model's pcutoff (from the recording's ``_events.csv``).

Among the candidates ``n`` frames are chosen (k-means on the downsampled frames, or uniform)
and written to ``labeled-data/<video>/`` with the model's poses as draft labels
(``machinelabels-iter<iteration>.h5``/``.csv``, scorer ``machine``). After correcting them
(``poseloop label``), ``poseloop merge`` folds the drafted frames into
``CollectedData_<scorer>`` for the next ``poseloop train`` and increments ``iteration``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

from poseloop.errors import ProjectError
from poseloop.labeling.extract_frames import frame_name, kmeans_of
from poseloop.labeling.new_project import video_size
from poseloop.project import read_config
from poseloop.realtime.recorder import pose_columns
from poseloop.realtime.types import Session
from poseloop.visualize.pose_table import PoseTable, read_pose_table

CRITERIA = ("jump", "uncertain", "fitting", "events")
FIT_WINDOW = 7
MACHINE = "machine"


def outlier_frames(table: PoseTable, criteria: Sequence[str], epsilon: float = 20.0,
                   p_bound: float = 0.01, events: pd.DataFrame | None = None,
                   pcutoff: float = 0.6) -> np.ndarray:
    """Frame indices (of the table) that any of ``criteria`` flags, ascending."""
    unknown = sorted(set(criteria) - set(CRITERIA))
    if unknown:
        raise ProjectError(f"extract-outliers: unknown criteria {unknown} (known: {CRITERIA})")
    pts = table.points  # frames x N x K x 3
    xy, p = pts[..., :2], pts[..., 2]
    flagged = np.zeros(len(pts), bool)
    if "uncertain" in criteria:
        flagged |= (np.nan_to_num(p, nan=0.0) < p_bound).any(axis=(1, 2))
    if "jump" in criteria and len(pts) > 1:
        step = np.sqrt(((xy[1:] - xy[:-1]) ** 2).sum(-1))
        both = (p[1:] >= p_bound) & (p[:-1] >= p_bound)
        jump = np.where(both, step, 0.0) > epsilon
        flagged[1:] |= np.nan_to_num(jump).any(axis=(1, 2))
    if "fitting" in criteria and len(pts) >= FIT_WINDOW:
        flat = xy.reshape(len(xy), -1)
        smooth = pd.DataFrame(flat).rolling(FIT_WINDOW, center=True, min_periods=1).median()
        off = np.sqrt(((flat - smooth.to_numpy()).reshape(xy.shape) ** 2).sum(-1))
        flagged |= np.nan_to_num(np.where(p >= p_bound, off, 0.0)).max(axis=(1, 2)) > epsilon
    if "events" in criteria and events is not None and len(events):
        rows = table.row_of()
        for frame in events["frame"].astype(int):
            row = rows.get(int(frame))
            if row is not None and (np.nan_to_num(p[row], nan=0.0) < pcutoff).any():
                flagged[row] = True
    return table.frames[flagged]


def _draft_table(table: PoseTable, rows: list[int], images: list[str],
                 project: dict) -> pd.DataFrame:
    """The model's poses of the picked rows in the project's CollectedData layout."""
    multi = bool(project.get("multianimalproject"))
    parts = project["multianimalbodyparts"] if multi else project["bodyparts"]
    if list(parts) != table.bodyparts:
        raise ProjectError(f"the poses' bodyparts {table.bodyparts} differ from the project's "
                           f"{list(parts)}")
    individuals = list(project["individuals"]) if multi else list(table.individuals)
    if multi and individuals != table.individuals:
        raise ProjectError(f"the poses' individuals {table.individuals} differ from the "
                           f"project's {individuals}")
    session = Session(bodyparts=tuple(parts), individuals=tuple(individuals),
                      unique_bodyparts=table.unique_bodyparts, multi_animal=multi,
                      scorer=MACHINE)
    levels, columns = pose_columns(session)  # the recorder's layout: poses, then unique
    values = [table.points[rows].reshape(len(rows), -1)]
    if table.unique is not None:
        values.append(table.unique[rows].reshape(len(rows), -1))
    index = pd.MultiIndex.from_tuples([tuple(i.split("/")) for i in images])
    return pd.DataFrame(np.concatenate(values, axis=1), index=index,
                        columns=pd.MultiIndex.from_tuples(columns, names=list(levels)))


def extract_outliers(poses: str | Path, video: str | Path, project: str | Path,
                     criteria: Sequence[str] = ("jump", "uncertain", "fitting", "events"),
                     n: int | None = None, mode: str = "kmeans", epsilon: float = 20.0,
                     p_bound: float = 0.01, seed: int = 0,
                     log: Callable[[str], None] = print) -> list[Path]:
    """Write outlier frames and their draft labels into the project; return the frames."""
    root = Path(project).expanduser().resolve()
    config = read_config(root)
    table = read_pose_table(poses)
    events_path = Path(str(poses).rsplit(".", 1)[0] + "_events.csv")
    events = pd.read_csv(events_path) if events_path.is_file() else None
    candidates = outlier_frames(table, criteria, epsilon, p_bound, events,
                                float(config.get("pcutoff", 0.6)))
    n = int(n if n is not None else config.get("numframes2pick", 20))
    video = Path(video)
    _, _, count = video_size(video)
    candidates = candidates[candidates < count]
    if len(candidates) > n:
        candidates = np.array(kmeans_of(video, [int(c) for c in candidates], n, seed)
                              if mode == "kmeans" else
                              candidates[np.linspace(0, len(candidates) - 1, n).round()
                                         .astype(int)])
    folder = root / "labeled-data" / video.stem
    folder.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    rows_of = table.row_of()
    written, rows, images = [], [], []
    try:
        for index in sorted(int(c) for c in candidates):
            path = folder / frame_name(index, count)
            images.append(f"labeled-data/{video.stem}/{path.name}")
            rows.append(rows_of[index])
            if path.exists():
                continue
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = capture.read()
            if not ok or not cv2.imwrite(str(path), frame):
                raise ProjectError(f"{video}: frame {index} cannot be read or written")
            written.append(path)
    finally:
        capture.release()
    if rows:
        draft = _draft_table(table, rows, images, config)
        iteration = int(config.get("iteration", 0))
        target = folder / f"machinelabels-iter{iteration}"
        if target.with_suffix(".h5").is_file():
            old = pd.read_hdf(target.with_suffix(".h5"))
            assert isinstance(old, pd.DataFrame)
            draft = pd.concat([old, draft[~draft.index.isin(old.index)]]).sort_index()
        draft.to_hdf(target.with_suffix(".h5"), key="df_with_missing", mode="w")
        draft.to_csv(target.with_suffix(".csv"))
    log(f"{video.name}: {len(candidates)} outlier frames ({', '.join(criteria)}) -> {folder}")
    return written


def merge(project: str | Path, scorer: str | None = None,
          log: Callable[[str], None] = print) -> int:
    """Fold drafted frames (machine labels) not yet in CollectedData into it; return how
    many frames were added, and increment the project's ``iteration``."""
    root = Path(project).expanduser().resolve()
    config = read_config(root)
    scorer = scorer or str(config.get("scorer") or "poseloop")
    iteration = int(config.get("iteration", 0))
    added = 0
    for machine in sorted((root / "labeled-data").glob(f"*/machinelabels-iter{iteration}.h5")):
        draft = pd.read_hdf(machine)
        assert isinstance(draft, pd.DataFrame)
        draft = draft.drop(columns="likelihood", level="coords")
        draft.columns = pd.MultiIndex.from_tuples(
            [(scorer, *c[1:]) for c in draft.columns], names=list(draft.columns.names))
        target = machine.with_name(f"CollectedData_{scorer}.h5")
        if target.is_file():
            labels = pd.read_hdf(target)
            assert isinstance(labels, pd.DataFrame)
            new = draft[~draft.index.isin(labels.index)]
            merged = pd.concat([labels, new.reindex(labels.columns, axis=1)]).sort_index()
        else:
            new, merged = draft, draft
        merged.to_hdf(target, key="df_with_missing", mode="w")
        merged.to_csv(target.with_suffix(".csv"))
        added += len(new)
        log(f"{machine.parent.name}: {len(new)} drafted frames merged into {target.name} "
            f"({len(draft) - len(new)} already saved there by the labeler)")
    text = (root / "config.yaml").read_text()
    raw = yaml.safe_load(text)
    raw["iteration"] = iteration + 1
    (root / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return added
