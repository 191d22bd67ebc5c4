"""PosePublisher: the ``stream`` sink, poses, events and meta over ZeroMQ, never blocking.

The socket is an XPUB (a PUB that can report a full queue): every send is NOBLOCK with
``XPUB_NODROP`` set, so a subscriber queue at its high-water mark raises ``zmq.Again``
instead of dropping silently, and the publisher counts it. With ``on_full_queue =
"skip_subscriber"`` the message is then sent again in plain PUB mode, so it still reaches
every subscriber that has room; the full subscriber is skipped until its queue has drained
by half, and that skipped stretch counts as one drop. With ``"drop_message"`` nobody gets the
message and every lost message is counted, but a stalled subscriber stops the stream for all.

Meta is sent at open and then with the first message after each second, from the loop's
own thread (ZeroMQ sockets must not be shared between threads, so no timer thread).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from poseloop.realtime.sinks import SINKS
from poseloop.realtime.types import ActionRecord, Frame, Pose, Session
from poseloop.stream import clock
from poseloop.stream.config import StreamConfig, check_exposure
from poseloop.stream.curve import make_server
from poseloop.stream.wire import Meta, PoseEncoder, encode_event, encode_meta

META_INTERVAL_NS = 1_000_000_000


@SINKS.register("stream", StreamConfig)
class PosePublisher:
    """The ``stream`` sink: binds ``config.endpoint`` at :meth:`open` and publishes there.

    ``endpoint`` is the configured address until :meth:`open`, then the bound one (with
    the port the system chose for ``tcp://127.0.0.1:*``). Per topic, ``sent`` counts
    messages handed to ZeroMQ and ``dropped_by_topic`` those a full subscriber queue refused
    (with skip_subscriber a message can be both); ``dropped`` is their total. Not
    thread-safe: call from one thread.
    """

    name = "stream"
    _sock: zmq.Socket

    def __init__(self, config: StreamConfig | None = None) -> None:
        self.config = config = StreamConfig() if config is None else config
        check_exposure(config.endpoint, config.curve, config.allow_insecure)
        self.endpoint: str = config.endpoint
        self.sent: Counter[str] = Counter()
        self.dropped_by_topic: Counter[str] = Counter()
        #: The server's CURVE public key (Z85) once open, for clients; None without CURVE.
        self.public_key: bytes | None = None
        self._skip = config.on_full_queue == "skip_subscriber"
        self._encoder = PoseEncoder()
        self._ctx: zmq.Context | None = None
        self._auth: ThreadAuthenticator | None = None
        self._meta_frames: list[bytes] = []
        self._meta_ns = 0

    def open(self, session: Session) -> None:
        """Bind the endpoint and send the run's meta (names, the camera's size and rate)."""
        if self._ctx is not None:
            raise RuntimeError(f"stream publisher on {self.endpoint} is already open")
        config = self.config
        self._ctx = zmq.Context(io_threads=1)  # own context: one ZAP handler per context
        self._sock = self._ctx.socket(zmq.XPUB)
        try:
            self._sock.linger = 0
            self._sock.sndhwm = config.hwm
            self._sock.setsockopt(zmq.XPUB_NODROP, 1)
            self._sock.ipv6 = "://[" in config.endpoint
            if config.curve is not None:
                self._auth, self.public_key = make_server(self._ctx, self._sock, config.curve)
            self._sock.bind(config.endpoint)
        except BaseException:
            self.close()
            raise
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.set_meta(Meta.from_session(session))

    def set_meta(self, meta: Meta) -> None:
        """Replace the meta message and send it now."""
        self._meta_frames = encode_meta(meta)
        self._send_meta(clock.now_ns())

    def pose(self, pose: Pose, frame: Frame | None = None) -> None:
        """Publish ``pose`` (times in perf_counter_ns); never blocks, counts drops."""
        now = clock.now_ns()
        if now - self._meta_ns >= META_INTERVAL_NS:
            self._send_meta(now)
        self._send("pose", self._encoder.encode(pose, now))

    def event(self, action: ActionRecord) -> None:
        """Publish that ``action.rule`` fired on ``action.frame`` and what was done."""
        now = clock.now_ns()
        if now - self._meta_ns >= META_INTERVAL_NS:
            self._send_meta(now)
        self._send("event", encode_event(action.frame, action.rule, action.action,
                                         clock.from_perf_ns(action.t_ns),
                                         action.animals.split(",") if action.animals else ()))

    @property
    def dropped(self) -> int:
        """Messages a full subscriber queue refused, all topics together."""
        return sum(self.dropped_by_topic.values())

    @property
    def fatal(self) -> str | None:
        """Always None: a publisher never needs to stop the run."""
        return None

    def close(self) -> None:
        """Close the socket at once (linger 0) and stop the authenticator; idempotent."""
        if self._ctx is None:
            return
        if hasattr(self, "_sock"):
            self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._ctx.term()
        self._ctx = None

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
            self.dropped_by_topic[topic] += 1
            if not self._skip:
                return
            self._sock.setsockopt(zmq.XPUB_NODROP, 0)  # lossy: only the full queue misses it
            self._sock.send_multipart(frames, zmq.NOBLOCK)
            self._sock.setsockopt(zmq.XPUB_NODROP, 1)
        self.sent[topic] += 1
