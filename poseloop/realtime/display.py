"""``--display``: a window with the newest frame and its pose drawn, off the loop thread.

The loop only copies the frame into a latest-wins slot; drawing and ``cv2.imshow`` run in
a display thread, so a slow screen never delays a pose. Needs an OpenCV build with GUI
support (``opencv-python``, not ``-headless``).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from poseloop.errors import ConfigError
from poseloop.modelspec import ModelSpec
from poseloop.realtime.types import Frame, Pose

WINDOW = "poseloop"


def draw_pose(image: np.ndarray, pose: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Draw the skeleton and bodyparts (filled when likelihood >= pcutoff) onto ``image``."""
    index = {name: i for i, name in enumerate(spec.bodyparts)}
    colors = cv2.applyColorMap(
        np.linspace(0, 255, max(len(index), 2)).astype(np.uint8)[:, None], cv2.COLORMAP_JET
    )[:, 0].tolist()
    for a, b in spec.skeleton:
        pa, pb = pose[index[a]], pose[index[b]]
        if min(pa[2], pb[2]) >= spec.pcutoff:
            cv2.line(image, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])), (200, 200, 200), 1,
                     cv2.LINE_AA)
    for i, (x, y, p) in enumerate(pose):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(image, (int(x), int(y)), 4, colors[i], -1 if p >= spec.pcutoff else 1,
                       cv2.LINE_AA)
    return image


class Display:
    """Callable as the engine's ``on_pose``: hands the newest frame to a display thread."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self._cond = threading.Condition()
        self._slot: tuple[np.ndarray, np.ndarray] | None = None
        self._buffers: list[np.ndarray] = []
        self._stop = False
        self.error: str | None = None
        try:
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
            cv2.destroyWindow(WINDOW)
        except cv2.error as e:
            raise ConfigError(
                "display: this OpenCV has no GUI support (opencv-python-headless); install "
                "opencv-python instead, or run without --display"
            ) from e
        self._thread = threading.Thread(target=self._run, name="display", daemon=True)
        self._thread.start()

    def __call__(self, pose: Pose, frame: Frame) -> None:
        """Copy the frame and pose into the slot (the previous undisplayed one is replaced)."""
        image = self._buffers.pop() if self._buffers else np.empty_like(frame.image)
        if image.shape != frame.image.shape:
            image = np.empty_like(frame.image)
        np.copyto(image, frame.image)
        with self._cond:
            if self._slot is not None:
                self._buffers.append(self._slot[0])
            self._slot = (image, pose.data.copy())
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    break
                image, pose = self._slot
                self._slot = None
            cv2.imshow(WINDOW, draw_pose(image, pose, self.spec))
            cv2.waitKey(1)
            self._buffers.append(image)
        cv2.destroyAllWindows()

    def close(self) -> None:
        """Stop the display thread and close the window."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(1.0)
