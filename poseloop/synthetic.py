"""A synthetic top-down mouse in an open field, and a DeepLabCut project made from it.

``poseloop demo`` trains on a project written by :func:`write_project`, so it needs no
downloaded data; the live engine can use :class:`SyntheticScene` as a camera. Rendering is
a few OpenCV draw calls over a precomputed floor (well under a millisecond at 320x240), and
every frame is a deterministic function of ``(seed, t)``.

Coordinates are image pixels with ``x`` to the right, ``y`` down and pixel centres on
integers (OpenCV and DeepLabCut agree). The camera looks down on the arena, so the image is
not mirrored: the animal's *left* is counter-clockwise from its heading as seen on screen.
With heading ``h`` (head centre to snout) and ``e = leftear - head centre``, the 2-D cross
product ``h[0] * e[1] - h[1] * e[0]`` is **negative** in image coordinates (``y`` down);
for the right ear it is positive. Flipping an image horizontally therefore swaps which ear
is on the animal's left, so a flip augmentation must swap the ``leftear`` and ``rightear``
labels.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd
import yaml

BODYPARTS: tuple[str, ...] = ("snout", "leftear", "rightear", "tailbase")
SKELETON: list[list[str]] = [
    ["snout", "leftear"],
    ["snout", "rightear"],
    ["leftear", "tailbase"],
    ["rightear", "tailbase"],
]
#: Name of the labeled-data folder and video stem in a written project.
VIDEO_NAME = "synth"
VIDEO_FPS = 30.0
#: Time step (s) of the precomputed trajectory; frames interpolate linearly between steps.
TRAJECTORY_DT = 0.02

_SHIFT = 4  # OpenCV fixed-point bits: coordinates are drawn at 1/16 px.
_ONE = 1 << _SHIFT
_CHUNK_STEPS = 1000  # the trajectory is extended lazily, 20 s at a time
_TAIL_POINTS = 9
_TAIL_TAPER = 0.05 * (1.0 - 0.75 * np.linspace(0.0, 1.0, _TAIL_POINTS))  # half width / L
_UNIT_CIRCLE = np.stack(
    [
        np.cos(np.linspace(0, 2 * np.pi, 24, endpoint=False)),
        np.sin(np.linspace(0, 2 * np.pi, 24, endpoint=False)),
    ],
    axis=1,
)

# BGR colours. Only the ears, nose and tail are reddish (R - G large), which the tests rely on.
_BODY = (40, 37, 42)
_BACK = (58, 55, 62)
_TAIL = (120, 118, 152)
_EAR_RIM = (62, 58, 78)
_EAR_INNER = (140, 124, 205)
_NOSE = (150, 135, 240)


class _Ellipse(NamedTuple):
    x: float
    y: float
    a: float  # semi-axis along ``angle``
    b: float
    angle: float  # radians


class _Pose(NamedTuple):
    keypoints: tuple[tuple[float, float], ...]  # in BODYPARTS order, not yet quantised
    rear: _Ellipse
    back: _Ellipse
    front: _Ellipse
    head: _Ellipse
    muzzle: tuple[tuple[float, float], ...]  # triangle from the head to the snout
    ear_radius: float
    nose_radius: float
    tail: list[tuple[float, float]]  # centre line, tailbase first


def _quantise(v: float) -> float:
    """Round to the drawing grid so labels equal the drawn positions exactly."""
    return round(v * _ONE) / _ONE


def _fx(v: float) -> int:
    return int(round(v * _ONE))


class SyntheticScene:
    """A mouse-like animal walking over a textured open-field floor, seen from above.

    The animal's state (position, heading, body bend, head yaw, tail curl) follows smooth
    random processes with wall avoidance, integrated on a ``TRAJECTORY_DT`` grid from the
    seed; the grid is extended on demand, so ``render(t)`` is reproducible for any
    ``t >= 0`` regardless of the order in which times are requested. Body length
    (snout to tailbase, straight) is ``width / 6``.
    """

    def __init__(self, width: int = 320, height: int = 240, seed: int = 0) -> None:
        if width < 64 or height < 48:
            raise ValueError(f"scene must be at least 64x48 pixels, got {width}x{height}")
        self.width = int(width)
        self.height = int(height)
        self.seed = int(seed)
        self.body_length = self.width / 6.0
        floor_seq, path_seq = np.random.SeedSequence(self.seed).spawn(2)
        wall = max(4, round(0.03 * min(self.width, self.height)))
        pad = 2.0
        self._bounds = (
            wall + pad,
            wall + pad,
            self.width - 1 - wall - pad,
            self.height - 1 - wall - pad,
        )
        self.floor = self._make_floor(np.random.default_rng(floor_seq), wall)
        self.floor.flags.writeable = False
        self._rng = np.random.default_rng(path_seq)
        self._states = np.empty((0, 6))
        self._init_state()
        self._extend()

    # ------------------------------------------------------------------ floor
    def _make_floor(self, rng: np.random.Generator, wall: int) -> np.ndarray:
        """Static background: lit, noisy floor with tape marks inside darker walls."""
        h, w = self.height, self.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        lx, ly = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        r2 = ((xx - lx) / w) ** 2 + ((yy - ly) / h) ** 2
        level = 215.0 - 70.0 * r2 + rng.uniform(-8, 8) * (xx / w - 0.5)
        coarse = rng.normal(0.0, 6.0, (h // 16 + 2, w // 16 + 2)).astype(np.float32)
        level += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        level += cv2.GaussianBlur(rng.normal(0.0, 6.0, (h, w)).astype(np.float32), (0, 0), 0.7)
        tint = np.array([0.97, 0.99, 1.0], np.float32) * rng.uniform(0.97, 1.03, 3)
        floor = np.clip(level[..., None] * tint, 0, 255).astype(np.uint8)

        # Tape marks: a few thin polylines and small rings, like a real arena floor.
        x0, y0, x1, y1 = wall + 4, wall + 4, w - wall - 5, h - wall - 5
        for _ in range(int(rng.integers(2, 4))):
            n = int(rng.integers(2, 5))
            pts = np.stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)], axis=1)
            shade = int(rng.integers(110, 160))
            cv2.polylines(
                floor,
                [np.round(pts * _ONE).astype(np.int32)],
                False,
                (shade, shade, shade),
                1,
                cv2.LINE_AA,
                _SHIFT,
            )
            for px, py in pts[rng.random(n) < 0.4]:
                cv2.circle(
                    floor,
                    (_fx(px), _fx(py)),
                    2 * _ONE + _ONE // 2,
                    (shade, shade, shade),
                    1,
                    cv2.LINE_AA,
                    _SHIFT,
                )

        # Walls: a darker band around the floor, with a dark edge where they meet.
        band = np.zeros((h, w), bool)
        band[:wall], band[-wall:], band[:, :wall], band[:, -wall:] = True, True, True, True
        floor[band] = (floor[band].astype(np.float32) * 0.55).astype(np.uint8)
        cv2.rectangle(floor, (wall, wall), (w - 1 - wall, h - 1 - wall), (70, 70, 75), 1)
        return floor

    # ------------------------------------------------------------- trajectory
    def _init_state(self) -> None:
        rng, L = self._rng, self.body_length
        bx0, by0, bx1, by1 = self._bounds
        # Start away from the walls; the clamp keeps tiny arenas' animals inside anyway.
        self._x = rng.uniform(bx0 + 1.5 * L, max(bx0 + 1.5 * L, bx1 - 1.5 * L))
        self._y = rng.uniform(by0 + 1.5 * L, max(by0 + 1.5 * L, by1 - 1.5 * L))
        self._th = rng.uniform(-math.pi, math.pi)
        self._v = 1.2 * L
        self._w = 0.0
        self._yaw = 0.0
        self._curl = 0.0
        self._clamp_inside()

    def _extend(self) -> None:
        """Integrate the next ``_CHUNK_STEPS`` steps of the animal's motion."""
        L, dt = self.body_length, TRAJECTORY_DT
        sdt = math.sqrt(dt)
        bx0, by0, bx1, by1 = self._bounds
        margin = 0.9 * L
        noise = self._rng.standard_normal((_CHUNK_STEPS, 4)).tolist()
        out = np.empty((_CHUNK_STEPS, 6))
        for i, (nv, nw, ny, nc) in enumerate(noise):
            # Speed: mean-reverting around 1.2 body lengths/s, with pauses at zero.
            self._v += 0.6 * (1.2 * L - self._v) * dt + 1.3 * L * sdt * nv
            self._v = min(max(self._v, 0.0), 4.0 * L)
            ux, uy = math.cos(self._th), math.sin(self._th)
            # Wall avoidance: a look-ahead point pushed away from nearby walls turns the body.
            look = 0.7 * L + 0.8 * self._v
            qx, qy = self._x + ux * look, self._y + uy * look
            fx = max(0.0, 1.0 - (qx - bx0) / margin) - max(0.0, 1.0 - (bx1 - qx) / margin)
            fy = max(0.0, 1.0 - (qy - by0) / margin) - max(0.0, 1.0 - (by1 - qy) / margin)
            torque = 25.0 * (ux * fy - uy * fx)
            if ux * fx + uy * fy < 0.0:  # heading into a wall: slow down
                self._v *= max(0.0, 1.0 - 3.0 * dt * math.hypot(fx, fy))
            self._w += (-2.5 * self._w + torque) * dt + 3.5 * sdt * nw
            self._th += self._w * dt
            self._x += ux * self._v * dt
            self._y += uy * self._v * dt
            self._yaw += -2.0 * self._yaw * dt + 0.6 * sdt * ny
            self._yaw = min(max(self._yaw, -0.6), 0.6)
            self._curl += -1.0 * self._curl * dt + 1.0 * sdt * nc
            self._curl = min(max(self._curl, -1.5), 1.5)
            self._clamp_inside()
            out[i] = (self._x, self._y, self._th, self._bend(), self._yaw, self._curl)
        self._states = np.concatenate([self._states, out])

    def _bend(self) -> float:
        """Body bend (rad) follows the turning rate: the front leads into a turn."""
        return min(max(0.2 * self._w, -0.6), 0.6)

    def _clamp_inside(self) -> None:
        """Push the animal back so its whole outline stays on the arena floor."""
        bx0, by0, bx1, by1 = self._bounds
        reach = 1.35 * self.body_length  # no body part is farther than this from (x, y)
        if bx0 + reach < self._x < bx1 - reach and by0 + reach < self._y < by1 - reach:
            return
        pose = self._pose(self._x, self._y, self._th, self._bend(), self._yaw, self._curl)
        x0, y0, x1, y1 = self._bbox(pose)
        self._x += max(0.0, bx0 - x0) - max(0.0, x1 - bx1)
        self._y += max(0.0, by0 - y0) - max(0.0, y1 - by1)

    def _state(self, t: float) -> list[float]:
        if not (t >= 0.0 and math.isfinite(t)):
            raise ValueError(f"time must be finite and >= 0, got {t}")
        pos = t / TRAJECTORY_DT
        k = int(pos)
        while k + 1 >= len(self._states):
            self._extend()
        f = pos - k
        s0, s1 = self._states[k], self._states[k + 1]
        return (s0 + f * (s1 - s0)).tolist()

    # --------------------------------------------------------------- geometry
    def _pose(self, x: float, y: float, th: float, bend: float, yaw: float, curl: float) -> _Pose:
        """Body parts of the animal centred at (x, y) with heading ``th`` (radians)."""
        L = self.body_length
        th_r, th_f, th_h = th - 0.5 * bend, th + 0.5 * bend, th + 0.5 * bend + yaw
        ur = (math.cos(th_r), math.sin(th_r))
        uf = (math.cos(th_f), math.sin(th_f))
        uh = (math.cos(th_h), math.sin(th_h))
        lh = (uh[1], -uh[0])  # the animal's left (see module docstring)

        rear = _Ellipse(x - 0.2 * L * ur[0], y - 0.2 * L * ur[1], 0.24 * L, 0.155 * L, th_r)
        back = _Ellipse(x - 0.12 * L * ur[0], y - 0.12 * L * ur[1], 0.12 * L, 0.06 * L, th_r)
        front = _Ellipse(x + 0.1 * L * uf[0], y + 0.1 * L * uf[1], 0.2 * L, 0.13 * L, th_f)
        nx, ny = x + 0.22 * L * uf[0], y + 0.22 * L * uf[1]
        head = _Ellipse(nx + 0.1 * L * uh[0], ny + 0.1 * L * uh[1], 0.16 * L, 0.115 * L, th_h)
        snout = (nx + 0.34 * L * uh[0], ny + 0.34 * L * uh[1])
        muzzle = (
            (nx + 0.17 * L * uh[0] + 0.085 * L * lh[0], ny + 0.17 * L * uh[1] + 0.085 * L * lh[1]),
            (nx + 0.17 * L * uh[0] - 0.085 * L * lh[0], ny + 0.17 * L * uh[1] - 0.085 * L * lh[1]),
            snout,
        )
        ex, ey = nx + 0.05 * L * uh[0], ny + 0.05 * L * uh[1]
        left = (ex + 0.115 * L * lh[0], ey + 0.115 * L * lh[1])
        right = (ex - 0.115 * L * lh[0], ey - 0.115 * L * lh[1])
        tailbase = (x - 0.44 * L * ur[0], y - 0.44 * L * ur[1])

        # Tail: a tapering arc leaving the tailbase backwards, curling with the body bend.
        step = 0.75 * L / (_TAIL_POINTS - 1)
        tail = [tailbase]
        phi, dphi = th_r + math.pi, (curl - 1.2 * bend) * step / L
        for _ in range(_TAIL_POINTS - 1):
            px, py = tail[-1]
            tail.append((px + step * math.cos(phi), py + step * math.sin(phi)))
            phi += dphi

        return _Pose(
            (snout, left, right, tailbase),
            rear,
            back,
            front,
            head,
            muzzle,
            0.07 * L,
            max(1.5, 0.035 * L),
            tail,
        )

    def _bbox(self, pose: _Pose) -> tuple[float, float, float, float]:
        """Axis-aligned bounds (x0, y0, x1, y1) of everything drawn for ``pose``."""
        boxes = []  # (centre x, centre y, half extent x, half extent y)
        for e in (pose.rear, pose.front, pose.head):
            c, s = math.cos(e.angle), math.sin(e.angle)
            boxes.append((e.x, e.y, math.hypot(e.a * c, e.b * s), math.hypot(e.a * s, e.b * c)))
        boxes += [(x, y, pose.ear_radius, pose.ear_radius) for x, y in pose.keypoints[1:3]]
        boxes.append((*pose.keypoints[0], pose.nose_radius, pose.nose_radius))
        w = _TAIL_TAPER[0] * self.body_length
        boxes += [(x, y, w, w) for x, y in pose.tail]
        pad = 1.0  # anti-aliased edges
        return (
            min(x - rx for x, _, rx, _ in boxes) - pad,
            min(y - ry for _, y, _, ry in boxes) - pad,
            max(x + rx for x, _, rx, _ in boxes) + pad,
            max(y + ry for _, y, _, ry in boxes) + pad,
        )

    # -------------------------------------------------------------- rendering
    def render(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The BGR uint8 image (H x W x 3) and K x 2 float32 (x, y) keypoints at ``t`` s."""
        image = np.empty((self.height, self.width, 3), np.uint8)
        return image, self.render_into(t, image)

    def render_into(self, t: float, out: np.ndarray) -> np.ndarray:
        """Draw the frame at ``t`` seconds into ``out`` and return its K x 2 keypoints.

        ``out`` must be a preallocated C-contiguous H x W x 3 uint8 array; reusing it keeps
        a live loop free of per-frame image allocations.
        """
        shape = (self.height, self.width, 3)
        if out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(
                f"out must be a C-contiguous {self.height}x{self.width}x3 uint8 array, "
                f"got {out.shape} {out.dtype}"
            )
        np.copyto(out, self.floor)
        pose = self._pose(*self._state(t))
        aa = cv2.LINE_AA

        def ellipse(e: _Ellipse, colour: tuple[int, int, int]) -> None:
            cv2.ellipse(
                out,
                (_fx(e.x), _fx(e.y)),
                (_fx(e.a), _fx(e.b)),
                math.degrees(e.angle),
                0,
                360,
                colour,
                -1,
                aa,
                _SHIFT,
            )

        def disc(p: tuple[float, float], r: float, colour: tuple[int, int, int]) -> None:
            # A 24-gon: cv2.circle degenerates to a diamond below 3 px radius.
            poly = np.round((_UNIT_CIRCLE * r + p) * _ONE).astype(np.int32)
            cv2.fillConvexPoly(out, poly, colour, aa, _SHIFT)

        tail = np.array(pose.tail)
        along = np.diff(tail, axis=0, append=2 * tail[-1:] - tail[-2:-1])
        normal = along[:, ::-1] * np.array([1.0, -1.0]) / np.hypot(*along.T)[:, None]
        offset = normal * (_TAIL_TAPER * self.body_length)[:, None]
        outline = np.concatenate([tail + offset, (tail - offset)[::-1]])
        cv2.fillPoly(out, [np.round(outline * _ONE).astype(np.int32)], _TAIL, aa, _SHIFT)

        ellipse(pose.rear, _BODY)
        ellipse(pose.front, _BODY)
        ellipse(pose.back, _BACK)
        ellipse(pose.head, _BODY)
        muzzle = np.round(np.array(pose.muzzle) * _ONE).astype(np.int32)
        cv2.fillConvexPoly(out, muzzle, _BODY, aa, _SHIFT)
        keypoints = [(_quantise(x), _quantise(y)) for x, y in pose.keypoints]
        snout, left, right, _ = keypoints
        for ear in (left, right):
            disc(ear, pose.ear_radius, _EAR_RIM)
            disc(ear, 0.65 * pose.ear_radius, _EAR_INNER)
        disc(snout, pose.nose_radius, _NOSE)
        return np.array(keypoints, np.float32)


def _dlc_frame(keypoints: np.ndarray, index: list[str], scorer: str) -> pd.DataFrame:
    """Labels in DeepLabCut's CollectedData layout (scorer/bodyparts/coords columns)."""
    columns = pd.MultiIndex.from_product(
        [[scorer], list(BODYPARTS), ["x", "y"]], names=["scorer", "bodyparts", "coords"]
    )
    return pd.DataFrame(
        keypoints.reshape(len(index), -1).astype(np.float64), index=index, columns=columns
    )


def write_project(
    root: str | Path,
    n_frames: int = 120,
    width: int = 320,
    height: int = 240,
    seed: int = 0,
    scorer: str = "synthetic",
    training_fraction: float = 0.8,
    *,
    video_frames: int = 90,
) -> Path:
    """Write a single-animal DeepLabCut project of the synthetic scene at ``root``.

    Contents: ``config.yaml``; ``labeled-data/synth/img%04d.png`` frames taken at
    well-separated times with ``CollectedData_<scorer>.csv`` and ``.h5`` labels;
    ``videos/synth.mp4`` (mp4v, 30 fps, ``video_frames`` frames recorded after the labeled
    times, so it is held out) and ``videos/synth_groundtruth.csv`` (frame, then x, y per
    bodypart). Returns the project root.
    """
    if n_frames < 1 or video_frames < 1:
        raise ValueError("n_frames and video_frames must be positive")
    if not 0.0 < training_fraction <= 1.0:
        raise ValueError(f"training_fraction must be in (0, 1], got {training_fraction}")
    root = Path(root).resolve()
    labeled = root / "labeled-data" / VIDEO_NAME
    videos = root / "videos"
    labeled.mkdir(parents=True, exist_ok=True)
    videos.mkdir(parents=True, exist_ok=True)
    scene = SyntheticScene(width, height, seed)
    image = np.empty((height, width, 3), np.uint8)

    index, labels = [], []
    for i in range(n_frames):
        keypoints = scene.render_into(0.5 + 1.37 * i, image)
        name = f"img{i:04d}.png"
        if not cv2.imwrite(str(labeled / name), image):
            raise OSError(f"could not write {labeled / name}")
        index.append(f"labeled-data/{VIDEO_NAME}/{name}")
        labels.append(keypoints)
    df = _dlc_frame(np.stack(labels), index, scorer)
    df.to_csv(labeled / f"CollectedData_{scorer}.csv")
    df.to_hdf(
        labeled / f"CollectedData_{scorer}.h5", key="df_with_missing", format="table", mode="w"
    )

    video_path = videos / f"{VIDEO_NAME}.mp4"
    writer = cv2.VideoWriter(
        str(video_path), cv2.VideoWriter.fourcc(*"mp4v"), VIDEO_FPS, (width, height)
    )
    if not writer.isOpened():
        raise OSError(f"could not open {video_path} for writing (mp4v)")
    start = 0.5 + 1.37 * n_frames + 5.0
    truth = []
    try:
        for i in range(video_frames):
            truth.append(scene.render_into(start + i / VIDEO_FPS, image).reshape(-1))
            writer.write(image)
    finally:
        writer.release()
    gt_columns = [f"{bp}_{c}" for bp in BODYPARTS for c in ("x", "y")]
    gt = pd.DataFrame(np.stack(truth).astype(np.float64), columns=gt_columns)
    gt.insert(0, "frame", np.arange(video_frames))
    gt.to_csv(videos / f"{VIDEO_NAME}_groundtruth.csv", index=False)

    config = {
        "Task": "synthetic-openfield",
        "scorer": scorer,
        "date": datetime.now().strftime("%b%d"),
        "multianimalproject": False,
        "identity": None,
        "project_path": str(root),
        "engine": "pytorch",
        "video_sets": {str(video_path): {"crop": f"0, {width}, 0, {height}"}},
        "bodyparts": list(BODYPARTS),
        "start": 0,
        "stop": 1,
        "numframes2pick": 20,
        "skeleton": [list(pair) for pair in SKELETON],
        "skeleton_color": "black",
        "pcutoff": 0.6,
        "dotsize": 4,
        "alphavalue": 0.7,
        "colormap": "rainbow",
        "TrainingFraction": [float(training_fraction)],
        "iteration": 0,
        "default_net_type": "resnet_50",
        "default_augmenter": "imgaug",
        "snapshotindex": -1,
        "detector_snapshotindex": -1,
        "batch_size": 8,
        "detector_batch_size": 1,
        "cropping": False,
        "x1": 0,
        "x2": width,
        "y1": 0,
        "y2": height,
        "corner2move2": [50, 50],
        "move2corner": True,
        "SuperAnimalConversionTables": {
            "superanimal_topviewmouse": {
                "snout": "nose",
                "leftear": "left_ear",
                "rightear": "right_ear",
                "tailbase": "tail_base",
            }
        },
    }
    with open(root / "config.yaml", "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh, sort_keys=False, default_flow_style=False)
    return root


def crossing_keypoints(n: int, frames: int, width: int = 320, height: int = 240,
                       seed: int = 0) -> np.ndarray:
    """Keypoints (frames x n x K x 2) of ``n`` synthetic animals whose paths cross.

    Animal i walks a straight line through the arena's centre at its own angle (i * pi / n),
    all of them passing the centre in the middle frame, so every pair crosses; each keeps
    the synthetic animal's body geometry, heading along its path. For tests of assembly and
    tracking: the identities are known (row i is always animal i).
    """
    scene = SyntheticScene(width, height, seed)
    out = np.zeros((frames, n, len(BODYPARTS), 2), np.float32)
    reach = 0.35 * min(width, height)
    for i in range(n):
        angle = i * math.pi / n
        for f in range(frames):
            s = reach * (2.0 * f / max(frames - 1, 1) - 1.0)
            x = width / 2 + s * math.cos(angle)
            y = height / 2 + s * math.sin(angle)
            pose = scene._pose(x, y, angle, 0.0, 0.0, 0.0)
            out[f, i] = np.array(pose.keypoints, np.float32)
    return out
