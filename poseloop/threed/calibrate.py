"""Calibrate a rig from videos of a board: ``poseloop calibrate``.

Each camera films the same board (ChArUco or checkerboard) moved through the shared space,
the videos synchronised (frame i of every video is the same moment). Steps:

1. detect the board's corners in every frame (OpenCV: ``CharucoDetector`` or
   ``findChessboardCorners`` + sub-pixel refinement);
2. intrinsics of each camera (``cv2.calibrateCamera``: fx, fy, cx, cy, k1, k2, p1, p2);
3. the board's pose in each view (``solvePnP``) and, from frames two cameras share, each
   camera's pose relative to the first (the median over shared frames, chained along the
   cameras that share the most frames);
4. bundle adjustment (scipy ``least_squares``, Huber loss, sparse Jacobian): every camera's
   pose and intrinsics and every shared frame's board pose together, minimising the
   reprojection error of all detected corners. The first camera's frame is the world's.

The result is written as anipose's ``calibration.toml`` with the per-camera reprojection
errors in its ``[metadata]``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import lil_matrix

from poseloop.errors import ConfigError
from poseloop.threed.calibration import CameraCalibration, Rig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MIN_CORNERS = 6  # a view of the board with fewer is not used
MAX_INTRINSIC_FRAMES = 60  # frames per camera for calibrateCamera (spread over the video)


@dataclass(frozen=True)
class Board:
    """A calibration board. ``squares``: (columns, rows) of squares; lengths in the rig's
    unit (mm); ChArUco boards also need the marker length and ArUco dictionary."""

    kind: str = "charuco"
    squares: tuple[int, int] = (7, 5)
    square_length: float = 25.0
    marker_length: float = 18.75
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self) -> None:
        if self.kind not in ("charuco", "checkerboard"):
            raise ConfigError(f"--board must be charuco or checkerboard, got {self.kind!r}")
        if min(self.squares) < 3:
            raise ConfigError(f"a board needs at least 3 x 3 squares, got {self.squares}")
        if self.kind == "charuco":
            if not 0 < self.marker_length < self.square_length:
                raise ConfigError(f"ChArUco marker length {self.marker_length} must be "
                                  f"between 0 and the square length {self.square_length}")
            if not hasattr(cv2.aruco, self.dictionary):
                raise ConfigError(f"unknown ArUco dictionary {self.dictionary!r} (e.g. "
                                  f"DICT_4X4_50, DICT_5X5_100)")

    @property
    def charuco(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard(self.squares, self.square_length, self.marker_length,
                                      dictionary)

    def corners_3d(self) -> np.ndarray:
        """The board's inner corners in its own frame (z = 0), indexed by corner id."""
        cols, rows = self.squares[0] - 1, self.squares[1] - 1
        grid = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2) * self.square_length
        if self.kind == "charuco":
            return np.asarray(self.charuco.getChessboardCorners(), np.float64)
        return np.hstack([grid, np.zeros((len(grid), 1))]).astype(np.float64)

    def detector(self) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
        """gray image -> (corner ids, M x 2 pixels) or None."""
        if self.kind == "charuco":
            charuco = cv2.aruco.CharucoDetector(self.charuco)

            def detect_charuco(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
                corners, ids, _, _ = charuco.detectBoard(gray)
                if ids is None or len(ids) < MIN_CORNERS:
                    return None
                return ids.ravel().astype(np.int64), corners.reshape(-1, 2).astype(np.float64)

            return detect_charuco
        pattern = (self.squares[0] - 1, self.squares[1] - 1)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)

        def detect_checkerboard(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
            found, corners = cv2.findChessboardCorners(
                gray, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
            if not found:
                return None
            corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), criteria)
            return np.arange(len(corners)), corners.reshape(-1, 2).astype(np.float64)

        return detect_checkerboard


@dataclass
class Detections:
    """One camera's board detections: frame -> (ids, pixels), and its image size."""

    name: str
    size: tuple[int, int]
    frames: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _frames(source: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR image) of a video's frames or an image folder's files (sorted by name)."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)})")
        for i, p in enumerate(files):
            image = cv2.imread(str(p))
            if image is None:
                raise ConfigError(f"{p}: not a readable image")
            yield i, image
        return
    if not source.is_file():
        raise ConfigError(f"{source}: no such video or image folder")
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise ConfigError(f"{source}: OpenCV cannot open this video")
    i = 0
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            yield i, image
            i += 1
    finally:
        cap.release()
    if i == 0:
        raise ConfigError(f"{source}: no frames could be decoded")


