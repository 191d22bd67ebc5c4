"""The live view sink: ``poseloop run --web [HOST:PORT]`` serves a page of the running
experiment — the camera image with every animal's points, skeleton and name and the rule
zones drawn, events as they fire, fps and drop counters, a per-stage latency histogram, and
buttons to pause/resume recording and to stop the run. With triangulated 3D poses the image
is the first camera's with that camera's 2D poses drawn, and the page lists the latest 3D
coordinates (world units, mm) as text.

The loop's side costs a timestamp check and, at most ``max_fps`` times a second, one copy of
the frame into a reused buffer: drawing and JPEG encoding happen on the sink's own thread,
and each browser gets frames through a queue of ``CLIENT_QUEUE``; a slow browser skips
frames (counted), it never slows the loop. With no browser watching nothing is encoded.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import deque
from typing import Any

import cv2
import numpy as np
from pydantic import Field

from poseloop.config import Strict
from poseloop.realtime.display import draw_pose, image_points
from poseloop.realtime.sinks import SINKS
from poseloop.realtime.types import STAGES, ActionRecord, Frame, Pose, Session

#: Frames waiting per browser; beyond it that browser skips frames.
CLIENT_QUEUE = 2
#: Upper edges (µs) of the latency histogram's bins (the last bin is open-ended).
BINS_US = (50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
#: Poses the histogram covers (a sliding window).
HISTOGRAM_WINDOW = 2000
STATUS_INTERVAL_S = 0.5
#: The loop's stages with triangulated 3D poses (``Pose.timings``).
STAGES_3D = (*STAGES[:STAGES.index("process")], "triangulate", *STAGES[STAGES.index("process"):])


class WebConfig(Strict):
    """The ``web:`` section: where the live page is served and how often it gets a frame."""

    host: str = Field(default="127.0.0.1", description="any other address needs the token")
    port: int = Field(default=8000, ge=0, le=65535, description="0 = any free port")
    max_fps: float = Field(default=15.0, gt=0, le=120, description="frames sent per second")
    jpeg_quality: int = Field(default=75, ge=10, le=100)
    token: str | None = Field(default=None, min_length=8,
                              description="access token (default: generated off loopback)")


class _Client:
    """One browser: its WebSocket and the queue its sender task drains."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self.skipped = 0


