"""A whole closed loop on one machine, measured end to end.

The live engine runs the synthetic camera through a model, evaluates a posture rule that
drives a serial device (an emulator on a real pseudo-terminal) and publishes every pose
over ZeroMQ to a subscriber (a thread, or another process). Measured per frame, all on
CLOCK_MONOTONIC: captured -> pose decoded, -> rule decided, -> published, -> received by
the subscriber; and for each firing, captured -> command bytes received by the device.
``poseloop demo`` and ``benchmarks/closed_loop.py`` are thin wrappers around this.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poseloop.hardware.emulator import DeviceEmulator
from poseloop.realtime.builder import build_engine
from poseloop.realtime.engine import Engine, RunStats
from poseloop.realtime.engine_config import EngineConfig
from poseloop.realtime.types import Frame, Pose
from poseloop.rules import Rule
from poseloop.stream import clock
from poseloop.stream.publisher import PosePublisher
from poseloop.stream.subscriber import PoseSubscriber
from poseloop.stream.wire import PoseMessage

#: A loopback endpoint whose port the publisher's socket picks when it binds.
ANY_PORT = "tcp://127.0.0.1:*"


def bound_endpoint(engine: Engine) -> str:
    """The endpoint an opened engine's stream is bound to (its port picked at bind)."""
    publisher = engine.sink("stream")
    if not isinstance(publisher, PosePublisher):
        raise ValueError("the engine has no stream")
    return publisher.endpoint


def _subscribe(endpoint: str, stop: threading.Event | None, conn=None) -> list[tuple[int, int]]:
    """Receive poses until stopped; (frame, receive - capture latency ns) per pose."""
    sub = PoseSubscriber(endpoint, topics=("pose",))
    got: list[tuple[int, int]] = []
    try:
        while True:
            if stop is not None and stop.is_set():
                break
            if conn is not None and conn.poll():
                break
            msg = sub.recv(timeout=0.05)
            if isinstance(msg, PoseMessage):
                got.append((msg.frame, clock.now_ns() - msg.t_capture_ns))
    finally:
        sub.close()
    if conn is not None:
        conn.send(got)
    return got


@dataclass
class LoopReport:
    """Per-frame stage latencies (ns since capture), device and subscriber latencies.

    device_extra_ns / subscriber_extra_ns: per frame, that path's latency minus the same
    frame's inference: everything the loop adds to the network, frame by frame.
    """

    stats: RunStats
    since_capture: dict[str, np.ndarray]
    infer_ns: np.ndarray
    device_ns: np.ndarray
    subscriber_ns: np.ndarray
    subscriber_received: int
    truth_error_px: float | None
    commands_received: int
    events: int = 0
    device_extra_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    subscriber_extra_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def default_rule(width: int, mode: str = "edge") -> Rule:
    """Pulse output 1 for 5 ms when the snout enters the left third of the arena."""
    return Rule.model_validate({
        "name": "snout_left", "mode": mode,
        "when": {"type": "zone", "part": "snout",
                 "rect": {"x1": 0, "y1": 0, "x2": width / 3, "y2": 10_000}},
        "actions": [{"device": "stim", "command": "PULSE 1 5"}],
    })


