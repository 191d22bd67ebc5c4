"""PosePublisher: sends poses, events and meta over ZeroMQ without ever blocking the loop.

The socket is an XPUB (a PUB that can report a full queue): every send is NOBLOCK with
``XPUB_NODROP`` set, so a subscriber queue at its high-water mark raises ``zmq.Again``
instead of dropping silently, and the publisher counts it. With ``on_full_queue =
"skip_subscriber"`` the message is then sent again in plain PUB mode, so it still reaches
every subscriber that has room; the full subscriber is skipped until its queue has drained
by half, and that skipped stretch counts as one drop. With ``"drop_message"`` nobody gets the
message and every lost message is counted, but a stalled subscriber stops the stream for all.

Meta is sent at start and then with the first message after each second, from the loop's
own thread (ZeroMQ sockets must not be shared between threads, so no timer thread).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import zmq

from poseloop.realtime.types import Pose
from poseloop.stream import clock
from poseloop.stream.config import DEFAULT_ENDPOINT, CurveConfig, StreamConfig, check_exposure
from poseloop.stream.curve import make_server
from poseloop.stream.wire import Meta, PoseEncoder, encode_event, encode_meta

META_INTERVAL_NS = 1_000_000_000


class PosePublisher:
    """Binds ``endpoint`` and publishes ``pose``/``event``/``meta`` messages (a loop ``Sink``).

    Per topic, ``sent`` counts messages handed to ZeroMQ and ``dropped`` those a full
    subscriber queue refused (with skip_subscriber a message can be both). Not thread-safe:
    call from one thread.
    """

    def __init__(
        self,
        meta: Meta,
        endpoint: str = DEFAULT_ENDPOINT,
        hwm: int = 1000,
        curve: CurveConfig | None = None,
        allow_insecure: bool = False,
        on_full_queue: Literal["skip_subscriber", "drop_message"] = "skip_subscriber",
    ) -> None:
        check_exposure(endpoint, curve, allow_insecure)
        self.sent: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._skip = on_full_queue == "skip_subscriber"
        self._encoder = PoseEncoder()
        self._ctx = zmq.Context(io_threads=1)  # own context: one ZAP handler per context
        self._auth = None
        #: The server's CURVE public key (Z85), for clients; None without CURVE.
        self.public_key: bytes | None = None
        self._sock = self._ctx.socket(zmq.XPUB)
        try:
            self._sock.linger = 0
            self._sock.sndhwm = hwm
            self._sock.setsockopt(zmq.XPUB_NODROP, 1)
            self._sock.ipv6 = "://[" in endpoint
            if curve is not None:
                self._auth, self.public_key = make_server(self._ctx, self._sock, curve)
            self._sock.bind(endpoint)
        except BaseException:
            self.close()
            raise
        self.endpoint: str = self._sock.last_endpoint.decode()
        self.set_meta(meta)

    @classmethod
    def from_config(cls, config: StreamConfig, meta: Meta) -> PosePublisher:
        """A publisher for a validated ``StreamConfig``."""
        return cls(
            meta,
            endpoint=config.endpoint,
            hwm=config.hwm,
            curve=config.curve,
            allow_insecure=config.allow_insecure,
            on_full_queue=config.on_full_queue,
        )

    def set_meta(self, meta: Meta) -> None:
        """Replace the meta message and send it now."""
        self._meta_frames = encode_meta(meta)
        self._send_meta(clock.now_ns())

    def send(self, pose: Pose) -> None:
        """Publish ``pose`` (times in perf_counter_ns); never blocks, counts drops."""
        now = clock.now_ns()
        if now - self._meta_ns >= META_INTERVAL_NS:
            self._send_meta(now)
        self._send("pose", self._encoder.encode(pose, now))

    def send_event(self, frame: int, rule: str, action: str, t_ns: int | None = None) -> None:
        """Publish that ``rule`` fired on ``frame`` and ``action`` was taken.

        ``t_ns``: ``perf_counter_ns()`` when it happened (default: now).
        """
        now = clock.now_ns()
        if now - self._meta_ns >= META_INTERVAL_NS:
            self._send_meta(now)
        t_wire = now if t_ns is None else clock.from_perf_ns(t_ns)
        self._send("event", encode_event(frame, rule, action, t_wire))

    def close(self) -> None:
        """Close the socket at once (linger 0) and stop the authenticator; idempotent."""
        self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._ctx.term()

    def __enter__(self) -> PosePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send_meta(self, now: int) -> None:
        self._meta_ns = now
        self._send("meta", self._meta_frames)
        while True:  # discard (un)subscription notices so they never pile up
            try:
                self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break

    def _send(self, topic: str, frames: list[Any]) -> None:
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped[topic] += 1
            if not self._skip:
                return
            self._sock.setsockopt(zmq.XPUB_NODROP, 0)  # lossy: only the full queue misses it
            self._sock.send_multipart(frames, zmq.NOBLOCK)
            self._sock.setsockopt(zmq.XPUB_NODROP, 1)
        self.sent[topic] += 1
