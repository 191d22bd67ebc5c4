"""ONNX Runtime session options at batch 1, frames arriving at a camera's pace.

For each model: intra-op threads 1 or 2, thread spinning on or off; frames are fed every
``--gap-ms`` (a camera's frame interval: the pool goes idle between frames, which is where
spinning matters), and once back to back. Prints median / p95 / p99 ms of ``session.run``
per configuration, in one run, in turns (one frame of each configuration after another) so
machine noise falls on all alike.

    python benchmarks/ort_options.py [--model M.onnx ...] [--frames 200] [--gap-ms 30]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from poseloop.modelspec import INPUT_NAME, ModelSpec, output_names


def session(path: Path, threads: int, spinning: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", help="ONNX models (default: the demo's synthetic one)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--gap-ms", type=float, default=30.0)
    ap.add_argument("--size", default="640x480")
    args = ap.parse_args()
    if args.model:
        models = [Path(m) for m in args.model]
    else:
        from poseloop.synthetic_model import synthetic_model

        models = [synthetic_model()]
    w, h = (int(v) for v in args.size.split("x"))
    frame = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    print(f"frames {w}x{h}, {args.frames} per configuration, ms per session.run")
    print(f"{'model':28s} {'pace':>10s} {'threads':>7s} {'spin':>5s} {'p50':>7s} {'p95':>7s} "
          f"{'p99':>7s}")
    for path in models:
        names = list(output_names(ModelSpec.read(path)))
        configs = list(itertools.product((1, 2), (True, False)))
        sessions = {c: session(path, *c) for c in configs}
        for s in sessions.values():
            for _ in range(5):
                s.run(names, {INPUT_NAME: frame})
        for gap in (args.gap_ms, 0.0):
            times: dict[tuple[int, bool], list[float]] = {c: [] for c in configs}
            for _ in range(args.frames):
                for c, s in sessions.items():
                    if gap:
                        time.sleep(gap / 1e3)
                    t0 = time.perf_counter()
                    s.run(names, {INPUT_NAME: frame})
                    times[c].append(1e3 * (time.perf_counter() - t0))
            pace = f"{gap:.0f} ms gap" if gap else "back2back"
            for (threads, spin), v in times.items():
                a = np.asarray(v)
                print(f"{path.name[:28]:28s} {pace:>10s} {threads:7d} {str(spin):>5s} "
                      f"{np.median(a):7.2f} {np.percentile(a, 95):7.2f} "
                      f"{np.percentile(a, 99):7.2f}")


if __name__ == "__main__":
    main()
