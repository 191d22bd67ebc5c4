"""End-to-end latency of the whole closed loop over thousands of frames.

Frame captured -> pose -> rule -> command bytes received by the device emulator on a real
pseudo-terminal, and frame captured -> pose received by a subscriber in another process,
with p50/p95/p99, and per frame each path's latency minus that frame's inference against
the goal (+0.5 ms at p50, +2 ms at p99), from the same run. The rule fires on every frame
where the snout is in the left third (level mode) so the device path gets thousands of
samples.

    python benchmarks/closed_loop.py [--model M.onnx] [--frames 5000] [--fps 100]
"""

from __future__ import annotations

import argparse

import numpy as np

from poseloop.closed_loop import format_report, run_closed_loop
from poseloop.synthetic_model import synthetic_model

GOAL_P50_MS, GOAL_P99_MS = 0.5, 2.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="exported .onnx (default: the demo's synthetic model)")
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--fps", type=float, default=100.0, help="synthetic camera rate")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    model = args.model or synthetic_model()
    report = run_closed_loop(model, args.frames, args.fps, (w, h), mode="level",
                             subscriber="process", threads=args.threads)
    print(format_report(report))
    print(f"\ngoal: per frame, path latency - that frame's inference <= {GOAL_P50_MS} ms at p50 "
          f"and <= {GOAL_P99_MS} ms at p99")
    print(f"{'path':<22s}{'p50':>9s}{'p99':>9s}  goal met")
    for name, values in (("device got command", report.device_extra_ns),
                         ("subscriber got pose", report.subscriber_extra_ns)):
        if len(values) == 0:
            continue
        p50, p99 = np.percentile(values / 1e6, [50, 99])
        met = p50 <= GOAL_P50_MS and p99 <= GOAL_P99_MS
        print(f"{name:<22s}{p50:9.3f}{p99:9.3f}  {'yes' if met else 'NO'}")


if __name__ == "__main__":
    main()
