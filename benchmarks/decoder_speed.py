"""Peak decoder speed: numba kernel vs its numpy twin, µs per ``PeakDecoder.decode`` call.

Maps are logits with one peak per bodypart (as a trained network gives) plus noise; both
decoders are warmed up first, so no JIT compile is timed. Run:
``python benchmarks/decoder_speed.py [--calls 5000]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from poseloop.heatmap import HeatmapSpec
from poseloop.realtime.decoder import PeakDecoder

CASES = [(4, 80, 60), (4, 40, 30), (20, 80, 60), (20, 40, 30)]  # K, map width, map height


def maps(k: int, w: int, h: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """N=1 outputs as ONNX Runtime returns them: 1 x K x h x w logits, 1 x 2K x h x w locref."""
    spec = HeatmapSpec.for_stride(8)
    keypoints = rng.uniform([0, 0], [w * 8, h * 8], size=(k, 2)).astype(np.float32)
    score, locref, _ = spec.targets(keypoints, (h, w))
    logits = score * 8.0 - 4.0 + rng.normal(0.0, 0.5, score.shape)
    return logits.astype(np.float32)[None], locref[None]


def time_calls(decoder: PeakDecoder, scoremap: np.ndarray, locref: np.ndarray,
               calls: int) -> np.ndarray:
    """Per-call wall times in µs."""
    out = np.empty(decoder.shape, np.float32)
    outputs = (scoremap, locref)
    decoder.warmup()
    for _ in range(100):
        decoder.decode(outputs, out)
    times = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        decoder.decode(outputs, out)
        times[i] = clock() - t0
    return times / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per case")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    header = (f"{'K':>3} {'map w x h':>9} | {'numba med':>9} {'p95':>6} {'p99':>6} | "
              f"{'numpy med':>9} {'p95':>6} {'p99':>6} | {'numpy/numba':>11}")
    print("µs per decode call")
    print(header)
    print("-" * len(header))
    for k, w, h in CASES:
        scoremap, locref = maps(k, w, h, rng)
        stats = []
        for use_numba in (True, False):
            decoder = PeakDecoder(HeatmapSpec.for_stride(8), use_numba=use_numba, k=k)
            t = time_calls(decoder, scoremap, locref, args.calls)
            stats.append(np.percentile(t, [50, 95, 99]))
        fast, slow = stats
        print(f"{k:>3} {f'{w} x {h}':>9} | {fast[0]:>9.1f} {fast[1]:>6.1f} {fast[2]:>6.1f} | "
              f"{slow[0]:>9.1f} {slow[1]:>6.1f} {slow[2]:>6.1f} | {slow[0] / fast[0]:>10.1f}x")


if __name__ == "__main__":
    main()
