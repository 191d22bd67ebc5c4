"""Time ``RuleSet.evaluate`` per frame for 1, 5 and 20 rules on a 1 x K x 3 pose (K=4).

The rules mix every predicate kind (zones of each shape, distance, angle, speed,
likelihood, nested all/any/not) with debounce and refractory periods; the poses are a
random walk with occasional low-confidence parts, so rules fire, hold and go unknown.
Prints one table of microseconds per evaluate call (median, p95, p99).

    python benchmarks/rules_speed.py [--frames 20000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from poseloop.rules import RuleSet

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]


def make_rules(n: int) -> list[dict]:
    """n rules cycling through five kinds, each copy with its own zone position."""
    rules = []
    for k in range(n):
        x = 40.0 + 25 * (k // 5)
        kinds = [
            {"type": "zone", "part": "snout", "rect": {"x1": x, "y1": 40, "x2": x + 80, "y2": 120}},
            {"all": [
                {"type": "zone", "part": "snout", "polygon": [[x, 200], [x + 90, 210],
                                                              [x + 40, 260], [x + 70, 320]]},
                {"type": "likelihood", "part": "tailbase", "p": 0.8},
            ]},
            {"type": "distance", "part_a": "leftear", "part_b": "rightear", "above": 10 + k,
             "below": 60},
            {"all": [
                {"type": "angle", "part_a": "tailbase", "part_b": "snout", "range": [-45, 45]},
                {"not": {"type": "speed", "part": "tailbase", "above": 300 + 10 * k}},
            ]},
            {"any": [
                {"type": "zone", "part": "leftear", "circle": {"cx": x, "cy": 150, "r": 40}},
                {"not": {"type": "zone", "part": "rightear", "circle": {"cx": x, "cy": 150,
                                                                         "r": 200}}},
            ]},
        ]
        rules.append({"name": f"rule{k}", "when": kinds[k % 5], "mode": ("edge", "level")[k % 2],
                      "debounce_frames": 1 + k % 3, "refractory_ms": 50.0 * (k % 4),
                      "actions": [{"device": "laser", "command": "PULSE 3 5"}]})
    return rules


def make_poses(n: int, seed: int = 0) -> np.ndarray:
    """n frames of 1 x K x 3 float32 poses (``Pose.points`` of a single-animal model): a
    random walk in a 320 x 320 arena, some parts unseen."""
    rng = np.random.default_rng(seed)
    centre = np.clip(160 + np.cumsum(rng.normal(0, 4, (n, 2)), axis=0), 20, 300)
    offsets = np.array([[15, 0], [0, -8], [0, 8], [-20, 0]], np.float64)
    poses = np.empty((n, 1, len(BODYPARTS), 3), np.float32)
    poses[:, 0, :, :2] = centre[:, None, :] + offsets + rng.normal(0, 2, (n, len(BODYPARTS), 2))
    poses[:, 0, :, 2] = np.where(rng.random((n, len(BODYPARTS))) < 0.1, 0.2, 0.95)
    return poses


def time_rules(n_rules: int, poses: np.ndarray, fps: float = 100.0) -> tuple[np.ndarray, int]:
    """Per-call evaluate times (µs) over all poses, and how many events fired."""
    rules = RuleSet.compile(make_rules(n_rules), BODYPARTS, pcutoff=0.6)
    step = round(1e9 / fps)
    for k in range(1000):  # warm up
        rules.evaluate(poses[k % len(poses)], k * step, k)
    rules.reset()
    times = np.empty(len(poses))
    events = 0
    clock = time.perf_counter_ns
    for k, pose in enumerate(poses):
        t0 = clock()
        fired = rules.evaluate(pose, k * step, k)
        times[k] = clock() - t0
        events += len(fired)
    return times / 1e3, events


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--frames", type=int, default=20000)
    args = ap.parse_args()
    poses = make_poses(args.frames)
    print(f"RuleSet.evaluate, N=1, K={len(BODYPARTS)}, {args.frames} frames at 100 fps")
    print(f"{'rules':>5}  {'median µs':>9}  {'p95 µs':>7}  {'p99 µs':>7}  {'events':>7}")
    for n in (1, 5, 20):
        us, events = time_rules(n, poses)
        p50, p95, p99 = np.percentile(us, [50, 95, 99])
        print(f"{n:>5}  {p50:>9.2f}  {p95:>7.2f}  {p99:>7.2f}  {events:>7}")


if __name__ == "__main__":
    main()
