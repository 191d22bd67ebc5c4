"""The wire format: encode and decode the three message kinds (docs/wire-format.md).

Every message is multipart: ``[topic, JSON header, payload...]`` where the topic is
``pose``, ``event`` or ``meta`` and only ``pose`` has payload frames: the N x K x C points
(little-endian float32, row-major; C = 3, x, y, likelihood, in 2D; C = 4, x, y, z,
likelihood, for triangulated 3D poses), then, when the model has unique bodyparts, their
U x C values, then in 3D (when the pose has them) each point's reprojection error and
camera count, N x K x 2. Header fields ``unique_shape`` and ``triangulation_shape`` say
which optional frames follow. 2D messages are those of wire version 2 before 3D, byte for
byte. Times on the wire are CLOCK_MONOTONIC nanoseconds (see :mod:`poseloop.stream.clock`).
Readers ignore header fields they do not know; a different ``v`` is an error that says
which end to upgrade.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from poseloop.errors import PoseloopError
from poseloop.realtime.types import COORDS_2D, COORDS_3D, SINGLE_ANIMAL, Pose, Session
from poseloop.stream.clock import from_perf_ns

VERSION = 2
TOPICS = ("pose", "event", "meta")
DTYPE = np.dtype("<f4")

#: What version 2 changed, for the message a reader of version 2 gives on a version-1 message.
V1_CHANGES = (
    "version 2 sends N x K x 3 poses (N individuals) with 'ids' and 'camera' in the pose "
    "header, and 'individuals', 'unique_bodyparts', 'multi_animal' and 'fps' in meta "
    "(docs/wire-format.md, 'Changes from version 1')"
)

_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class WireError(PoseloopError):
    """A received message does not follow the wire format (or a different version of it)."""


@dataclass(frozen=True)
class CameraMeta:
    """One camera of the run, as ``meta`` lists it: name, frame size (px) and frame rate."""

    name: str
    width: int
    height: int
    fps: float


@dataclass(frozen=True)
class Meta:
    """What a subscriber needs to name poses: sent at start and every second.

    individuals x bodyparts name the N x K rows of a pose; unique_bodyparts the U rows of
    its unique part; coords the C columns (x, y, likelihood; or x, y, z, likelihood in 3D,
    world units); skeleton: pairs of bodypart names; image_size: (width, height) of the
    (first) camera's frame, the pixel space of 2D coordinates; fps: its frame rate;
    cameras: every camera of the run, in view order (empty from a publisher that predates
    the field).
    """

    bodyparts: tuple[str, ...]
    skeleton: tuple[tuple[str, str], ...] = ()
    model: str = ""
    image_size: tuple[int, int] = (640, 480)
    individuals: tuple[str, ...] = SINGLE_ANIMAL
    unique_bodyparts: tuple[str, ...] = ()
    multi_animal: bool = False
    fps: float = 30.0
    coords: tuple[str, ...] = COORDS_2D
    cameras: tuple[CameraMeta, ...] = ()

    @property
    def dims(self) -> int:
        """2 for pixel poses, 3 for triangulated ones (N x K x 4)."""
        return 3 if self.coords == COORDS_3D else 2

    @classmethod
    def from_session(cls, session: Session) -> Meta:
        """The meta of a run: names from the model, size and rate from the opened camera."""
        return cls(
            bodyparts=tuple(session.bodyparts),
            skeleton=tuple((a, b) for a, b in session.skeleton),
            model=session.model,
            image_size=session.image_size,
            individuals=tuple(session.individuals),
            unique_bodyparts=tuple(session.unique_bodyparts),
            multi_animal=session.multi_animal,
            fps=float(session.fps),
            coords=tuple(session.coords),
            cameras=tuple(CameraMeta(c.name, int(c.width), int(c.height), float(c.fps))
                          for c in session.cameras),
        )


@dataclass(frozen=True)
class PoseMessage:
    """One received pose: header fields and read-only float32 views of the payload.

    points: N x K x 3 (x, y, likelihood) in pixels, or N x K x 4 (x, y, z, likelihood) in
    world units for triangulated 3D poses; ids: N track ids (-1 = none); unique: U x C (the
    points' columns) or None; camera: index of the camera the frame came from;
    triangulation: 3D only, when sent: N x K x 2, each point's mean reprojection error (px)
    and the number of cameras it was triangulated from.
    """

    frame: int
    t_capture_ns: int
    t_publish_ns: int
    latency_ns: dict[str, int]
    points: np.ndarray
    ids: tuple[int, ...]
    unique: np.ndarray | None = None
    camera: int = 0
    triangulation: np.ndarray | None = None


@dataclass(frozen=True)
class EventMessage:
    """A rule fired on ``frame``: ``action`` was taken at ``t_ns`` (wire clock)."""

    frame: int
    rule: str
    action: str
    t_ns: int


Message = PoseMessage | EventMessage | Meta


class PoseEncoder:
    """Encodes poses into wire frames, reusing its payload buffers (the loop allocates little)."""

    def __init__(self) -> None:
        self._points = np.empty((0, 0, 3), DTYPE)
        self._unique = np.empty((0, 3), DTYPE)
        self._triangulation = np.empty((0, 0, 2), DTYPE)

    def encode(self, pose: Pose, t_publish_ns: int) -> list[bytes | np.ndarray]:
        """Frames for ``pose``; ``pose`` times are perf_counter_ns, ``t_publish_ns`` wire clock.

        ``latency_ns[stage]`` is the time from capture to the end of that stage. The payload
        buffers are reused, so send the frames (ZeroMQ copies them) before the next call.
        """
        points = pose.points
        if points.ndim != 3 or points.shape[2] not in (3, 4):
            raise ValueError(f"pose points must be N x K x 3 (x, y, likelihood) or N x K x 4 "
                             f"(x, y, z, likelihood), got shape {points.shape}")
        if len(pose.ids) != points.shape[0]:
            raise ValueError(f"pose has {points.shape[0]} individuals but {len(pose.ids)} ids")
        self._points = _copy(self._points, points)
        t0 = int(pose.t_capture_ns)
        header: dict[str, Any] = {
            "v": VERSION,
            "frame": int(pose.frame_index),
            "camera": int(pose.camera),
            "t_capture_ns": from_perf_ns(t0),
            "t_publish_ns": t_publish_ns,
            "latency_ns": {stage: t - t0 for stage, t in pose.timings.items()},
            "shape": points.shape,
            "dtype": "float32",
            "ids": pose.ids.tolist(),
        }
        frames: list[bytes | np.ndarray] = [b"pose", b"", self._points]
        columns = points.shape[2]
        if pose.unique is not None:
            unique = pose.unique
            if unique.ndim != 2 or unique.shape[1] != columns:
                raise ValueError(f"pose unique must be U x {columns} (the points' columns), "
                                 f"got shape {unique.shape}")
            self._unique = _copy(self._unique, unique)
            header["unique_shape"] = unique.shape
            frames.append(self._unique)
        if pose.triangulation is not None:
            triangulation = pose.triangulation
            if columns != 4 or triangulation.shape != (*points.shape[:2], 2):
                raise ValueError(f"pose triangulation must be N x K x 2 with N x K x 4 points, "
                                 f"got shape {triangulation.shape} with points "
                                 f"{points.shape}")
            self._triangulation = _copy(self._triangulation, triangulation)
            header["triangulation_shape"] = triangulation.shape
            frames.append(self._triangulation)
        frames[1] = _json.encode(header).encode()
        return frames


def _copy(buffer: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` as wire float32 in ``buffer``, or in a new buffer when the shape changed."""
    if buffer.shape != values.shape:
        buffer = np.empty(values.shape, DTYPE)
    np.copyto(buffer, values, casting="same_kind")
    return buffer


def encode_event(frame: int, rule: str, action: str, t_ns: int,
                 animals: tuple[str, ...] | list[str] = ()) -> list[bytes]:
    """Frames of an event message; ``t_ns`` on the wire clock; ``animals``: the
    individuals that made the rule hold (multi-animal models)."""
    header = {"v": VERSION, "frame": int(frame), "rule": rule, "action": action, "t_ns": t_ns,
              "animals": list(animals)}
    return [b"event", _json.encode(header).encode()]


def encode_meta(meta: Meta) -> list[bytes]:
    """Frames of a meta message."""
    header = {
        "v": VERSION,
        "bodyparts": list(meta.bodyparts),
        "individuals": list(meta.individuals),
        "unique_bodyparts": list(meta.unique_bodyparts),
        "multi_animal": bool(meta.multi_animal),
        "skeleton": [list(pair) for pair in meta.skeleton],
        "model": meta.model,
        "image_size": [int(v) for v in meta.image_size],
        "fps": float(meta.fps),
        "coords": list(meta.coords),
        "cameras": [{"name": c.name, "width": int(c.width), "height": int(c.height),
                     "fps": float(c.fps)} for c in meta.cameras],
    }
    return [b"meta", _json.encode(header).encode()]


def _field(header: Mapping[str, Any], topic: str, name: str, kind: type | tuple[type, ...]) -> Any:
    try:
        value = header[name]
    except KeyError:
        raise WireError(f"{topic} header has no '{name}' field") from None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise WireError(f"{topic} header field '{name}' has the wrong type: {value!r}")
    return value


def _names(header: Mapping[str, Any], name: str) -> tuple[str, ...]:
    values = _field(header, "meta", name, list)
    if not all(isinstance(v, str) for v in values):
        raise WireError(f"meta header field '{name}' must be a list of strings: {values!r}")
    return tuple(values)


def _header(topic: str, raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"{topic} header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise WireError(f"{topic} header is not a JSON object")
    version = header.get("v")
    if version == VERSION:
        return header
    if version == 1:
        raise WireError(
            f"{topic} message has wire version 1, this poseloop reads version {VERSION}: "
            f"{V1_CHANGES}; upgrade poseloop on the publishing side"
        )
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise WireError(
            f"{topic} message has wire version {version}, this poseloop reads version "
            f"{VERSION}: upgrade poseloop on this (the subscribing) side"
        )
    raise WireError(f"{topic} message has wire version {version!r}, this poseloop reads "
                    f"version {VERSION}: is the publisher poseloop?")


def _shape(header: Mapping[str, Any], name: str, ndim: int, last: tuple[int, ...],
           want: str) -> tuple[int, ...]:
    """A shape field: ``ndim`` non-negative integers, the last one of ``last``."""
    shape = _field(header, "pose", name, list)
    if (len(shape) != ndim or shape[-1] not in last
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise WireError(f"pose {name} must be {want}, got {shape}")
    return tuple(shape)


def _array(payload: bytes, shape: tuple[int, ...], what: str) -> np.ndarray:
    need = int(np.prod(shape)) * DTYPE.itemsize
    if len(payload) != need:
        raise WireError(f"pose {what} payload has {len(payload)} bytes, shape "
                        f"{list(shape)} needs {need}")
    return np.frombuffer(payload, DTYPE).reshape(shape)


def _pose_shapes(header: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...] | None,
                                                      tuple[int, ...] | None]:
    """The shapes of the points, of the unique bodyparts and of the triangulation (the last
    two None when the message has no such frame)."""
    shape = _shape(header, "shape", 3, (3, 4),
                   "[N, K, 3] (x, y, likelihood) or [N, K, 4] (x, y, z, likelihood)")
    unique = None
    if "unique_shape" in header:
        unique = _shape(header, "unique_shape", 2, shape[2:],
                        f"[U, {shape[2]}] (the points' columns)")
    triangulation = None
    if "triangulation_shape" in header:
        triangulation = _shape(header, "triangulation_shape", 3, (2,), "[N, K, 2]")
        if shape[2] != 4 or triangulation != (*shape[:2], 2):
            raise WireError(f"pose triangulation_shape must be [N, K, 2] with 3D points "
                            f"[N, K, 4], got {list(triangulation)} with shape {list(shape)}")
    return shape, unique, triangulation


def _decode_pose(header: dict[str, Any], payloads: Sequence[bytes]) -> PoseMessage:
    shape, unique_shape, triangulation_shape = _pose_shapes(header)
    if header.get("dtype") != "float32":
        raise WireError(f"pose dtype must be 'float32', got {header.get('dtype')!r}")
    optional = [f"with '{name}'" for name, present in (
        ("unique_shape", unique_shape), ("triangulation_shape", triangulation_shape)) if present]
    if len(payloads) != 1 + len(optional):
        raise WireError(f"pose message must have {len(optional) + 3} frames "
                        f"({', '.join(optional) or 'no unique_shape or triangulation_shape'}), got "
                        f"{len(payloads) + 2}")
    ids = _field(header, "pose", "ids", list)
    if len(ids) != shape[0] or not all(isinstance(i, int) and not isinstance(i, bool)
                                       for i in ids):
        raise WireError(f"pose ids must be {shape[0]} integers (one per individual), got {ids}")
    extra = iter(payloads[1:])
    return PoseMessage(
        frame=_field(header, "pose", "frame", int),
        t_capture_ns=_field(header, "pose", "t_capture_ns", int),
        t_publish_ns=_field(header, "pose", "t_publish_ns", int),
        latency_ns=_field(header, "pose", "latency_ns", dict),
        points=_array(payloads[0], shape, "points"),
        ids=tuple(ids),
        unique=None if unique_shape is None else _array(next(extra), unique_shape, "unique"),
        camera=_field(header, "pose", "camera", int),
        triangulation=None if triangulation_shape is None
        else _array(next(extra), triangulation_shape, "triangulation"),
    )


def decode(frames: Sequence[bytes]) -> Message:
    """Decode one multipart message; raise WireError if it breaks the format."""
    if len(frames) < 2:
        raise WireError(f"expected [topic, header, ...], got {len(frames)} frame(s)")
    topic = bytes(frames[0]).decode("utf-8", "replace")
    if topic not in TOPICS:
        raise WireError(f"unknown topic {topic!r}; expected one of {', '.join(TOPICS)}")
    header = _header(topic, frames[1])
    if topic == "pose":
        return _decode_pose(header, frames[2:])
    if len(frames) != 2:
        raise WireError(f"{topic} message must have 2 frames, got {len(frames)}")
    if topic == "event":
        return EventMessage(
            frame=_field(header, "event", "frame", int),
            rule=_field(header, "event", "rule", str),
            action=_field(header, "event", "action", str),
            t_ns=_field(header, "event", "t_ns", int),
        )
    return _decode_meta(header)


def _decode_meta(header: dict[str, Any]) -> Meta:
    size = _field(header, "meta", "image_size", list)
    skeleton = _field(header, "meta", "skeleton", list)
    if len(size) != 2 or any(not isinstance(pair, list) or len(pair) != 2 for pair in skeleton):
        raise WireError(f"meta image_size must be [w, h] and skeleton [[a, b], ...]: {header}")
    return Meta(
        bodyparts=_names(header, "bodyparts"),
        skeleton=tuple((a, b) for a, b in skeleton),
        model=_field(header, "meta", "model", str),
        image_size=(size[0], size[1]),
        individuals=_names(header, "individuals"),
        unique_bodyparts=_names(header, "unique_bodyparts"),
        multi_animal=_field(header, "meta", "multi_animal", bool),
        fps=float(_field(header, "meta", "fps", (int, float))),
        coords=_names(header, "coords") if "coords" in header else COORDS_2D,
        cameras=tuple(_camera(c) for c in _field(header, "meta", "cameras", list))
        if "cameras" in header else (),
    )


def _camera(value: object) -> CameraMeta:
    """One entry of meta's ``cameras``."""
    if isinstance(value, dict):
        name, width, height, fps = (value.get(k) for k in ("name", "width", "height", "fps"))
        if (isinstance(name, str) and isinstance(fps, int | float)
                and isinstance(width, int) and not isinstance(width, bool)
                and isinstance(height, int) and not isinstance(height, bool)):
            return CameraMeta(name, width, height, float(fps))
    raise WireError(f"meta cameras must be [{{name, width, height, fps}}, ...], got {value!r}")
