"""What the frame sources share: pacing like a free-running camera, and filling the
caller's image buffer (so a grab loop cycling its buffers allocates no frame memory)."""

from __future__ import annotations

import time

import numpy as np


def image_buffer(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """``out`` if it can hold a ``shape`` uint8 image, else a new one."""
    if out is not None and out.shape == shape and out.dtype == np.uint8 \
            and out.flags.c_contiguous:
        return out
    return np.empty(shape, np.uint8)


class Pacer:
    """Releases frame i at t0 + i / fps, like a free-running camera.

    If the reader falls more than a frame behind it is rebased instead of bursting old
    frames (a camera does not queue up the frames it could not deliver).
    """

    def __init__(self, fps: float) -> None:
        self.period_ns = round(1e9 / fps)
        self._due: int | None = None

    def wait(self) -> None:
        now = time.perf_counter_ns()
        if self._due is None or now - self._due > self.period_ns:
            self._due = now
        elif now < self._due:
            time.sleep((self._due - now) / 1e9)
        self._due += self.period_ns
