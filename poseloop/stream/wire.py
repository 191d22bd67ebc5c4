"""The wire format: encode and decode the three message kinds (docs/wire-format.md).

Every message is multipart: ``[topic, JSON header, payload]`` where the topic is
``pose``, ``event`` or ``meta`` and only ``pose`` has a payload (K x 3 little-endian
float32, row-major: x, y, likelihood per bodypart). Times on the wire are CLOCK_MONOTONIC
nanoseconds (see :mod:`poseloop.stream.clock`). Readers ignore header fields they do not
know; a different ``v`` is an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from poseloop.errors import PoseloopError
from poseloop.realtime.types import Pose
from poseloop.stream.clock import from_perf_ns

VERSION = 1
TOPICS = ("pose", "event", "meta")
DTYPE = np.dtype("<f4")

_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class WireError(PoseloopError):
    """A received message does not follow the wire format (or a different version of it)."""


@dataclass(frozen=True)
class Meta:
    """What a subscriber needs to name poses: sent at start and every second.

    skeleton: pairs of bodypart names; image_size: (width, height) of the full frame, the
    pixel space of pose coordinates.
    """

    bodyparts: list[str]
    skeleton: list[tuple[str, str]]
    model: str
    image_size: tuple[int, int]


@dataclass(frozen=True)
class PoseMessage:
    """One received pose: header fields and a read-only K x 3 float32 view of the payload."""

    frame: int
    t_capture_ns: int
    t_publish_ns: int
    latency_ns: dict[str, int]
    data: np.ndarray


@dataclass(frozen=True)
class EventMessage:
    """A rule fired on ``frame``: ``action`` was taken at ``t_ns`` (wire clock)."""

    frame: int
    rule: str
    action: str
    t_ns: int


Message = PoseMessage | EventMessage | Meta


class PoseEncoder:
    """Encodes poses into wire frames, reusing one payload buffer (the loop allocates little)."""

    def __init__(self) -> None:
        self._payload = np.empty((0, 3), DTYPE)

    def encode(self, pose: Pose, t_publish_ns: int) -> list[bytes | np.ndarray]:
        """Frames for ``pose``; ``pose`` times are perf_counter_ns, ``t_publish_ns`` wire clock.

        ``latency_ns[stage]`` is the time from capture to the end of that stage. The payload
        buffer is reused, so send the frames (ZeroMQ copies them) before the next call.
        """
        data = pose.data
        if data.ndim != 2 or data.shape[1] != 3:
            raise ValueError(f"pose data must be K x 3, got shape {data.shape}")
        if self._payload.shape != data.shape:
            self._payload = np.empty(data.shape, DTYPE)
        np.copyto(self._payload, data, casting="same_kind")
        t0 = int(pose.t_capture_ns)
        header = {
            "v": VERSION,
            "frame": int(pose.frame_index),
            "t_capture_ns": from_perf_ns(t0),
            "t_publish_ns": t_publish_ns,
            "latency_ns": {stage: t - t0 for stage, t in pose.timings.items()},
            "shape": data.shape,
            "dtype": "float32",
        }
        return [b"pose", _json.encode(header).encode(), self._payload]


def encode_event(frame: int, rule: str, action: str, t_ns: int) -> list[bytes]:
    """Frames of an event message; ``t_ns`` on the wire clock."""
    header = {"v": VERSION, "frame": int(frame), "rule": rule, "action": action, "t_ns": t_ns}
    return [b"event", _json.encode(header).encode()]


def encode_meta(meta: Meta) -> list[bytes]:
    """Frames of a meta message."""
    header = {
        "v": VERSION,
        "bodyparts": list(meta.bodyparts),
        "skeleton": [list(pair) for pair in meta.skeleton],
        "model": meta.model,
        "image_size": [int(v) for v in meta.image_size],
    }
    return [b"meta", _json.encode(header).encode()]


def _field(header: Mapping[str, Any], topic: str, name: str, kind: type | tuple[type, ...]) -> Any:
    try:
        value = header[name]
    except KeyError:
        raise WireError(f"{topic} header has no '{name}' field") from None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise WireError(f"{topic} header field '{name}' has the wrong type: {value!r}")
    return value


def _header(topic: str, raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"{topic} header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise WireError(f"{topic} header is not a JSON object")
    version = header.get("v")
    if version != VERSION:
        raise WireError(
            f"{topic} message has wire version {version!r}, this poseloop reads version "
            f"{VERSION}: use the same poseloop version on both ends"
        )
    return header


def _decode_pose(header: dict[str, Any], payload: bytes) -> PoseMessage:
    shape = _field(header, "pose", "shape", list)
    if len(shape) != 2 or shape[1] != 3 or not isinstance(shape[0], int) or shape[0] < 0:
        raise WireError(f"pose shape must be [K, 3], got {shape}")
    if header.get("dtype") != "float32":
        raise WireError(f"pose dtype must be 'float32', got {header.get('dtype')!r}")
    if len(payload) != shape[0] * 3 * DTYPE.itemsize:
        raise WireError(f"pose payload has {len(payload)} bytes, shape {shape} needs "
                        f"{shape[0] * 3 * DTYPE.itemsize}")
    return PoseMessage(
        frame=_field(header, "pose", "frame", int),
        t_capture_ns=_field(header, "pose", "t_capture_ns", int),
        t_publish_ns=_field(header, "pose", "t_publish_ns", int),
        latency_ns=_field(header, "pose", "latency_ns", dict),
        data=np.frombuffer(payload, DTYPE).reshape(shape[0], 3),
    )


def decode(frames: Sequence[bytes]) -> Message:
    """Decode one multipart message; raise WireError if it breaks the format."""
    if len(frames) < 2:
        raise WireError(f"expected [topic, header, ...], got {len(frames)} frame(s)")
    topic = bytes(frames[0]).decode("utf-8", "replace")
    if topic not in TOPICS:
        raise WireError(f"unknown topic {topic!r}; expected one of {', '.join(TOPICS)}")
    expected = 3 if topic == "pose" else 2
    if len(frames) != expected:
        raise WireError(f"{topic} message must have {expected} frames, got {len(frames)}")
    header = _header(topic, frames[1])
    if topic == "pose":
        return _decode_pose(header, frames[2])
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
        bodyparts=_field(header, "meta", "bodyparts", list),
        skeleton=[(a, b) for a, b in skeleton],
        model=_field(header, "meta", "model", str),
        image_size=(size[0], size[1]),
    )
