"""A virtual rig with known truth: three cameras of known intrinsics, distortion and pose
around an arena, and a ChArUco board rendered into their views (lens distortion included),
for calibration tests and benchmarks.
"""

from __future__ import annotations

import cv2
import numpy as np

from poseloop.threed.calibrate import Board
from poseloop.threed.calibration import CameraCalibration, Rig


def look_at(center: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rodrigues rotation and translation (world -> camera) of a camera at ``center``
    looking at ``target``, image y pointing down (world z is up)."""
    z = np.asarray(target, float) - np.asarray(center, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])
    return cv2.Rodrigues(r)[0].ravel(), -r @ np.asarray(center, float)


def three_camera_rig(size: tuple[int, int] = (1280, 1024)) -> Rig:
    """Three cameras ~0.7 m from an arena at the origin (mm), each with lens distortion."""
    w, h = size
    cams = []
    for i, (center, k1) in enumerate([((600.0, 0.0, 400.0), -0.25),
                                      ((-300.0, 520.0, 450.0), -0.1),
                                      ((-300.0, -520.0, 350.0), 0.05)]):
        rvec, tvec = look_at(np.array(center), np.zeros(3))
        f = (900.0 + 20 * i) * w / 1280
        matrix = np.array([[f, 0.0, w / 2 - 0.5 + 3 * i], [0.0, f, h / 2 - 0.5 - 2 * i],
                           [0.0, 0.0, 1.0]])
        cams.append(CameraCalibration(f"cam{i}", size, matrix,
                                      np.array([k1, 0.02, 0.001, -0.0005, 0.0]), rvec, tvec))
    return Rig(cams)


def board_poses(n: int, seed: int = 0, spread: float = 60.0, max_tilt: float = 0.6
                ) -> list[np.ndarray]:
    """``n`` board -> world transforms (4 x 4): the board tilted up to ~35 degrees, its
    printed side facing up (the board frame's z axis points into the board, as OpenCV's
    does, so down), centred within ``spread`` mm of the origin (a calibration moves the board
    over the whole field of view, where the lens distortion shows)."""
    rng = np.random.default_rng(seed)
    face_up = np.diag([1.0, -1.0, -1.0])  # 180 degrees about x
    poses = []
    for _ in range(n):
        tilt = rng.uniform(-max_tilt, max_tilt, 3)
        tilt[2] = rng.uniform(-np.pi, np.pi)
        t = np.eye(4)
        t[:3, :3] = cv2.Rodrigues(tilt)[0] @ face_up
        t[:3, 3] = rng.uniform(-spread, spread, 3) * [1, 1, 0.5]
        poses.append(t)
    return poses


def camera_rays(camera: CameraCalibration, supersample: int = 2) -> np.ndarray:
    """World-frame ray directions of ``camera``'s pixels on a ``supersample``-times finer
    grid (H*s x W*s x 3): the lens distortion undone once, reused for every view."""
    w, h = camera.size
    s = supersample
    u, v = np.meshgrid((np.arange(w * s) + 0.5) / s - 0.5, (np.arange(h * s) + 0.5) / s - 0.5)
    pix = np.stack([u.ravel(), v.ravel()], 1).reshape(-1, 1, 2)
    norm = cv2.undistortPoints(pix, camera.matrix, camera.distortions,
                               criteria=(cv2.TERM_CRITERIA_COUNT, 20, 0)).reshape(-1, 2)
    rays = np.hstack([norm, np.ones((len(norm), 1))]) @ camera.rotation_matrix
    return rays.reshape(h * s, w * s, 3)


def render_board(camera: CameraCalibration, board: Board, board_to_world: np.ndarray,
                 pixels_per_mm: float = 4.0, rays: np.ndarray | None = None) -> np.ndarray:
    """The view of ``camera`` (BGR, its size) of the board, centred on the pose's origin,
    on a grey background, with the camera's lens distortion; rendered on a 2x finer grid and
    averaged down (no aliasing). ``rays``: :func:`camera_rays` of the camera, if at hand."""
    margin = 10
    sx, sy = board.squares
    width_mm, height_mm = sx * board.square_length, sy * board.square_length
    size = (round(width_mm * pixels_per_mm) + 2 * margin,
            round(height_mm * pixels_per_mm) + 2 * margin)
    if board.kind == "charuco":
        texture = board.charuco.generateImage(size, marginSize=margin)
    else:
        texture = np.full((size[1], size[0]), 255, np.uint8)
        for r in range(sy):
            for c in range(sx):
                if (r + c) % 2 == 0:
                    x0 = margin + round(c * board.square_length * pixels_per_mm)
                    y0 = margin + round(r * board.square_length * pixels_per_mm)
                    x1 = margin + round((c + 1) * board.square_length * pixels_per_mm)
                    y1 = margin + round((r + 1) * board.square_length * pixels_per_mm)
                    texture[y0:y1, x0:x1] = 0
    if rays is None:
        rays = camera_rays(camera)
    fine_h, fine_w = rays.shape[:2]
    # into the board's frame, where the board is the plane z = 0
    rb, tb = board_to_world[:3, :3], board_to_world[:3, 3]
    origin = rb.T @ (camera.center - tb)
    dirs = rays.reshape(-1, 3) @ rb
    with np.errstate(divide="ignore", invalid="ignore"):
        s = -origin[2] / dirs[:, 2]
    pts = origin[:2] + s[:, None] * dirs[:, :2]
    pts[~(s > 0)] = -1e6  # behind the camera, or parallel to the board
    # the board's corners count from its top-left square corner: centre the board; a
    # texture pixel's centre is at its index (edges drawn at whole pixels lie at -0.5)
    offset = np.array([width_mm, height_mm]) / 2
    map_x = ((pts[:, 0] + offset[0]) * pixels_per_mm + margin - 0.5).reshape(fine_h, fine_w)
    map_y = ((pts[:, 1] + offset[1]) * pixels_per_mm + margin - 0.5).reshape(fine_h, fine_w)
    view = cv2.remap(texture, map_x.astype(np.float32), map_y.astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=128)
    view = cv2.resize(view, camera.size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(view, cv2.COLOR_GRAY2BGR)


def centred(board: Board, board_to_world: np.ndarray) -> np.ndarray:
    """The transform of the board's own corner frame (origin at its top-left corner, as
    its corner coordinates are given) for a pose that centres the board on its origin."""
    shift = np.eye(4)
    shift[:2, 3] = -np.array(board.squares) * board.square_length / 2
    return board_to_world @ shift
