"""``poseloop listen``: print the poses, events and meta a publisher sends, with latency."""

from __future__ import annotations

import sys

from poseloop.stream import clock
from poseloop.stream.config import DEFAULT_ENDPOINT
from poseloop.stream.curve import CurveClient
from poseloop.stream.subscriber import PoseSubscriber
from poseloop.stream.wire import EventMessage, Meta, PoseMessage


def format_pose(message: PoseMessage, names: list[str], latency_ns: int | None) -> str:
    """One line: frame, optional latency (ms), then ``name x y p`` per bodypart."""
    parts = [f"frame {message.frame}"]
    if latency_ns is not None:
        parts.append(f"latency {latency_ns / 1e6:.2f} ms")
    rows = zip(names, message.data, strict=True)
    parts += [f"{name} {x:.1f} {y:.1f} {p:.2f}" for name, (x, y, p) in rows]
    return "  ".join(parts)


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
                    print(format_pose(message, sub.bodyparts(len(message.data)), latency))
                    poses += 1
                    if count is not None and poses >= count:
                        break
                elif isinstance(message, EventMessage):
                    print(f"event frame {message.frame}  rule {message.rule}  "
                          f"action {message.action}")
                elif isinstance(message, Meta) and message != shown_meta:  # sent every second
                    shown_meta = message
                    w, h = message.image_size
                    print(f"meta model {message.model}  image {w}x{h}  "
                          f"bodyparts {', '.join(message.bodyparts)}")
        except KeyboardInterrupt:
            pass
    return poses
