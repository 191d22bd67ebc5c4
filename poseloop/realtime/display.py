"""``display:`` (``--display``): a window with the newest frame and its poses drawn.

A sink: the loop only copies the frame into a latest-wins slot (a replaced, undisplayed
frame counts in ``dropped``); drawing and ``cv2.imshow`` run in a display thread, so a slow
screen never delays a pose. With triangulated 3D poses the frame is the first camera's, and
that camera's 2D poses (``Pose.views``) are drawn on it. Needs an OpenCV build with GUI
support (``opencv-python``, not ``-headless``).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
from pydantic import Field

from poseloop.config import Strict
from poseloop.errors import ConfigError
from poseloop.realtime.sinks import SINKS
from poseloop.realtime.types import ActionRecord, Frame, Pose, Session


class DisplayConfig(Strict):
    """A window on this machine's screen (``display: true`` in a config)."""

    window: str = Field(default="poseloop", min_length=1, description="window title")


#: BGR colours of a multi-animal model's individuals (skeleton and name), in turn.
ANIMAL_COLORS = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214),
                 (189, 103, 148), (75, 86, 140), (194, 119, 227), (34, 189, 188))


def image_points(pose: Pose, camera: int = 0) -> np.ndarray | None:
    """The 2D points (N x K x 3 pixels) to draw on ``camera``'s frame: the pose's points,
    or for a triangulated 3D pose (N x K x 4, world units) that camera's view from
    ``pose.views``; None when a 3D pose has no views."""
    if pose.points.shape[-1] != 4:
        return pose.points
    return None if pose.views is None else pose.views[camera]


def draw_pose(image: np.ndarray, points: np.ndarray, session: Session) -> np.ndarray:
    """Draw every individual's skeleton and bodyparts (filled when likelihood >= pcutoff)
    onto ``image``; points N x K x 3 (or K x 3) pixels of that image (see ``image_points``
    for 3D poses). A multi-animal session draws each animal's skeleton in its own colour
    with its name beside it."""
    if points.shape[-1] != 3:
        raise ValueError(f"draw_pose draws 2D points (x, y, likelihood), got shape "
                         f"{points.shape}; for 3D poses draw a camera's view (image_points)")
    index = {name: i for i, name in enumerate(session.bodyparts)}
    colors = cv2.applyColorMap(
        np.linspace(0, 255, max(len(index), 2)).astype(np.uint8)[:, None], cv2.COLORMAP_JET
    )[:, 0].tolist()
    cutoff = session.pcutoff
    for n, pose in enumerate(points.reshape(-1, len(index), points.shape[-1])):
        line = ANIMAL_COLORS[n % len(ANIMAL_COLORS)] if session.multi_animal else (200, 200, 200)
        for a, b in session.skeleton:
            pa, pb = pose[index[a]], pose[index[b]]
            if min(pa[2], pb[2]) >= cutoff:
                cv2.line(image, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])),
                         line, 1, cv2.LINE_AA)
        for i, (x, y, p) in enumerate(pose):
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(image, (int(x), int(y)), 4, colors[i], -1 if p >= cutoff else 1,
                           cv2.LINE_AA)
        confident = pose[pose[:, 2] >= cutoff]
        if session.multi_animal and len(confident) and n < len(session.individuals):
            x, y = confident[:, 0].min(), confident[:, 1].min()
            cv2.putText(image, session.individuals[n], (int(x), max(int(y) - 6, 10)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, line, 1, cv2.LINE_AA)
    return image


@SINKS.register("display", DisplayConfig)
class Display:
    """The display sink: hands the newest frame and its poses to a display thread."""

    name = "display"
    after_publish = True

    def __init__(self, config: DisplayConfig) -> None:
        self.config = config
        self.dropped = 0
        self.fatal: str | None = None
        self._session: Session | None = None
        self._cond = threading.Condition()
        self._slot: tuple[np.ndarray, np.ndarray | None] | None = None
        self._buffers: list[np.ndarray] = []
        self._stop = False
        self._thread: threading.Thread | None = None

    def open(self, session: Session) -> None:
        """Check that this OpenCV can show windows, and start the display thread."""
        try:
            cv2.namedWindow(self.config.window, cv2.WINDOW_NORMAL)
            cv2.destroyWindow(self.config.window)
        except cv2.error as e:
            raise ConfigError(
                "display: this OpenCV has no GUI support (opencv-python-headless); install "
                "opencv-python instead, or run without --display"
            ) from e
        self._session = session
        self._thread = threading.Thread(target=self._run, name="display", daemon=True)
        self._thread.start()

    def pose(self, pose: Pose, frame: Frame) -> None:
        """Copy the frame and poses into the slot (the previous undisplayed one is replaced);
        3D poses are drawn as the frame's camera saw them."""
        image = self._buffers.pop() if self._buffers else np.empty_like(frame.image)
        if image.shape != frame.image.shape:
            image = np.empty_like(frame.image)
        np.copyto(image, frame.image)
        with self._cond:
            if self._slot is not None:
                self._buffers.append(self._slot[0])
                self.dropped += 1
            self._slot = (image, image_points(pose, frame.camera))
            self._cond.notify()

    def event(self, action: ActionRecord) -> None:
        """Actions are not shown in the window."""

    def _run(self) -> None:
        assert self._session is not None
        while True:
            with self._cond:
                while self._slot is None and not self._stop:
                    self._cond.wait()
                if self._stop or self._slot is None:
                    break
                image, points = self._slot
                self._slot = None
            if points is not None:
                draw_pose(image, points, self._session)
            cv2.imshow(self.config.window, image)
            cv2.waitKey(1)
            self._buffers.append(image)
        cv2.destroyAllWindows()

    def close(self) -> None:
        """Stop the display thread and close the window."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(1.0)