def run_closed_loop(model: str | Path, frames: int, fps: float = 100.0,
                    size: tuple[int, int] = (320, 240), mode: str = "edge",
                    subscriber: str = "thread", record_dir: str | Path | None = None,
                    threads: int | None = None) -> LoopReport:
    """Run ``frames`` frames of the synthetic camera through the whole loop and measure it."""
    with DeviceEmulator() as emulator:
        cfg = EngineConfig.model_validate({
            "model": str(model),
            "camera": {"kind": "synthetic", "width": size[0], "height": size[1], "fps": fps,
                       "paced": True, "seed": 1, "frames": frames},
            "runner": {"intra_threads": threads},
            "rules": [default_rule(size[0], mode)],
            "devices": [{"name": "stim", "port": emulator.port}],
            "stream": {"endpoint": ANY_PORT},
            "record": {"dir": str(record_dir) if record_dir else None},
        })
        engine = build_engine(cfg)
        n = frames
        stamps = {k: np.zeros(n, np.int64)
                  for k in ("preprocess", "infer", "decode", "rules", "publish")}
        capture = np.zeros(n, np.int64)
        frame_index = np.zeros(n, np.int64)
        fired_capture: list[int] = []
        fired_row: list[int] = []
        errors: list[float] = []
        count = 0

        def keep(pose: Pose, frame: Frame) -> None:
            nonlocal count
            if count >= n:
                return
            capture[count] = pose.t_capture_ns
            frame_index[count] = pose.frame_index
            for k in stamps:
                stamps[k][count] = pose.timings[k]
            for _ in engine.last_events:
                fired_capture.append(pose.t_capture_ns)
                fired_row.append(count)
            if frame.truth is not None:
                errors.append(float(np.nanmean(np.linalg.norm(
                    pose.points[0, :, :2] - frame.truth, axis=1))))
            count += 1

        stop = threading.Event()
        proc = parent = None
        sub_thread = None
        result: list[list[tuple[int, int]]] = []
        with engine:
            endpoint = bound_endpoint(engine)
            if subscriber == "process":
                parent, child = mp.get_context("spawn").Pipe()
                proc = mp.get_context("spawn").Process(target=_subscribe,
                                                       args=(endpoint, None, child))
                proc.start()
            else:
                sub_thread = threading.Thread(
                    target=lambda: result.append(_subscribe(endpoint, stop)), daemon=True)
                sub_thread.start()
            time.sleep(0.5 if subscriber == "thread" else 2.0)  # let the subscriber connect
            stats = engine.run(on_pose=keep)
            time.sleep(0.2)  # let the last bytes and messages arrive
        if proc is not None and parent is not None:
            parent.send("stop")
            received = parent.recv()
            proc.join(5)
        else:
            stop.set()
            if sub_thread is not None:
                sub_thread.join(5)
            received = result[0] if result else []
        pulses = [r.t_ns for r in emulator.received if r.data.startswith(b"PULSE")]
    k = min(len(pulses), len(fired_capture))
    since = {name: (stamps[name][:count] - capture[:count]) for name in stamps}
    infer_ns = stamps["infer"][:count] - stamps["preprocess"][:count]
    device_ns = np.array(pulses[:k], np.int64) - np.array(fired_capture[:k], np.int64)
    row_of = {int(f): i for i, f in enumerate(frame_index[:count])}
    sub_rows = [(row_of[f], lat) for f, lat in received if f in row_of]
    return LoopReport(
        stats=stats, since_capture=since, infer_ns=infer_ns, device_ns=device_ns,
        subscriber_ns=np.array([lat for _, lat in received], np.int64),
        subscriber_received=len(received),
        truth_error_px=float(np.mean(errors)) if errors else None,
        commands_received=len(pulses), events=stats.events,
        device_extra_ns=device_ns - infer_ns[np.array(fired_row[:k], np.int64)],
        subscriber_extra_ns=np.array([lat - infer_ns[i] for i, lat in sub_rows], np.int64),
    )


def format_report(report: LoopReport) -> str:
    """The latency table (ms since the frame was captured) and the counts."""
    rows = [("inference alone", report.infer_ns),
            ("pose decoded", report.since_capture["decode"]),
            ("rule decided", report.since_capture["rules"]),
            ("published", report.since_capture["publish"]),
            ("subscriber got pose", report.subscriber_ns),
            ("device got command", report.device_ns)]
    lines = [f"{'since capture':<22s}{'n':>7s}{'p50 ms':>9s}{'p95 ms':>9s}{'p99 ms':>9s}"]
    for name, values in rows:
        if len(values) == 0:
            lines.append(f"{name:<22s}{0:>7d}{'-':>9s}{'-':>9s}{'-':>9s}")
            continue
        p50, p95, p99 = np.percentile(values / 1e6, [50, 95, 99])
        lines.append(f"{name:<22s}{len(values):>7d}{p50:9.3f}{p95:9.3f}{p99:9.3f}")
    lines.append("\nper frame, that path minus the same frame's inference:")
    for name, values in (("device got command", report.device_extra_ns),
                         ("subscriber got pose", report.subscriber_extra_ns)):
        if len(values):
            p50, p95, p99 = np.percentile(values / 1e6, [50, 95, 99])
            lines.append(f"{name:<22s}{len(values):>7d}{p50:9.3f}{p95:9.3f}{p99:9.3f}")
    s = report.stats
    lines.append(
        f"frames {s.frames} ({s.fps:.1f} fps, camera dropped {s.camera_dropped}); "
        f"rule events {report.events}, commands at the device {report.commands_received}; "
        f"poses at the subscriber {report.subscriber_received} (stream dropped "
        f"{s.sink_dropped.get('stream', 0)})"
    )
    if report.truth_error_px is not None:
        lines.append(f"mean error vs the synthetic ground truth: {report.truth_error_px:.2f} px")
    return "\n".join(lines)
