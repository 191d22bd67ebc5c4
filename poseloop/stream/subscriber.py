"""PoseSubscriber: receive poses, events and meta from a PosePublisher as typed messages."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import zmq

from poseloop.realtime.types import SINGLE_ANIMAL
from poseloop.stream.config import DEFAULT_ENDPOINT
from poseloop.stream.curve import CurveClient
from poseloop.stream.wire import TOPICS, Message, Meta, decode


class PoseSubscriber:
    """Connects to ``endpoint`` and yields ``PoseMessage``, ``EventMessage`` and ``Meta``.

    Always listens to ``meta`` (even when ``topics`` leaves it out) so ``meta`` holds the
    latest names of individuals and bodyparts. Pose arrays (N x K x 3 ``points``, or
    N x K x 4 for triangulated 3D poses; U x 3 or U x 4 ``unique``; N x K x 2
    ``triangulation``) are read-only views of the received bytes.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        topics: Iterable[str] = TOPICS,
        curve: CurveClient | None = None,
        hwm: int = 1000,
    ) -> None:
        self.topics = frozenset(topics)
        unknown = self.topics - set(TOPICS)
        if unknown:
            raise ValueError(f"unknown topics {sorted(unknown)}; choose from {TOPICS}")
        self.meta: Meta | None = None
        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.linger = 0
        self._sock.rcvhwm = hwm
        self._sock.ipv6 = "://[" in endpoint
        if curve is not None:
            curve.apply(self._sock)
        for topic in self.topics | {"meta"}:
            self._sock.subscribe(topic.encode())
        self._sock.connect(endpoint)

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message of a chosen topic, or None after ``timeout`` seconds (None: wait).

        Raises WireError for a message that breaks the format (e.g. another wire version).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = None if deadline is None else max(0, (deadline - time.monotonic()) * 1e3)
            if not self._sock.poll(wait_ms):
                return None
            frames = self._sock.recv_multipart()
            topic = frames[0].decode("utf-8", "replace")
            if topic not in TOPICS:  # a subscription is a prefix: "pose" matches "posex"
                continue
            message = decode(frames)
            if isinstance(message, Meta):
                self.meta = message
            if topic in self.topics:
                return message

    def __iter__(self) -> Iterator[Message]:
        while True:
            message = self.recv()
            if message is not None:
                yield message

    def bodyparts(self, k: int) -> list[str]:
        """Names of a pose's K bodyparts: from the latest meta, else ``bp0``, ``bp1``, ..."""
        if self.meta is not None and len(self.meta.bodyparts) == k:
            return list(self.meta.bodyparts)
        return [f"bp{i}" for i in range(k)]

    def individuals(self, n: int) -> list[str]:
        """Names of a pose's N individuals: from the latest meta, else ``animal`` for one,
        ``ind0``, ``ind1``, ... for more."""
        if self.meta is not None and len(self.meta.individuals) == n:
            return list(self.meta.individuals)
        return list(SINGLE_ANIMAL) if n == 1 else [f"ind{i}" for i in range(n)]

    def unique_bodyparts(self, u: int) -> list[str]:
        """Names of a pose's U unique bodyparts: from the latest meta, else ``unique0``, ..."""
        if self.meta is not None and len(self.meta.unique_bodyparts) == u:
            return list(self.meta.unique_bodyparts)
        return [f"unique{i}" for i in range(u)]

    def close(self) -> None:
        """Disconnect now (linger 0)."""
        self._sock.close(linger=0)

    def __enter__(self) -> PoseSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

