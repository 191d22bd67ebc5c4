"""Soak: the whole live loop for a long time, then proof that nothing was lost.

The engine runs the synthetic camera (default 200 FPS) with the recorder, the ZeroMQ stream
to a subscriber in another process, and a posture rule driving a serial device emulator in
another process (on a real pseudo-terminal), so this process's memory is the engine's
alone. Afterwards the recording is read back and checked against what the loop did:

* every processed frame is in the pose .h5 and the timing table exactly once, in order, and
  nothing else is;
* the timing table has no gaps: every row has the capture time and every stage's stamp;
* every frame the camera captured is processed or counted as dropped, with the reason:
  ``camera`` (the loop was busy when a newer frame came: newest frame wins) or ``recorder``
  (its queue was full); the per-row ``dropped`` and ``lost`` columns add up to those counts;
* the subscriber received every pose the publisher did not count as dropped, and the
  device every command the engine did not count as dropped;
* resident memory grows < 5 % from the end of the warm-up to the end of the run.

``poseloop soak`` and ``benchmarks/soak.py`` wrap :func:`run_soak`; the test suite runs it
for 60 s.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from poseloop.closed_loop import ANY_PORT, bound_endpoint, default_rule
from poseloop.hardware.serial_device import SerialDevice
from poseloop.realtime.builder import build_engine
from poseloop.realtime.engine import RunStats
from poseloop.realtime.engine_config import EngineConfig
from poseloop.realtime.recorder import Recorder
from poseloop.realtime.types import STAGES, Frame, Pose
from poseloop.rules import Rule
from poseloop.stream.publisher import PosePublisher

#: Largest allowed resident-memory growth after the warm-up.
RSS_LIMIT = 0.05
#: A rule that pulses output 2 at most every 50 ms whatever the pose, so the serial path
#: carries a steady 20 commands/s beside the posture rule's.
HEARTBEAT = Rule.model_validate({
    "name": "heartbeat", "mode": "level", "refractory_ms": 50.0,
    "when": {"type": "likelihood", "part": "snout", "p": 0.0},
    "actions": [{"device": "stim", "command": "PULSE 2 1"}],
})


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class SoakReport:
    """What the soak did and what the checks found (``problems`` empty = passed)."""

    stats: RunStats
    duration_s: float
    fps: float
    recorded: int
    dropped: dict[str, int]
    stage_ms: dict[str, tuple[float, float, float]]
    rss_mb: list[tuple[float, float]]
    rss_warm_mb: float
    rss_growth: float
    poses_sent: int
    poses_received: int
    commands_sent: int
    commands_received: int
    record_dir: Path
    outputs_off: bool = False
    video_dropped: int | None = None  # None: no video recorded
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _subscribe(endpoint: str, capacity: int, conn) -> None:
    """Subscriber process: mark every received pose's frame until told to stop."""
    from poseloop.stream.subscriber import PoseSubscriber
    from poseloop.stream.wire import PoseMessage

    seen = np.zeros(capacity, np.uint8)
    count = duplicates = beyond = 0
    sub = PoseSubscriber(endpoint, topics=("pose",), hwm=100_000)
    conn.send("ready")
    try:
        while not conn.poll():
            msg = sub.recv(timeout=0.05)
            if isinstance(msg, PoseMessage):
                count += 1
                if msg.frame >= capacity:
                    beyond += 1
                elif seen[msg.frame]:
                    duplicates += 1
                else:
                    seen[msg.frame] = 1
    finally:
        sub.close()
    conn.send((count, duplicates, beyond, seen))


class _Emulator:
    """A DeviceEmulator in its own process (``python -m poseloop.hardware.emulator``)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "poseloop.hardware.emulator", "--log", str(log)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None  # both PIPE
        self.port = self.proc.stdout.readline().strip()
        if not self.port:
            raise RuntimeError("the device emulator did not start")

    def stop(self) -> list[bytes]:
        """Stop it; the commands it received, in order."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [bytes.fromhex(line.split()[1]) for line in lines if len(line.split()) == 2]


