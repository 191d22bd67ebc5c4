"""Every trigger's true latency, checked against a simulation's truth.

The reference firmware runs in simavr (needs gcc-avr, avr-libc, libsimavr-dev) with a
simulated camera strobing A0; a SerialDevice with trigger timing fires ``--triggers`` traced
PULSE commands at random phases. For each, the firmware's exposure -> output latency (its
own microsecond stamps) is compared with the simulation's strobe edge -> pin edge.

    python benchmarks/trigger_latency.py [--triggers 50] [--strobe-us 20000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from poseloop.hardware.simavr import build_firmware, measure_trigger_latency


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triggers", type=int, default=50)
    ap.add_argument("--strobe-us", type=int, default=20_000, help="simulated frame interval")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build_firmware(Path(tmp), "all", "sim")
        check = measure_trigger_latency(Path(tmp), args.triggers, args.strobe_us)
    print(f"\n{len(check.measured_us)} triggers, strobe every {args.strobe_us} us (simavr, "
          f"ATmega328P at 16 MHz)")
    print(f"{'us':<34s}{'median':>9s}{'p95':>9s}{'max':>9s}")
    for name, values in (("exposure -> output, firmware", check.measured_us),
                         ("exposure -> output, simulation", check.truth_us),
                         ("|firmware - simulation|", np.abs(check.error_us))):
        p50, p95 = np.percentile(values, [50, 95])
        print(f"{name:<34s}{p50:9.1f}{p95:9.1f}{values.max():9.1f}")
    matched_last = sum(1 for n in check.later_strobes if n == 0)
    print(f"exposure matched to the last strobe before the command: {matched_last} of "
          f"{len(check.later_strobes)} (else the one before: simavr's clock rate wanders "
          f"with the host's load)")


if __name__ == "__main__":
    main()