def detect(sources: Sequence[Path], names: Sequence[str], board: Board, every: int = 1,
           log: Callable[[str], None] = print) -> list[Detections]:
    """The board's corners in every ``every``-th frame of each camera's video or folder."""
    found = []
    for source, name in zip(sources, names, strict=True):
        detector = board.detector()
        det = Detections(name, (0, 0))
        for i, image in _frames(Path(source)):
            det.size = (image.shape[1], image.shape[0])
            if i % every:
                continue
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
            hit = detector(gray)
            if hit is not None:
                det.frames[i] = hit
        log(f"{name}: board found in {len(det.frames)} frames of {source}")
        if len(det.frames) < 3:
            raise ConfigError(f"camera {name!r} ({source}): the board was found in "
                              f"{len(det.frames)} frames; at least 3 are needed (check "
                              f"--board, --squares and the lengths)")
        found.append(det)
    return found


def _spread(points: np.ndarray) -> float:
    """How far a view's board corners are from lying on one line (the smaller standard
    deviation of their board coordinates): near-collinear views break calibrateCamera."""
    centred = points[:, :2] - points[:, :2].mean(axis=0)
    return float(np.linalg.svd(centred, compute_uv=False)[-1] / np.sqrt(len(points)))


def _intrinsics(det: Detections, corners_3d: np.ndarray, square: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(K, distortions) of one camera from its views of the board: views whose corners
    nearly lie on a line are left out, then views the first fit explains badly (> 3 x the
    median error: a misdetection), and the camera is calibrated again."""
    frames = [f for f in sorted(det.frames)
              if _spread(corners_3d[det.frames[f][0]]) >= 0.5 * square]
    if len(frames) < 3:
        raise ConfigError(f"camera {det.name!r}: only {len(frames)} views show the board "
                          f"spread over more than one row of corners; at least 3 are needed")
    if len(frames) > MAX_INTRINSIC_FRAMES:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, MAX_INTRINSIC_FRAMES)
                  .round().astype(int)]
    w, h = det.size
    k0 = np.array([[max(w, h), 0, w / 2 - 0.5], [0, max(w, h), h / 2 - 0.5], [0, 0, 1]], float)
    # fx = fy (square pixels), no k3: what a few dozen views of a board constrain well
    flags = cv2.CALIB_USE_INTRINSIC_GUESS | cv2.CALIB_FIX_K3 | cv2.CALIB_FIX_ASPECT_RATIO
    k, d = k0, np.zeros(5)
    for _ in range(2):
        obj = [corners_3d[det.frames[f][0]].astype(np.float32) for f in frames]
        img = [det.frames[f][1].astype(np.float32) for f in frames]
        _, k, d, _, _, _, _, per_view = cv2.calibrateCameraExtended(
            obj, img, det.size, k0.copy(), np.zeros(5), flags=flags)
        per_view = per_view.ravel()
        keep = per_view <= 3 * np.median(per_view) + 0.5
        if keep.all() or keep.sum() < 3:
            break
        frames = [f for f, ok in zip(frames, keep, strict=True) if ok]
    if not (0 < k[0, 0] < 20 * max(w, h)):
        raise ConfigError(f"camera {det.name!r}: the intrinsic calibration failed (focal "
                          f"length {k[0, 0]:.1f} px); film the board at more angles and "
                          f"over the whole image")
    return k, d.ravel()[:5]


def _board_pose(ids: np.ndarray, pixels: np.ndarray, corners_3d: np.ndarray, k: np.ndarray,
                d: np.ndarray, square: float) -> np.ndarray | None:
    """4 x 4 board -> camera transform from one view, or None when the view cannot give a
    sure one (corners nearly on a line, or a fit off by more than 2 px: a flipped pose)."""
    if _spread(corners_3d[ids]) < 0.5 * square:
        return None
    ok, rvec, tvec = cv2.solvePnP(corners_3d[ids], pixels, k, d,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return None
    back, _ = cv2.projectPoints(corners_3d[ids], rvec, tvec, k, d)
    if np.sqrt(np.mean(np.sum((back.reshape(-1, 2) - pixels) ** 2, axis=1))) > 2.0:
        return None
    t = np.eye(4)
    t[:3, :3] = cv2.Rodrigues(rvec)[0]
    t[:3, 3] = tvec.ravel()
    return t


def _median_transform(transforms: list[np.ndarray]) -> np.ndarray:
    """A robust mean of rigid transforms: the one nearest the translations' median."""
    ts = np.array([t[:3, 3] for t in transforms])
    median = np.median(ts, axis=0)
    return transforms[int(np.argmin(np.linalg.norm(ts - median, axis=1)))]


def _initial_poses(dets: list[Detections], poses: list[dict[int, np.ndarray]]
                   ) -> list[np.ndarray]:
    """World (camera 0) -> camera transforms, chained along the best-shared pairs."""
    n = len(dets)
    known = {0: np.eye(4)}
    while len(known) < n:
        best = None
        for j in range(n):
            if j in known:
                continue
            for i in known:
                shared = sorted(set(poses[i]) & set(poses[j]))
                if len(shared) >= 1 and (best is None or len(shared) > best[2]):
                    best = (i, j, len(shared), shared)
        if best is None:
            missing = [dets[j].name for j in range(n) if j not in known]
            raise ConfigError(f"camera {missing[0]!r} never sees the board in a frame where "
                              f"a calibrated camera sees it too: film the board where it "
                              f"and its neighbours both see it")
        i, j, _, shared = best
        # T_j<-world = T_j<-board * T_board<-i * T_i<-world
        rel = [poses[j][f] @ np.linalg.inv(poses[i][f]) for f in shared]
        known[j] = _median_transform(rel) @ known[i]
    return [known[j] for j in range(n)]


def _project(points: np.ndarray, rvec: np.ndarray, tvec: np.ndarray, k: np.ndarray,
             d: np.ndarray) -> np.ndarray:
    """World points -> pixels (N x 2) through one camera, OpenCV's distortion model."""
    out, _ = cv2.projectPoints(points.reshape(-1, 1, 3), rvec, tvec, k, d)
    return out.reshape(-1, 2)


_CAM = 6 + 8  # rvec, tvec, fx, fy, cx, cy, k1, k2, p1, p2


def _pack_camera(t: np.ndarray, k: np.ndarray, d: np.ndarray) -> np.ndarray:
    rvec = cv2.Rodrigues(t[:3, :3])[0].ravel()
    return np.concatenate([rvec, t[:3, 3], [k[0, 0], k[1, 1], k[0, 2], k[1, 2]], d[:4]])


def _unpack_camera(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    k = np.array([[p[6], 0, p[8]], [0, p[7], p[9]], [0, 0, 1.0]])
    return p[:3], p[3:6], k, np.array([p[10], p[11], p[12], p[13], 0.0])


def bundle_adjust(dets: list[Detections], corners_3d: np.ndarray, cams: list[np.ndarray],
                  boards: dict[int, np.ndarray]
                  ) -> tuple[list[np.ndarray], dict[int, np.ndarray], float]:
    """Refine every camera (packed) and every board pose (4 x 4, world frame) together on
    all detections; camera 0 stays the world frame. Returns the cameras, the board poses and
    the RMS reprojection error (px)."""
    frames = sorted(boards)
    frame_col = {f: i for i, f in enumerate(frames)}
    obs = []  # (camera, frame column, corner ids, pixels)
    for c, det in enumerate(dets):
        for f, (ids, px) in det.frames.items():
            if f in frame_col:
                obs.append((c, frame_col[f], ids, px))
    n_cam, n_frames = len(dets), len(frames)
    x0 = np.concatenate([np.concatenate(cams)] + [
        np.concatenate([cv2.Rodrigues(boards[f][:3, :3])[0].ravel(), boards[f][:3, 3]])
        for f in frames])
    n_res = sum(2 * len(ids) for _, _, ids, _ in obs)
    sparsity = lil_matrix((n_res, len(x0)), dtype=np.int8)
    row = 0
    for c, b, ids, _ in obs:
        m = 2 * len(ids)
        sparsity[row:row + m, c * _CAM:(c + 1) * _CAM] = 1
        off = n_cam * _CAM + 6 * b
        sparsity[row:row + m, off:off + 6] = 1
        row += m
    sparsity[:, 0:6] = 0  # camera 0's pose is the world frame: fixed

    def residuals(x: np.ndarray) -> np.ndarray:
        cam_params = x[:n_cam * _CAM].reshape(n_cam, _CAM)
        board_params = x[n_cam * _CAM:].reshape(n_frames, 6)
        out = []
        for c, b, ids, px in obs:
            rb, tb = board_params[b, :3], board_params[b, 3:]
            world = corners_3d[ids] @ cv2.Rodrigues(rb)[0].T + tb
            rvec, tvec, k, d = _unpack_camera(cam_params[c])
            if c == 0:
                rvec, tvec = x0[:3], x0[3:6]
            out.append((_project(world, rvec, tvec, k, d) - px).ravel())
        return np.concatenate(out)

    result = least_squares(residuals, x0, jac_sparsity=sparsity, loss="huber", f_scale=2.0,
                           x_scale="jac", method="trf", max_nfev=200)
    x = result.x
    x[:6] = x0[:6]
    rms = float(np.sqrt(np.mean(residuals(x) ** 2)))
    refined = {}
    for f, b in frame_col.items():
        t = np.eye(4)
        params = x[n_cam * _CAM + 6 * b:n_cam * _CAM + 6 * b + 6]
        t[:3, :3] = cv2.Rodrigues(params[:3])[0]
        t[:3, 3] = params[3:]
        refined[f] = t
    return [x[c * _CAM:(c + 1) * _CAM] for c in range(n_cam)], refined, rms


def calibrate(sources: Sequence[str | Path], board: Board, names: Sequence[str] | None = None,
              every: int = 1, log: Callable[[str], None] = print) -> tuple[Rig, dict[str, float]]:
    """Calibrate the rig filmed in ``sources`` (one synchronised video or image folder per
    camera); returns the rig and each camera's mean reprojection error (px)."""
    paths = [Path(s) for s in sources]
    if len(paths) < 2:
        raise ConfigError("calibrate needs the videos of at least two cameras")
    names = list(names) if names else [p.stem for p in paths]
    if len(names) != len(paths) or len(set(names)) != len(names):
        raise ConfigError(f"give one distinct name per video: {len(paths)} videos, names "
                          f"{names}")
    corners_3d = board.corners_3d()
    dets = detect(paths, names, board, every, log)
    intrinsics = [_intrinsics(det, corners_3d, board.square_length) for det in dets]
    poses: list[dict[int, np.ndarray]] = []
    for det, (k, d) in zip(dets, intrinsics, strict=True):
        found = {}
        for f, (ids, px) in det.frames.items():
            pose = _board_pose(ids, px, corners_3d, k, d, board.square_length)
            if pose is not None:
                found[f] = pose
        poses.append(found)
    world = _initial_poses(dets, poses)
    counts: dict[int, list[int]] = defaultdict(list)
    for c, found in enumerate(poses):
        for f in found:
            counts[f].append(c)
    boards = {}  # board -> world, from the first camera that saw each shared frame
    for f, cams_seeing in counts.items():
        if len(cams_seeing) >= 2:
            c = cams_seeing[0]
            boards[f] = np.linalg.inv(world[c]) @ poses[c][f]
    if not boards:
        raise ConfigError("no frame shows the board to two cameras at once: the extrinsics "
                          "cannot be found")
    packed = [_pack_camera(world[c], *intrinsics[c]) for c in range(len(dets))]
    log(f"bundle adjustment: {len(dets)} cameras, {len(boards)} shared board poses")
    refined, boards, rms = bundle_adjust(dets, corners_3d, packed, boards)
    cameras, errors = [], {}
    for c, det in enumerate(dets):
        rvec, tvec, k, d = _unpack_camera(refined[c])
        cameras.append(CameraCalibration(det.name, det.size, k, d, rvec.copy(), tvec.copy()))
    rig = Rig(cameras)
    for c, det in enumerate(dets):
        errs = []
        for f, (ids, px) in det.frames.items():
            if f in boards:
                world_pts = corners_3d[ids] @ boards[f][:3, :3].T + boards[f][:3, 3]
                errs.append(np.linalg.norm(cameras[c].project(world_pts) - px, axis=1))
        errors[det.name] = float(np.mean(np.concatenate(errs))) if errs else float("nan")
    log(f"reprojection error (RMS, all corners): {rms:.3f} px; per camera: "
        + ", ".join(f"{n} {e:.3f}" for n, e in errors.items()))
    rig.metadata = {"board": board.kind, "squares": list(board.squares),
                    "square_length": board.square_length, "rms_px": rms,
                    **{f"error_px_{n}": e for n, e in errors.items()}}
    return rig, errors
