"""Real frames for export-time checks: a run's labeled images, a video's first frames.

Everything here returns BGR uint8 H x W x 3 arrays, as OpenCV cameras and video files give
them and as the exported graph takes them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from poseloop.errors import ModelError
from poseloop.project import LabeledFrame, Project

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def load_bgr(project: Project, frame: LabeledFrame) -> np.ndarray:
    """A labeled frame's full image, BGR."""
    return cv2.cvtColor(project.load_image(frame), cv2.COLOR_RGB2BGR)


def pick(images: list[str], n: int) -> list[str]:
    """``n`` images spread evenly over a list (all of them if it is shorter)."""
    if n >= len(images):
        return list(images)
    return [images[i] for i in np.linspace(0, len(images) - 1, n).round().astype(int)]


def video_frames(path: str | Path, n: int) -> list[np.ndarray]:
    """The first ``n`` frames of a video file (fewer if it is shorter)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ModelError(f"{path}: cannot open video")
    frames = []
    try:
        while len(frames) < n:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise ModelError(f"{path}: no frames could be read")
    return frames


def folder_frames(path: str | Path, n: int) -> list[np.ndarray]:
    """Up to ``n`` images of a folder (sorted by name, spread evenly)."""
    names = sorted(str(p) for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    frames = [cv2.imread(p, cv2.IMREAD_COLOR) for p in pick(names, n)]
    frames = [f for f in frames if f is not None]
    if not frames:
        raise ModelError(f"{path}: no readable images ({', '.join(IMAGE_SUFFIXES)})")
    return frames


def read_frames(path: str | Path, n: int) -> list[np.ndarray]:
    """Up to ``n`` frames of a video file or a folder of images."""
    path = Path(path)
    if path.is_dir():
        return folder_frames(path, n)
    if not path.is_file():
        raise ModelError(f"{path}: frames not found (give a video file or an image folder)")
    return video_frames(path, n)
