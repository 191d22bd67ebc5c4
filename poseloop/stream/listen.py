"""``poseloop listen``: print the poses, events and meta a publisher sends, with latency."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from poseloop.stream import clock
from poseloop.stream.config import DEFAULT_ENDPOINT
from poseloop.stream.curve import CurveClient
from poseloop.stream.subscriber import PoseSubscriber
from poseloop.stream.wire import EventMessage, Meta, PoseMessage


def _parts(names: Sequence[str], rows: np.ndarray,
           triangulation: np.ndarray | None = None) -> list[str]:
    """``name x y p`` (2D) or ``name x y z p`` (3D) per row; with ``triangulation`` (K x 2),
    each 3D point's camera count and reprojection error after it."""
    parts = []
    for j, (name, row) in enumerate(zip(names, rows, strict=True)):
        text = " ".join([name, *(f"{v:.1f}" for v in row[:-1]), f"{row[-1]:.2f}"])
        if triangulation is not None:
            error, cameras = triangulation[j]
            text += f" ({cameras:.0f} cams {error:.2f} px)"
        parts.append(text)
    return parts


def format_pose(
    message: PoseMessage,
    bodyparts: Sequence[str],
    latency_ns: int | None,
    individuals: Sequence[str] | None = None,
    unique_bodyparts: Sequence[str] = (),
) -> str:
    """One line: frame, optional latency (ms), then ``name x y p`` per bodypart (3D:
    ``name x y z p``, and ``(cameras cams error px)`` when the message has them).

    individuals: None prints one animal's bodyparts alone (a single-animal model); names
    print each individual (with its track id when it has one) before its bodyparts.
    """
    parts = [f"frame {message.frame}"]
    if latency_ns is not None:
        parts.append(f"latency {latency_ns / 1e6:.2f} ms")
    triangulation = message.triangulation
    if individuals is None:
        parts += _parts(bodyparts, message.points[0],
                        None if triangulation is None else triangulation[0])
    else:
        for n, (name, track) in enumerate(zip(individuals, message.ids, strict=True)):
            parts.append(f"{name}{f' (id {track})' if track >= 0 else ''}:")
            parts += _parts(bodyparts, message.points[n],
                            None if triangulation is None else triangulation[n])
    if message.unique is not None:
        parts += ["unique:", *_parts(unique_bodyparts, message.unique)]
    return "  ".join(parts)


def format_meta(meta: Meta) -> str:
    """One line: model, image size, bodyparts (and individuals, unique bodyparts; for 3D
    poses or several cameras, the coordinates and every camera's name and size)."""
    w, h = meta.image_size
    line = f"meta model {meta.model}  image {w}x{h}  bodyparts {', '.join(meta.bodyparts)}"
    if meta.multi_animal:
        line += f"  individuals {', '.join(meta.individuals)}"
    if meta.unique_bodyparts:
        line += f"  unique {', '.join(meta.unique_bodyparts)}"
    if meta.dims == 3:
        line += f"  3D {', '.join(meta.coords)} (world units)"
    if meta.dims == 3 or len(meta.cameras) > 1:
        line += "  cameras " + ", ".join(f"{c.name} {c.width}x{c.height}"
                                         for c in meta.cameras)
    return line


def listen(
    endpoint: str = DEFAULT_ENDPOINT,
    count: int | None = None,
    show_latency: bool = True,
    curve: CurveClient | None = None,
) -> int:
    """Print messages from ``endpoint`` until ``count`` poses arrived (None: until Ctrl-C).

    Latency is now - t_capture on the shared CLOCK_MONOTONIC, so it is only meaningful when
    the publisher runs on this host. Returns the number of poses received.
    """
    poses = 0
    shown_meta = None
    print(f"listening on {endpoint} (Ctrl-C to stop)", file=sys.stderr)
    with PoseSubscriber(endpoint, curve=curve) as sub:
        try:
            for message in sub:
                if isinstance(message, PoseMessage):
                    latency = clock.now_ns() - message.t_capture_ns if show_latency else None
                    n, k, _ = message.points.shape
                    multi = n > 1 or (sub.meta is not None and sub.meta.multi_animal)
                    u = 0 if message.unique is None else len(message.unique)
                    print(format_pose(message, sub.bodyparts(k), latency,
                                      sub.individuals(n) if multi else None,
                                      sub.unique_bodyparts(u)))
                    poses += 1
                    if count is not None and poses >= count:
                        break
                elif isinstance(message, EventMessage):
                    print(f"event frame {message.frame}  rule {message.rule}  "
                          f"action {message.action}")
                elif isinstance(message, Meta) and message != shown_meta:  # sent every second
                    shown_meta = message
                    print(format_meta(message))
        except KeyboardInterrupt:
            pass
    return poses
