"""The synthetic animal seen in 3D by a rig of virtual cameras, with its 3D ground truth.

The open field of :class:`poseloop.synthetic.SyntheticScene` is laid on the floor of a
world in millimetres (``mm_per_px`` per scene pixel, centred on the origin, z up) and the
animal's body is lifted to ``animal_height`` above it, so the views see it with parallax:
its bodyparts are 3D points ``(x, y, animal_height)``. Each virtual camera (known
intrinsics and pose, no lens distortion) renders the floor and the animal as two planes
through their exact homographies, so the drawn bodyparts are where the camera model
projects them. The views look down at ``elevation`` degrees from around the arena, like a
lab's rig over an open field, and the demo's synthetic model (trained on top-down views)
finds the animal in them.

:func:`view_rig` is the rig; :class:`RigScene` renders camera ``i`` at time ``t`` and gives
the ground truth; the camera kind ``synthetic_view`` (:mod:`poseloop.realtime.cameras.
synthetic_view`) serves one view as a camera, so a camera group of them is a synchronised
multi-camera rig with known 3D truth.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from poseloop.synthetic import SyntheticScene
from poseloop.threed.calibration import CameraCalibration, Rig
from poseloop.threed.synthetic_rig import look_at

#: Scene pixels are this many mm on the floor (the 320 x 240 scene: a 320 x 240 mm arena).
MM_PER_PX = 1.0
#: Height of the animal's bodyparts above the floor (mm).
ANIMAL_HEIGHT = 20.0


def view_rig(cameras: int = 3, size: tuple[int, int] = (400, 320), elevation: float = 65.0,
             distance: float = 560.0, scale: float = 1.0, mm_per_px: float = MM_PER_PX) -> Rig:
    """``cameras`` virtual cameras evenly around the arena, ``distance`` mm from its centre,
    looking down at ``elevation`` degrees; ``scale`` is the image pixels per scene pixel at
    the arena's centre (the demo model's animal size at 1)."""
    w, h = size
    f = scale * distance / mm_per_px
    cams = []
    for i in range(cameras):
        azimuth = 2 * math.pi * i / cameras + math.pi / 6
        el = math.radians(elevation)
        center = distance * np.array([math.cos(el) * math.cos(azimuth),
                                      math.cos(el) * math.sin(azimuth), math.sin(el)])
        rvec, tvec = look_at(center, np.zeros(3))
        matrix = np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])
        cams.append(CameraCalibration(f"view{i}", (w, h), matrix, np.zeros(5), rvec, tvec))
    return Rig(cams)


class RigScene:
    """The synthetic scene rendered by every camera of ``rig`` (see the module docstring)."""

    def __init__(self, rig: Rig, scene_size: tuple[int, int] = (320, 240), seed: int = 0,
                 mm_per_px: float = MM_PER_PX, animal_height: float = ANIMAL_HEIGHT) -> None:
        self.rig = rig
        self.scene = SyntheticScene(*scene_size, seed=seed)
        self.mm_per_px = mm_per_px
        self.animal_height = animal_height
        w, h = scene_size
        s = mm_per_px
        #: scene pixel (u, v, 1) -> world (x, y, 1) on a horizontal plane: x right, y up
        self._to_world = np.array([[s, 0.0, -s * (w - 1) / 2], [0.0, -s, s * (h - 1) / 2],
                                   [0.0, 0.0, 1.0]])
        self._floor_h = [self._homography(c, 0.0) for c in rig.cameras]
        self._animal_h = [self._homography(c, animal_height) for c in rig.cameras]
        self._floors = [cv2.warpPerspective(self.scene.floor, hm, c.size,
                                            flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE)
                        for hm, c in zip(self._floor_h, rig.cameras, strict=True)]
        self._texture = np.empty((h, w, 3), np.uint8)
        self._diff = np.empty((h, w, 3), np.uint8)
        self._mask = np.empty((h, w), np.uint8)
        self._warped = [np.empty((c.size[1], c.size[0], 3), np.uint8) for c in rig.cameras]
        self._warped_mask = [np.empty((c.size[1], c.size[0]), np.uint8) for c in rig.cameras]

    def _homography(self, camera: CameraCalibration, z: float) -> np.ndarray:
        """Scene pixels -> camera pixels for the horizontal plane at height ``z``."""
        rt = camera.extrinsics
        plane = np.column_stack([rt[:, 0], rt[:, 1], rt[:, 2] * z + rt[:, 3]])
        return camera.matrix @ plane @ self._to_world

    def keypoints_3d(self, t: float) -> np.ndarray:
        """K x 3 world positions (mm) of the bodyparts at ``t`` seconds."""
        return self._lift(self.scene.render_into(t, self._texture))

    def _lift(self, keypoints: np.ndarray) -> np.ndarray:
        uv1 = np.column_stack([keypoints, np.ones(len(keypoints))])
        xy = uv1 @ self._to_world.T
        return np.column_stack([xy[:, :2], np.full(len(keypoints), self.animal_height)])

    def render_into(self, camera: int, t: float, out: np.ndarray) -> tuple[np.ndarray,
                                                                            np.ndarray]:
        """Draw camera ``camera``'s view at ``t`` s into ``out`` (H x W x 3 uint8); returns
        (K x 2 keypoints in that view's pixels, K x 3 world keypoints)."""
        cam = self.rig.cameras[camera]
        w, h = cam.size
        if out.shape != (h, w, 3) or out.dtype != np.uint8:
            raise ValueError(f"out must be {h}x{w}x3 uint8 for {cam.name}, got {out.shape} "
                             f"{out.dtype}")
        keypoints = self.scene.render_into(t, self._texture)
        cv2.absdiff(self._texture, self.scene.floor, dst=self._diff)
        np.max(self._diff, axis=2, out=self._mask)  # the animal: where it differs from the floor
        hm = self._animal_h[camera]
        warped, mask = self._warped[camera], self._warped_mask[camera]
        cv2.warpPerspective(self._texture, hm, (w, h), dst=warped, flags=cv2.INTER_LINEAR)
        cv2.warpPerspective(self._mask, hm, (w, h), dst=mask, flags=cv2.INTER_NEAREST)
        np.copyto(out, self._floors[camera])
        cv2.copyTo(warped, mask, out)
        world = self._lift(keypoints)
        return cam.project(world).astype(np.float32), world
