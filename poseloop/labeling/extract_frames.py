"""``poseloop extract-frames``: pick frames to label from a project's videos, as DeepLabCut does.

``kmeans`` (DeepLabCut's default): frames between ``start`` and ``stop`` (fractions of the
video, from config.yaml) are downsampled to ``RESIZE_WIDTH`` px wide greyscale, clustered
into ``n`` clusters by k-means, and from each cluster the frame nearest its centre is
taken, so the picks cover the video's variety of postures and scenes rather than its most
common one. ``uniform``: ``n`` frames evenly spaced in time. Frames are written as
``labeled-data/<video>/img<index>.png`` (the index zero-padded to the video's digits, as
DeepLabCut names them); frames already there are kept, never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from poseloop.errors import ProjectError
from poseloop.labeling.new_project import video_size
from poseloop.project import read_config

#: Width (px) frames are shrunk to before clustering (DeepLabCut's clusterResizeWidth).
RESIZE_WIDTH = 30
#: At most this many frames are read for clustering (evenly spread), so long videos stay fast.
MAX_CANDIDATES = 1000

Mode = Literal["kmeans", "uniform"]


def frame_name(index: int, count: int) -> str:
    """DeepLabCut's image name for frame ``index`` of a video of ``count`` frames."""
    return f"img{index:0{len(str(max(count, 1)))}d}.png"


def _read(capture: cv2.VideoCapture, index: int) -> np.ndarray | None:
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    return frame if ok else None


def pick_uniform(first: int, last: int, n: int) -> list[int]:
    """``n`` frame indices evenly spaced in [first, last)."""
    if last <= first:
        return []
    return sorted({int(i) for i in np.linspace(first, last - 1, min(n, last - first))})


def pick_kmeans(video: Path, first: int, last: int, n: int, seed: int = 0) -> list[int]:
    """One frame per k-means cluster of the downsampled frames (nearest the centre)."""
    return kmeans_of(video, pick_uniform(first, last, MAX_CANDIDATES), n, seed)


def kmeans_of(video: Path, candidates: list[int], n: int, seed: int = 0) -> list[int]:
    """``n`` of the ``candidates`` (ascending frame indices): one per k-means cluster of
    the downsampled frames, the one nearest its cluster's centre."""
    if len(candidates) > MAX_CANDIDATES:
        candidates = [candidates[i] for i in pick_uniform(0, len(candidates), MAX_CANDIDATES)]
    if len(candidates) <= n:
        return candidates
    capture = cv2.VideoCapture(str(video))
    rows, kept = [], []
    wanted = set(candidates)
    try:
        # decoding on from the first candidate is faster than seeking to each (a seek in an
        # MPEG-4 file decodes from the previous key frame)
        capture.set(cv2.CAP_PROP_POS_FRAMES, candidates[0])
        for index in range(candidates[0], candidates[-1] + 1):
            if index not in wanted:
                if not capture.grab():
                    break
                continue
            ok, frame = capture.read()
            if not ok:
                break
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            h = max(1, round(grey.shape[0] * RESIZE_WIDTH / grey.shape[1]))
            rows.append(cv2.resize(grey, (RESIZE_WIDTH, h), interpolation=cv2.INTER_AREA))
            kept.append(index)
    finally:
        capture.release()
    if len(kept) <= n:
        return kept
    data = np.stack(rows).reshape(len(rows), -1).astype(np.float32)
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 0.1)
    _, labels, centres = cv2.kmeans(data, n, np.empty(0), criteria, 3, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    picks = []
    for c in range(n):
        members = np.flatnonzero(labels == c)
        if len(members):
            d = ((data[members] - centres[c]) ** 2).sum(axis=1)
            picks.append(kept[int(members[np.argmin(d)])])
    return sorted(picks)


def extract_frames(project: str | Path, mode: Mode = "kmeans", n: int | None = None,
                   seed: int = 0, log: Callable[[str], None] = print) -> list[Path]:
    """Write frames to label for every video of the project; return the new image files."""
    root = Path(project).expanduser().resolve()
    config = read_config(root)
    if mode not in ("kmeans", "uniform"):
        raise ProjectError(f"extract-frames: mode must be kmeans or uniform, got {mode!r}")
    n = int(n if n is not None else config.get("numframes2pick", 20))
    if n < 1:
        raise ProjectError(f"extract-frames: --n must be at least 1, got {n}")
    start, stop = float(config.get("start", 0)), float(config.get("stop", 1))
    if not 0 <= start < stop <= 1:
        raise ProjectError(f"{root / 'config.yaml'}: start ({start}) and stop ({stop}) must "
                           "satisfy 0 <= start < stop <= 1")
    videos = list((config.get("video_sets") or {}).keys())
    if not videos:
        raise ProjectError(f"{root / 'config.yaml'}: video_sets lists no videos")
    written = []
    for name in videos:
        video = Path(name)
        if not video.is_absolute():
            video = root / video
        if not video.exists():
            video = root / "videos" / Path(name).name  # a project moved from elsewhere
        _, _, count = video_size(video)
        first, last = int(start * count), int(stop * count)
        picks = pick_uniform(first, last, n) if mode == "uniform" \
            else pick_kmeans(video, first, last, n, seed)
        folder = root / "labeled-data" / video.stem
        folder.mkdir(parents=True, exist_ok=True)
        capture = cv2.VideoCapture(str(video))
        try:
            for index in picks:
                path = folder / frame_name(index, count)
                if path.exists():
                    continue
                frame = _read(capture, index)
                if frame is None:
                    raise ProjectError(f"{video}: frame {index} cannot be read")
                if not cv2.imwrite(str(path), frame):
                    raise ProjectError(f"{path}: cannot write the frame")
                written.append(path)
        finally:
            capture.release()
        log(f"{video.name}: {len(picks)} frames picked ({mode}) -> {folder}")
    return written
