"""End-to-end latency of the whole closed loop over thousands of frames.

Frame captured -> pose -> rule -> command bytes received by the device emulator on a real
pseudo-terminal, and frame captured -> pose received by a subscriber in another process,
with p50/p95/p99 and the goal "at most inference + 1 ms at p50, + 3 ms at p99" checked
from the same run. The rule fires on every frame where the snout is in the left third
(level mode) so the device path gets thousands of samples.

    python benchmarks/closed_loop.py [--model M.onnx] [--frames 5000] [--fps 100]
"""

from __future__ import annotations

import argparse

import numpy as np

from poseloop.closed_loop import format_report, run_closed_loop
from poseloop.synthetic_model import synthetic_model


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
    infer = report.infer_ns / 1e6
    print("\ngoal: path latency - inference <= 1 ms at p50 and <= 3 ms at p99")
    print(f"{'path':<22s}{'p50 - infer':>13s}{'p99 - infer':>13s}")
    for name, values in (("device got command", report.device_ns),
                         ("subscriber got pose", report.subscriber_ns)):
        if len(values) == 0:
            continue
        ms = values / 1e6
        d50 = np.percentile(ms, 50) - np.percentile(infer, 50)
        d99 = np.percentile(ms, 99) - np.percentile(infer, 99)
        print(f"{name:<22s}{d50:13.3f}{d99:13.3f}")


if __name__ == "__main__":
    main()
