"""Soak benchmark: the whole loop for an hour, then proof that nothing was lost.

The synthetic camera at 200 FPS (160x120) through the model, with the recorder, the ZeroMQ
stream to a subscriber process and a posture rule driving a serial device emulator process.
Prints the per-stage table (median, p95, p99), every drop with its reason, the memory
growth after the warm-up and the checks of ``poseloop.soak`` (exactly-once recording,
timing table without gaps, stream and device counts, RSS growth < 5 %). Exit status 1 if a
check failed.

    python benchmarks/soak.py [--minutes 60] [--model M.onnx] [--fps 200] [--out DIR]
"""

from __future__ import annotations

import sys

from poseloop.cli import main

if __name__ == "__main__":
    sys.exit(main(["soak", *sys.argv[1:]]))