def run_soak(model: str | Path, out_dir: str | Path, duration_s: float, fps: float = 200.0,
             size: tuple[int, int] = (160, 120), threads: int | None = 1,
             warmup_s: float | None = None, rss_every_s: float | None = None,
             video: bool = False, log=print) -> SoakReport:
    """Run the full loop for ``duration_s`` and check the recording (see the module doc).

    video: also record the frames, and check that every recorded pose not counted in
    ``video_dropped`` has its frame in the video, in order.
    warmup_s: memory baseline time (default 20 % of the run, 10 s to 300 s).
    rss_every_s: memory sampling period (default: 100 samples per run, 1 s to 10 s apart).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    warmup_s = min(max(0.2 * duration_s, 10.0), 300.0) if warmup_s is None else warmup_s
    rss_every_s = min(max(duration_s / 100, 1.0), 10.0) if rss_every_s is None else rss_every_s
    capacity = int(fps * (duration_s + 30) * 1.2) + 10_000  # frame indices we can mark
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    emulator = _Emulator(out_dir / "device_log.txt")
    cfg = EngineConfig.model_validate({
        "model": str(model),
        "camera": {"kind": "synthetic", "width": size[0], "height": size[1], "fps": fps,
                   "paced": True, "seed": 3},
        "runner": {"intra_threads": threads, "inter_threads": 1},
        "rules": [default_rule(size[0], "edge"), HEARTBEAT],
        "devices": [{"name": "stim", "port": emulator.port}],
        "stream": {"endpoint": ANY_PORT, "hwm": 100_000},
        "record": {"dir": str(out_dir), "name": "soak", "if_exists": "overwrite",
                   "video": video},
        "duration_s": duration_s,
    })
    processed = np.zeros(capacity, np.uint8)  # touched now: not counted as growth later
    processed[:] = 1
    processed[:] = 0
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.wait(rss_every_s):
            samples.append((time.monotonic() - t0, rss_bytes() / 2**20))

    def mark(pose: Pose, frame: Frame) -> None:
        if frame.index < capacity:
            processed[frame.index] += 1

    subscriber = None
    try:
        engine = build_engine(cfg)
        publisher, recorder = engine.sink("stream"), engine.sink("recorder")
        assert isinstance(publisher, PosePublisher) and isinstance(recorder, Recorder)
        with engine:
            subscriber = ctx.Process(target=_subscribe,
                                     args=(bound_endpoint(engine), capacity, child), daemon=True)
            subscriber.start()
            parent.recv()  # the subscriber is connected ...
            time.sleep(1.0)  # ... and its subscription has reached the publisher
            log(f"soak: {duration_s:g} s at {fps:g} FPS, {size[0]}x{size[1]}, "
                f"recording to {out_dir}")
            t0 = time.monotonic()
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            stats = engine.run(on_pose=mark)
            stop.set()
            sampler.join()
            time.sleep(0.5)  # the last messages and bytes arrive
            poses_sent = publisher.sent["pose"]
            # a pose dropped for the full queue of our only subscriber reached nobody
            pose_drops = publisher.dropped_by_topic["pose"]
        commands_sent = sum(a.counters.sent for a in engine.actuators.values()
                            if isinstance(a, SerialDevice))
    finally:
        if subscriber is not None:
            parent.send("stop")
        received = emulator.stop()
    got, duplicates, beyond, seen = parent.recv()
    assert subscriber is not None
    subscriber.join(10)
    report = _check(stats, recorder.paths, processed, samples, warmup_s, duration_s, fps)
    if video:
        report.problems += _check_video(recorder.paths, recorder.video_dropped)
        report.video_dropped = recorder.video_dropped
    report.poses_sent, report.poses_received = poses_sent, got
    # the rules send PULSE; closing the engine then turns each pulsed output off
    commands_received = sum(line.startswith(b"PULSE") for line in received)
    report.commands_sent, report.commands_received = commands_sent, commands_received
    report.outputs_off = _turned_off(received)
    report.record_dir = out_dir
    pd.DataFrame(samples, columns=["t_s", "rss_mb"]).to_csv(out_dir / "memory.csv", index=False)
    plot_memory(samples, warmup_s, out_dir / "memory.png")
    problems = report.problems
    if recorder.errors:
        problems.append(f"recorder errors: {recorder.errors} ({recorder.error})")
    if stats.frames - got > pose_drops or got > stats.frames or duplicates or beyond:
        problems.append(f"stream: {stats.frames} poses, {pose_drops} counted as dropped, "
                        f"{got} received ({duplicates} twice, {beyond} unknown)")
    missed = np.flatnonzero(seen[: len(processed)] > processed)
    if len(missed):
        problems.append(f"subscriber got frames never processed, e.g. {missed[:5].tolist()}")
    device_drops = stats.device_dropped
    if not report.outputs_off:
        problems.append(f"device: an output was left on at the end ({received[-3:]})")
    if commands_received + device_drops < commands_sent or commands_received > commands_sent:
        problems.append(f"device: sent {commands_sent}, dropped {device_drops}, "
                        f"received {commands_received}")
    return report


def plot_memory(samples: list[tuple[float, float]], warmup_s: float, path: Path) -> bool:
    """Plot RSS over the run with the warm-up baseline and the 5 % limit (needs matplotlib,
    which the ``train`` extra brings; False without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = np.array([s[0] for s in samples]) / 60.0
    rss = np.array([s[1] for s in samples])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(t, rss, lw=1, label="resident memory")
    after = rss[t * 60.0 >= warmup_s]
    if len(after):
        base = after[0]
        ax.axhline(base, color="grey", lw=0.8, ls="--", label="after warm-up")
        ax.axhline(base * (1 + RSS_LIMIT), color="red", lw=0.8, ls=":",
                   label=f"limit (+{RSS_LIMIT:.0%})")
    ax.axvline(warmup_s / 60.0, color="grey", lw=0.5)
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _turned_off(received: list[bytes]) -> bool:
    """Whether every pulsed channel got an OFF after its last PULSE."""
    last: dict[bytes, int] = {}
    for i, line in enumerate(received):
        words = line.split()
        if len(words) >= 2 and words[0] in (b"PULSE", b"OFF"):
            last[words[1]] = i if words[0] == b"PULSE" else -1
    return all(i == -1 for i in last.values())


def _check(stats: RunStats, paths: dict[str, Path], processed: np.ndarray,
           samples: list[tuple[float, float]], warmup_s: float, duration_s: float,
           fps: float) -> SoakReport:
    """Read the recording back and compare it with what the loop did."""
    recorder_dropped = stats.sink_dropped.get("recorder", 0)
    problems: list[str] = []
    if stats.stopped_by != "duration":
        problems.append(f"stopped by {stats.stopped_by}: {stats.errors}")
    if stats.errors:
        problems.append(f"errors: {stats.errors}")
    timing = pd.read_csv(paths["timing_csv"])
    frames = timing["frame"].to_numpy()
    if len(frames) and (np.diff(frames) <= 0).any():
        problems.append("timing table: frame numbers not strictly increasing (duplicates?)")
    recorded = np.zeros_like(processed, dtype=np.int64)
    np.add.at(recorded, frames[frames < len(recorded)], 1)
    if (frames >= len(recorded)).any():
        problems.append("timing table: frame numbers beyond the run")
    twice = np.flatnonzero(processed > 1)
    if len(twice):
        problems.append(f"frames processed twice, e.g. {twice[:5].tolist()}")
    lost = np.flatnonzero(processed.astype(np.int64) - recorded)
    if len(lost) > recorder_dropped or (recorded > processed).any():
        problems.append(f"{len(lost)} frames differ between the loop and the recording "
                        f"(recorder dropped {recorder_dropped}), e.g. {lost[:5].tolist()}")
    needed = ["t_capture_ns", *STAGES, "dropped", "lost"]
    gaps = cast(pd.Series, timing[needed].isna().any(axis=1))
    if gaps.any():
        problems.append(f"timing table: {int(gaps.sum())} rows with empty cells, e.g. frame "
                        f"{int(frames[gaps.to_numpy()][0])}")
    h5 = cast(pd.DataFrame, pd.read_hdf(paths["poses_h5"]))  # a table, not an iterator
    if not np.array_equal(h5.index.to_numpy(), frames):
        problems.append(f"pose .h5 has {len(h5)} rows, timing table {len(frames)}: differ")
    if len(h5) != stats.frames - recorder_dropped:
        problems.append(f"{len(h5)} poses recorded for {stats.frames} frames processed "
                        f"({recorder_dropped} dropped by the recorder)")
    # Every captured frame is processed or dropped for a counted reason.
    last = int(frames[-1]) if len(frames) else -1
    after_last = stats.captured - (last + 1)  # captured after the last processed frame
    camera_in_table = int(timing["dropped"].sum())
    lost_in_table = int(timing["lost"].sum())
    pending = camera_in_table - (stats.camera_dropped - after_last)  # 1 if one was waiting
    if pending not in (0, 1):
        problems.append(f"timing table counts {camera_in_table} camera drops, the grab thread "
                        f"{stats.camera_dropped} ({after_last} captured after the last frame)")
    if lost_in_table > recorder_dropped:
        problems.append(f"timing table counts {lost_in_table} recorder losses, the recorder "
                        f"{recorder_dropped}")
    if stats.frames + stats.camera_dropped not in (stats.captured, stats.captured - 1):
        problems.append(f"captured {stats.captured} != processed {stats.frames} + dropped "
                        f"{stats.camera_dropped} (+ one pending at the stop)")
    # Memory after the warm-up.
    warm = [mb for t, mb in samples if t >= warmup_s]
    base = warm[0] if warm else float("nan")
    growth = (max(warm) - base) / base if len(warm) > 1 and base > 0 else float("nan")
    if not len(warm) > 1:
        problems.append("too few memory samples after the warm-up")
    elif growth >= RSS_LIMIT:
        problems.append(f"resident memory grew {100 * growth:.1f} % after the warm-up "
                        f"({base:.1f} -> {max(warm):.1f} MB)")
    stage_ms = _stage_table(timing)
    return SoakReport(
        stats=stats, duration_s=duration_s, fps=fps, recorded=len(frames),
        dropped={"camera": stats.camera_dropped, "recorder": recorder_dropped,
                 "stream": stats.sink_dropped.get("stream", 0), "device": stats.device_dropped},
        stage_ms=stage_ms, rss_mb=samples, rss_warm_mb=base, rss_growth=growth,
        poses_sent=0, poses_received=0, commands_sent=0, commands_received=0,
        record_dir=paths["timing_csv"].parent, problems=problems,
    )


def _check_video(paths: dict[str, Path], video_dropped: int) -> list[str]:
    """Every recorded pose has its frame in the video (or is counted), numbered in order."""
    import cv2

    timing = pd.read_csv(paths["timing_csv"])
    numbers = timing["video_frame"].dropna().to_numpy(np.int64)
    problems = []
    if not np.array_equal(numbers, np.arange(len(numbers))):
        problems.append("video_frame column: not 0, 1, 2, ... in order")
    if len(numbers) + video_dropped != len(timing):
        problems.append(f"{len(timing)} poses, {len(numbers)} with a video frame, "
                        f"{video_dropped} counted as video_dropped")
    capture = cv2.VideoCapture(str(paths["video"]))
    frames = 0
    while capture.grab():  # counted, not taken from the header (a .mkv has no frame count)
        frames += 1
    capture.release()
    if frames != len(numbers):
        problems.append(f"the video holds {frames} frames, the timing table names {len(numbers)}")
    return problems


def _stage_table(timing: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """p50/p95/p99 ms of each stage (stamp minus the previous one) and of the whole path."""
    table: dict[str, tuple[float, float, float]] = {}
    if timing.empty:
        return table
    previous = timing["t_capture_ns"].to_numpy(np.float64)
    start = previous
    for stage in STAGES:
        stamps = timing[stage].to_numpy(np.float64)
        table[stage] = tuple(np.percentile((stamps - previous) / 1e6, [50, 95, 99]))
        previous = stamps
    table["total"] = tuple(np.percentile((previous - start) / 1e6, [50, 95, 99]))
    return table


def format_report(report: SoakReport) -> str:
    """The stage table (median, p95, p99), the counts and the verdict."""
    s = report.stats
    lines = [f"soak {report.duration_s:g} s at {report.fps:g} FPS: {s.captured} frames "
             f"captured, {s.frames} processed ({s.fps:.1f} fps), {report.recorded} recorded",
             f"{'stage':<12s}{'p50 ms':>9s}{'p95 ms':>9s}{'p99 ms':>9s}"]
    for stage, (p50, p95, p99) in report.stage_ms.items():
        lines.append(f"{stage:<12s}{p50:9.3f}{p95:9.3f}{p99:9.3f}")
    d = report.dropped
    lines.append(
        f"dropped: camera {d['camera']} (loop busy, newest frame won), recorder "
        f"{d['recorder']} (queue full), stream {d['stream']} (subscriber queue full), "
        f"device {d['device']} (absent or buffer full)")
    lines.append(f"stream: {report.poses_sent} poses sent, {report.poses_received} received; "
                 f"device: {report.commands_sent} commands sent, {report.commands_received} "
                 f"received ({s.events} rule events), output turned off at the end: "
                 f"{'yes' if report.outputs_off else 'no'}")
    if report.video_dropped is not None:
        lines.append(f"video: every recorded frame written but {report.video_dropped} "
                     f"(counted as video_dropped)")
    if report.rss_mb:
        end = report.rss_mb[-1][1]
        lines.append(f"memory: {report.rss_warm_mb:.1f} MB after warm-up, {end:.1f} MB at "
                     f"the end, growth {100 * report.rss_growth:.2f} % (limit "
                     f"{100 * RSS_LIMIT:.0f} %)")
    lines.append(f"recording: {report.record_dir} (memory samples: memory.csv, memory.png)")
    lines.append("PASSED" if report.ok else "FAILED:\n  " + "\n  ".join(report.problems))
    return "\n".join(lines)


def default_out_dir() -> Path:
    """A fresh folder for a soak's recording."""
    return Path(tempfile.mkdtemp(prefix="poseloop-soak-"))
