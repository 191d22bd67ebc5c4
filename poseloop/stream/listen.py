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


def _parts(names: Sequence[str], rows: np.ndarray) -> list[str]:
    return [f"{name} {x:.1f} {y:.1f} {p:.2f}" for name, (x, y, p) in zip(names, rows,
                                                                             strict=True)]


def format_pose(
    message: PoseMessage,
    bodyparts: Sequence[str],
    latency_ns: int | None,
    individuals: Sequence[str] | None = None,
    unique_bodyparts: Sequence[str] = (),
) -> str:
    """One line: frame, optional latency (ms), then ``name x y p`` per bodypart.

    individuals: None prints one animal's bodyparts alone (a single-animal model); names
    print each individual (with its track id when it has one) before its bodyparts.
    """
    parts = [f"frame {message.frame}"]
    if latency_ns is not None:
        parts.append(f"latency {latency_ns / 1e6:.2f} ms")
    if individuals is None:
        parts += _parts(bodyparts, message.points[0])
    else:
        for name, track, rows in zip(individuals, message.ids, message.points, strict=True):
            parts.append(f"{name}{f' (id {track})' if track >= 0 else ''}:")
            parts += _parts(bodyparts, rows)
    if message.unique is not None:
        parts += ["unique:", *_parts(unique_bodyparts, message.unique)]
    return "  ".join(parts)


def format_meta(meta: Meta) -> str:
    """One line: model, image size, bodyparts (and individuals, unique bodyparts)."""
    w, h = meta.image_size
    line = f"meta model {meta.model}  image {w}x{h}  bodyparts {', '.join(meta.bodyparts)}"
    if meta.multi_animal:
        line += f"  individuals {', '.join(meta.individuals)}"
    if meta.unique_bodyparts:
        line += f"  unique {', '.join(meta.unique_bodyparts)}"
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