class LiveView:
    """The ``web`` sink (see the module docstring)."""

    name = "web"
    after_publish = True  # every stage stamp is in the pose it gets

    def __init__(self, config: WebConfig, log: Any = print) -> None:
        self.config = config
        self.dropped = 0  # frames the encoder had not taken yet when the next one came
        self.rate_skipped = 0  # poses not sent because of max_fps
        self.fatal: str | None = None
        self.sent = 0
        self._log = log
        self._interval_ns = int(1e9 / config.max_fps)
        self._last_ns = 0
        self._session: Session | None = None
        self._engine: Any = None
        self._zones: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._slot: tuple[int, Pose] | None = None
        self._buffers: list[np.ndarray] = []
        self._next_buffer = 0
        self._timings: deque[dict[str, int]] = deque(maxlen=HISTOGRAM_WINDOW)
        self._events: deque[ActionRecord] = deque(maxlen=200)
        self._poses = 0
        self._latest: Pose | None = None
        self._clients: set[_Client] = set()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.server: Any = None

    # -- engine side ------------------------------------------------------------------
    def attach(self, engine: Any) -> None:
        """The engine that runs this sink: the page's buttons stop it and pause its recorder."""
        self._engine = engine

    def set_zones(self, zones: list[tuple[str, dict]]) -> None:
        """The rules' zones to draw: (rule name, {rect|circle|polygon: ...})."""
        self._zones = zones

    def open(self, session: Session) -> None:
        """Start the web server and the encoder thread."""
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route, WebSocketRoute

        from poseloop.web.server import WebServer, page_routes

        self._session = session

        def guard(request: Any) -> Response | None:
            return self.server.denied(request)

        async def state(request: Any) -> Response:
            return guard(request) or JSONResponse(self.status())

        async def stop(request: Any) -> Response:
            if (denied := guard(request)) is not None:
                return denied
            if self._engine is not None:
                self._engine.stop()
            return JSONResponse({"stopping": True})

        async def record(request: Any) -> Response:
            if (denied := guard(request)) is not None:
                return denied
            recorder = self._recorder()
            if recorder is None:
                return JSONResponse({"error": "this run records nothing"}, status_code=409)
            body = await request.json()
            recorder.paused = not bool(body.get("on", True))
            return JSONResponse({"recording": not recorder.paused})

        self.server = WebServer(
            [*page_routes(lambda: self.server, "live.html", "live.js"),
             Route("/api/state", state),
             Route("/api/stop", stop, methods=["POST"]),
             Route("/api/record", record, methods=["POST"]),
             WebSocketRoute("/ws", self._serve_socket)],
            self.config.host, self.config.port, self.config.token, self._log)
        self.server.start()
        self._thread = threading.Thread(target=self._encode_loop, name="web-encoder",
                                        daemon=True)
        self._thread.start()

    def pose(self, pose: Pose, frame: Frame) -> None:
        """Note the stage stamps; at most max_fps times a second, hand the frame over."""
        self._poses += 1
        self._latest = pose
        self._timings.append(pose.timings)
        now = pose.timings.get("publish") or time.perf_counter_ns()
        if not self._clients:
            return
        if now - self._last_ns < self._interval_ns:
            self.rate_skipped += 1
            return
        self._last_ns = now
        image = frame.image
        if len(self._buffers) < 2 or self._buffers[0].shape != image.shape:
            self._buffers = [np.empty_like(image), np.empty_like(image)]
        with self._lock:
            if self._slot is not None:
                self.dropped += 1  # the encoder is behind: the older frame is replaced
            buffer = self._next_buffer
            np.copyto(self._buffers[buffer], image)
            self._next_buffer = 1 - buffer
            self._slot = (buffer, pose)
        self._wake.set()

    def event(self, action: ActionRecord) -> None:
        self._events.append(action)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.server is not None:
            self.server.stop()

    # -- status -------------------------------------------------------------------------
    def _recorder(self) -> Any:
        return self._engine.sink("recorder") if self._engine is not None else None

    def status(self) -> dict:
        """Counters, recent events and the latency histogram, as the page shows them."""
        stats = getattr(self._engine, "stats", None)
        recorder = self._recorder()
        session = self._session
        return {
            "type": "status",
            "poses": self._poses, "sent": self.sent, "dropped": self.dropped,
            "rate_skipped": self.rate_skipped,
            "browser_skipped": sum(c.skipped for c in list(self._clients)),
            "camera_dropped": getattr(stats, "camera_dropped", 0),
            "frames": getattr(stats, "frames", 0),
            "recording": None if recorder is None else not recorder.paused,
            "individuals": list(session.individuals) if session else [],
            "events": [{"frame": e.frame, "rule": e.rule, "action": e.action,
                        "animals": e.animals} for e in list(self._events)[-20:]],
            "histogram": self.histogram(),
            "points3d": self.points3d(),
        }

    def points3d(self) -> list[list] | None:
        """The latest 3D pose as rows [individual, bodypart, x, y, z, likelihood] (0.1 mm,
        None where not triangulated), or None for 2D poses."""
        pose, session = self._latest, self._session
        if pose is None or session is None or pose.points.shape[-1] != 4:
            return None
        rows = []
        for name, animal in zip(session.individuals, pose.points.tolist(), strict=False):
            for bodypart, (x, y, z, p) in zip(session.bodyparts, animal, strict=False):
                rows.append([name, bodypart, _rounded(x, 1), _rounded(y, 1), _rounded(z, 1),
                              _rounded(p, 2)])
        return rows

    def histogram(self) -> dict:
        """Per stage, counts of poses per latency bin (µs edges ``BINS_US``); 3D poses add
        the ``triangulate`` stage between decode and process."""
        stages = STAGES_3D if self._session is not None and self._session.dims == 3 else STAGES
        counts = {stage: [0] * (len(BINS_US) + 1) for stage in stages[1:]}
        edges = np.asarray(BINS_US)
        for timings in list(self._timings):
            for before, stage in zip(stages, stages[1:], strict=False):
                if before in timings and stage in timings:
                    us = (timings[stage] - timings[before]) / 1e3
                    counts[stage][int(np.searchsorted(edges, us))] += 1
        return {"bins_us": list(BINS_US), "counts": counts}

    # -- encoder thread and browsers ---------------------------------------------------
    def _encode_loop(self) -> None:
        session = self._session
        assert session is not None
        last_status = 0.0
        while not self._stop:
            self._wake.wait(timeout=STATUS_INTERVAL_S)
            self._wake.clear()
            with self._lock:
                slot, self._slot = self._slot, None
                image = self._buffers[slot[0]].copy() if slot is not None else None
            if slot is not None and image is not None:
                self._draw_zones(image)
                points = image_points(slot[1])
                if points is not None:
                    draw_pose(image, points, session)
                ok, jpeg = cv2.imencode(".jpg", image,
                                        [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
                if ok:
                    self._broadcast(jpeg.tobytes())
                    self.sent += 1
            if time.monotonic() - last_status >= STATUS_INTERVAL_S:
                last_status = time.monotonic()
                self._broadcast(json.dumps(self.status()))

    def _draw_zones(self, image: np.ndarray) -> None:
        for name, shape in self._zones:
            colour = (0, 215, 255)
            if "rect" in shape:
                r = shape["rect"]
                cv2.rectangle(image, (int(r["x1"]), int(r["y1"])), (int(r["x2"]), int(r["y2"])),
                              colour, 1)
                anchor = (int(r["x1"]) + 2, int(r["y1"]) + 12)
            elif "circle" in shape:
                c = shape["circle"]
                cv2.circle(image, (int(c["cx"]), int(c["cy"])), int(c["r"]), colour, 1)
                anchor = (int(c["cx"] - c["r"]), int(c["cy"] - c["r"]) + 12)
            else:
                pts = np.round(np.asarray(shape["polygon"])).astype(np.int32)
                cv2.polylines(image, [pts], True, colour, 1)
                anchor = (int(pts[0][0]) + 2, int(pts[0][1]) + 12)
            cv2.putText(image, name, anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1)

    def _broadcast(self, message: bytes | str) -> None:
        loop = self.server.loop if self.server is not None else None
        if loop is None or loop.is_closed():
            return
        for client in list(self._clients):
            def put(c: _Client = client) -> None:
                try:
                    c.queue.put_nowait(message)
                except asyncio.QueueFull:
                    c.skipped += 1
            loop.call_soon_threadsafe(put)

    async def _serve_socket(self, socket: Any) -> None:
        from starlette.websockets import WebSocketDisconnect

        from poseloop.web.server import authorized

        if not authorized(self.server.token, socket.query_params, socket.headers):
            await socket.close(code=1008)
            return
        await socket.accept()
        session = self._session
        await socket.send_text(json.dumps({
            "type": "hello", "bodyparts": list(session.bodyparts) if session else [],
            "individuals": list(session.individuals) if session else [],
            "model": session.model if session else "", "max_fps": self.config.max_fps}))
        client = _Client(socket)
        self._clients.add(client)

        async def receive() -> None:
            try:
                while True:
                    await socket.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return

        listener = asyncio.ensure_future(receive())
        try:
            while not listener.done():
                getter = asyncio.ensure_future(client.queue.get())
                done, _ = await asyncio.wait({getter, listener},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                message = getter.result()
                if isinstance(message, bytes):
                    await socket.send_bytes(message)
                else:
                    await socket.send_text(message)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._clients.discard(client)
            listener.cancel()


def _rounded(value: float, digits: int) -> float | None:
    """``value`` rounded for the page; None (JSON null) for NaN, which JSON cannot carry."""
    return round(value, digits) if math.isfinite(value) else None


@SINKS.register("web", WebConfig)
def make_live_view(config: WebConfig) -> LiveView:
    """The live page sink (starlette and uvicorn are imported when it opens)."""
    return LiveView(config)
