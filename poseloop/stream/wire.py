"""The wire format: encode and decode the three message kinds (docs/wire-format.md).

Every message is multipart: ``[topic, JSON header, payload...]`` where the topic is
``pose``, ``event`` or ``meta`` and only ``pose`` has payload frames: the N x K x 3 points
(little-endian float32, row-major: x, y, likelihood per bodypart per individual), then,
when the model has unique bodyparts, their U x 3 values in a fourth frame. Times on the
wire are CLOCK_MONOTONIC nanoseconds (see :mod:`poseloop.stream.clock`). Readers ignore
header fields they do not know; a different ``v`` is an error that says which end to
upgrade.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from poseloop.errors import PoseloopError
from poseloop.realtime.types import SINGLE_ANIMAL, Pose, Session
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
class Meta:
    """What a subscriber needs to name poses: sent at start and every second.

    individuals x bodyparts name the N x K rows of a pose; unique_bodyparts the U rows of
    its unique part; skeleton: pairs of bodypart names; image_size: (width, height) of the
    full frame, the pixel space of pose coordinates; fps: the camera's frame rate.
    """

    bodyparts: tuple[str, ...]
    skeleton: tuple[tuple[str, str], ...] = ()
    model: str = ""
    image_size: tuple[int, int] = (640, 480)
    individuals: tuple[str, ...] = SINGLE_ANIMAL
    unique_bodyparts: tuple[str, ...] = ()
    multi_animal: bool = False
    fps: float = 30.0

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
        )


@dataclass(frozen=True)
class PoseMessage:
    """One received pose: header fields and read-only float32 views of the payload.

    points: N x K x 3 (x, y, likelihood); ids: N track ids (-1 = none); unique: U x 3 or
    None; camera: index of the camera the frame came from.
    """

    frame: int
    t_capture_ns: int
    t_publish_ns: int
    latency_ns: dict[str, int]
    points: np.ndarray
    ids: tuple[int, ...]
    unique: np.ndarray | None = None
    camera: int = 0


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

    def encode(self, pose: Pose, t_publish_ns: int) -> list[bytes | np.ndarray]:
        """Frames for ``pose``; ``pose`` times are perf_counter_ns, ``t_publish_ns`` wire clock.

        ``latency_ns[stage]`` is the time from capture to the end of that stage. The payload
        buffers are reused, so send the frames (ZeroMQ copies them) before the next call.
        """
        points = pose.points
        if points.ndim != 3 or points.shape[2] != 3:
            raise ValueError(f"pose points must be N x K x 3, got shape {points.shape}")
        if len(pose.ids) != points.shape[0]:
            raise ValueError(f"pose has {points.shape[0]} individuals but {len(pose.ids)} ids")
        if self._points.shape != points.shape:
            self._points = np.empty(points.shape, DTYPE)
        np.copyto(self._points, points, casting="same_kind")
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
        if pose.unique is not None:
            unique = pose.unique
            if unique.ndim != 2 or unique.shape[1] != 3:
                raise ValueError(f"pose unique must be U x 3, got shape {unique.shape}")
            if self._unique.shape != unique.shape:
                self._unique = np.empty(unique.shape, DTYPE)
            np.copyto(self._unique, unique, casting="same_kind")
            header["unique_shape"] = unique.shape
            frames.append(self._unique)
        frames[1] = _json.encode(header).encode()
        return frames


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


def _shape(header: Mapping[str, Any], name: str, dims: int) -> tuple[int, ...]:
    shape = _field(header, "pose", name, list)
    if (len(shape) != dims or shape[-1] != 3
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        want = "[N, K, 3]" if dims == 3 else "[U, 3]"
        raise WireError(f"pose {name} must be {want}, got {shape}")
    return tuple(shape)


def _array(payload: bytes, shape: tuple[int, ...], what: str) -> np.ndarray:
    need = int(np.prod(shape)) * DTYPE.itemsize
    if len(payload) != need:
        raise WireError(f"pose {what} payload has {len(payload)} bytes, shape "
                        f"{list(shape)} needs {need}")
    return np.frombuffer(payload, DTYPE).reshape(shape)


def _decode_pose(header: dict[str, Any], payloads: Sequence[bytes]) -> PoseMessage:
    shape = _shape(header, "shape", 3)
    if header.get("dtype") != "float32":
        raise WireError(f"pose dtype must be 'float32', got {header.get('dtype')!r}")
    unique_shape = _shape(header, "unique_shape", 2) if "unique_shape" in header else None
    expected = 1 if unique_shape is None else 2
    if len(payloads) != expected:
        raise WireError(f"pose message must have {expected + 2} frames "
                        f"({'with' if unique_shape else 'without'} 'unique_shape'), got "
                        f"{len(payloads) + 2}")
    ids = _field(header, "pose", "ids", list)
    if len(ids) != shape[0] or not all(isinstance(i, int) and not isinstance(i, bool)
                                       for i in ids):
        raise WireError(f"pose ids must be {shape[0]} integers (one per individual), got {ids}")
    return PoseMessage(
        frame=_field(header, "pose", "frame", int),
        t_capture_ns=_field(header, "pose", "t_capture_ns", int),
        t_publish_ns=_field(header, "pose", "t_publish_ns", int),
        latency_ns=_field(header, "pose", "latency_ns", dict),
        points=_array(payloads[0], shape, "points"),
        ids=tuple(ids),
        unique=None if unique_shape is None else _array(payloads[1], unique_shape, "unique"),
        camera=_field(header, "pose", "camera", int),
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
    )
