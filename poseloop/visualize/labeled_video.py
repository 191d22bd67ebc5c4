"""``poseloop labeled-video``: a video with the poses drawn on it, as DeepLabCut's
``create_labeled_video`` makes.

Every bodypart as a dot in its own colour (single-animal) or every animal in its own colour
(multi-animal, with its name), filled when its likelihood reaches ``pcutoff`` and hollow
below it; the skeleton; optional trails of the last ``trail`` frames. Frames the table has
no row for are written undrawn. MPEG-4 (``mp4v``): the codec every OpenCV build writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from poseloop.errors import ProjectError
from poseloop.realtime.display import ANIMAL_COLORS
from poseloop.visualize.pose_table import PoseTable, read_pose_table


def part_colors(k: int) -> list[tuple[int, int, int]]:
    """BGR colours of K bodyparts along a rainbow (DeepLabCut's default colormap)."""
    ramp = np.linspace(0, 255, max(k, 2)).astype(np.uint8)[:, None]
    colors = cv2.applyColorMap(ramp, cv2.COLORMAP_RAINBOW)[:, 0]
    return [(int(c[0]), int(c[1]), int(c[2])) for c in colors[:k]]


def draw(image: np.ndarray, animals: np.ndarray, table: PoseTable, pcutoff: float,
         skeleton: Sequence[tuple[str, str]], trail: np.ndarray | None = None,
         radius: int = 4) -> np.ndarray:
    """Draw one frame's animals (N x K x 3) and their trails (T x N x K x 3) on ``image``."""
    k = len(table.bodyparts)
    parts = part_colors(k)
    index = {p: i for i, p in enumerate(table.bodyparts)}
    edges = [(index[a], index[b]) for a, b in skeleton if a in index and b in index]
    for n, pose in enumerate(animals):
        animal = ANIMAL_COLORS[n % len(ANIMAL_COLORS)]
        color_of = (lambda _j, c=animal: c) if table.multi_animal else (lambda j: parts[j])
        if trail is not None:
            for j in range(k):
                track = trail[:, n, j]
                track = track[(track[:, 2] >= pcutoff) & np.isfinite(track[:, 0])]
                if len(track) > 1:
                    cv2.polylines(image, [np.round(track[:, :2]).astype(np.int32)], False,
                                  color_of(j), 1, cv2.LINE_AA)
        for a, b in edges:
            pa, pb = pose[a], pose[b]
            if min(pa[2], pb[2]) >= pcutoff and np.isfinite(pa[:2]).all() \
                    and np.isfinite(pb[:2]).all():
                cv2.line(image, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])),
                         animal if table.multi_animal else (200, 200, 200), 1, cv2.LINE_AA)
        for j, (x, y, p) in enumerate(pose):
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(image, (int(round(x)), int(round(y))), radius, color_of(j),
                           -1 if p >= pcutoff else 1, cv2.LINE_AA)
        seen = pose[(pose[:, 2] >= pcutoff) & np.isfinite(pose[:, 0])]
        if table.multi_animal and len(seen):
            cv2.putText(image, table.individuals[n], (int(seen[:, 0].min()),
                        max(int(seen[:, 1].min()) - 6, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        animal, 1, cv2.LINE_AA)
    return image


def labeled_video(poses: str | Path, video: str | Path, out: str | Path | None = None,
                  pcutoff: float = 0.6, skeleton: Sequence[tuple[str, str]] = (),
                  trail: int = 0, log: Callable[[str], None] = print) -> Path:
    """Write ``<video>_labeled.mp4`` (or ``out``) with the poses of ``poses`` drawn."""
    table = read_pose_table(poses)
    video = Path(video)
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ProjectError(f"{video}: not a readable video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    w, h = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    out = Path(out) if out else video.with_name(f"{video.stem}_labeled.mp4")
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        capture.release()
        raise ProjectError(f"{out}: cannot write an MPEG-4 video here")
    rows = table.row_of()
    written = 0
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            row = rows.get(index)
            if row is not None:
                past = table.points[max(0, row - trail): row + 1] if trail else None
                draw(frame, table.points[row], table, pcutoff, skeleton, past)
            writer.write(frame)
            written += 1
            index += 1
    finally:
        capture.release()
        writer.release()
    if written == 0:
        tmp.unlink(missing_ok=True)
        raise ProjectError(f"{video}: no frame could be read")
    tmp.replace(out)
    log(f"{out}: {written} frames, {min(len(rows), written)} with poses")
    return out
