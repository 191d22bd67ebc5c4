"""The recorder's memory alone: poses (and 160x120 frames) at 200 FPS, sped up, RSS sampled.

Feeds a Recorder what a 200-FPS run gives it — a pose per frame with every stage stamp and,
with ``--video``, the synthetic scene's frames — ``--speed`` times faster than real time,
with ``flush_s`` shortened by the same factor so every flush holds as many rows as in a
real run. ``--ballast`` keeps that many long-lived Python objects alive, as an engine
process does (ONNX Runtime, numba, the model): the cyclic collector then rarely runs a full
collection, which is what let short-lived reference cycles pile up before. The resident set
size is sampled every 10 s of simulated time; the growth after the warm-up is fitted per
simulated minute. Run:

    python benchmarks/recorder_memory.py [--minutes 10] [--speed 20] [--video] [--ballast 1000000]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import tempfile
import time

import numpy as np

from poseloop.realtime.cameras.synthetic import SyntheticCamera
from poseloop.realtime.recorder import RecordConfig, Recorder
from poseloop.realtime.types import STAGES, CameraInfo, Frame, Pose, Session

BODYPARTS = ("snout", "leftear", "rightear", "tailbase")


def rss_mb() -> float:
    """This process's resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def heap_mb() -> tuple[float, float]:
    """glibc's heap over all threads' arenas: (MiB in use, MiB free but held), or NaNs.

    Growth of the first is memory kept; of the second alone, fragmentation.
    """
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return float("nan"), float("nan")
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


def run(minutes: float, speed: float, video: bool, fps: float, size: tuple[int, int],
        out: str) -> tuple[list[tuple[float, float, float, float]], Recorder]:
    """Record ``minutes`` of simulated time; (simulated s, RSS, heap in use, heap free MiB)
    samples and the recorder."""
    w, h = size
    camera = SyntheticCamera(w, h, fps, paced=False)
    camera.open()
    frames = [f for f in (camera.read() for _ in range(400)) if f is not None]
    recorder = Recorder(RecordConfig(dir=out, name="memory", video=video, flush_s=2.0 / speed,
                                     if_exists="overwrite"))
    recorder.open(Session(bodyparts=BODYPARTS, cameras=(CameraInfo(w, h, fps),)))
    points = np.random.default_rng(0).uniform(0, w, (1, len(BODYPARTS), 3)).astype(np.float32)
    samples: list[tuple[float, float, float, float]] = []
    n = int(minutes * 60 * fps)
    period = 1.0 / (fps * speed)
    t0 = time.monotonic()
    for i in range(n):
        while time.monotonic() - t0 < i * period:
            time.sleep(0.0002)
        if i % int(10 * fps) == 0:
            samples.append((i / fps, rss_mb(), *heap_mb()))
        t = time.perf_counter_ns()
        pose = Pose(points, i, t, {stage: t for stage in STAGES})
        source = frames[i % len(frames)]
        recorder.pose(pose, Frame(source.image, i, t))
    recorder.close()
    samples.append((n / fps, rss_mb(), *heap_mb()))
    return samples, recorder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="simulated minutes")
    parser.add_argument("--speed", type=float, default=20.0, help="times real time")
    parser.add_argument("--video", action="store_true", help="also record the frames")
    parser.add_argument("--fps", type=float, default=200.0)
    parser.add_argument("--size", default="160x120", help="frame WxH")
    parser.add_argument("--ballast", type=int, default=1_000_000,
                        help="long-lived Python objects kept alive (an engine's worth)")
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run")
    args = parser.parse_args()
    ballast = [[i] for i in range(args.ballast)]
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as out:
        start = time.monotonic()
        samples, recorder = run(args.minutes, args.speed, args.video, args.fps, (w, h), out)
        wall = time.monotonic() - start
    t = np.array([s[0] for s in samples[:-1]]) / 60
    mb = np.array([s[1] for s in samples[:-1]])
    warm = t >= args.warmup * t[-1]
    slope = np.polyfit(t[warm], mb[warm], 1)[0] if warm.sum() > 1 else float("nan")
    print("  simulated s   RSS MiB   heap in use   heap free")
    for sim_s, m, used, free in samples[:-1:max(1, len(samples) // 20)]:
        print(f"  {sim_s:11.0f} {m:9.1f} {used:13.2f} {free:11.2f}")
    print(f"{args.minutes:g} simulated min at {args.fps:g} FPS ({'with' if args.video else 'no'} "
          f"video, {w}x{h}) in {wall:.0f} s, ballast {len(ballast)} objects")
    print(f"RSS after warm-up {mb[warm][0]:.1f} MiB, at the end {mb[-1]:.1f} MiB "
          f"(growth {mb[-1] - mb[warm][0]:+.2f} MiB, fit {slope:+.3f} MiB per simulated min); "
          f"after close {samples[-1][1]:.1f} MiB")
    print(f"dropped {recorder.dropped}, video_dropped {recorder.video_dropped}, errors "
          f"{recorder.errors}, rows {recorder.rows_written}")


if __name__ == "__main__":
    main()
