"""A camera group's frame set -> every view's 2D poses (V x N x K x 3), for triangulation.

Each view has its own preprocess (its own dynamic crop) and tracker; the runner and the
decoder are shared. When every view's graph input has the same size (the usual rig: same
cameras, no dynamic crop) the views go through the network as one batch, one runner call
for the set; otherwise one call per view (then the ``infer`` stamp includes their
decoding). Poses are decoded straight into each view's full-frame pixels. A missing view
(``None`` in the set) gets NaN coordinates and likelihood 0, and its batch slot is run
with whatever it held (a fixed batch size keeps the runner's buffers bound).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from poseloop.realtime.types import Decoder, Frame, Preprocess, Runner, Tracker

_now = time.perf_counter_ns


class ViewSet:
    """Per-view preprocess, batched inference, per-view decode and tracking (see above).

    ``views`` (V x N x K x 3) and ``ids`` (V x N) hold the last set's poses and track ids.
    """

    def __init__(self, preprocesses: Sequence[Preprocess], runner: Runner, decoder: Decoder,
                 trackers: Sequence[Tracker | None] | None = None) -> None:
        v = len(preprocesses)
        if trackers is not None and len(trackers) != v:
            raise ValueError(f"{v} views but {len(trackers)} trackers")
        self.preprocesses = tuple(preprocesses)
        self.runner, self.decoder = runner, decoder
        self.trackers = tuple(trackers) if trackers is not None else (None,) * v
        n, k, _ = decoder.shape
        self.views = np.zeros((v, n, k, 3), np.float32)
        self.ids = np.tile(np.arange(n, dtype=np.int64), (v, 1))
        for i, tracker in enumerate(self.trackers):
            if tracker is not None:
                self.ids[i] = -1
        self._images: list[np.ndarray | None] = [None] * v
        self._transforms: list = [None] * v
        self._batch: np.ndarray | None = None
        self._outputs: Sequence[np.ndarray] | None = None
        self._slices: list[list[np.ndarray]] = []

    def __len__(self) -> int:
        return len(self.preprocesses)

    def warmup(self, sizes: Sequence[tuple[int, int]]) -> None:
        """Warm the runner (batched when the views' inputs match) and the decoder on blank
        frames of each view's (width, height)."""
        frames = [Frame(np.zeros((h, w, 3), np.uint8), -1, _now(), camera=i)
                  for i, (w, h) in enumerate(sizes)]
        self.decoder.warmup()
        for _ in range(3):
            self.infer(frames, -1)
        self.views[:] = 0.0

    def infer(self, frames: Sequence[Frame | None], t_ns: int) -> tuple[int, int]:
        """Fill ``views`` from the set's frames; returns the preprocess and infer stamps."""
        images, transforms = self._images, self._transforms
        shape = None
        same = True
        for i, frame in enumerate(frames):
            if frame is None:
                images[i] = None
                continue
            images[i], transforms[i] = self.preprocesses[i].preprocess(frame)
            image = images[i]
            assert image is not None
            if shape is None:
                shape = image.shape
            elif image.shape != shape:
                same = False
        t_pre = _now()
        if shape is None:  # no view at all
            self.views[:] = np.nan
            self.views[..., 2] = 0.0
            return t_pre, t_pre
        if same:
            batch = self._batch_for(shape)
            for i, image in enumerate(images):
                if image is not None:
                    np.copyto(batch[i], image[0] if image.ndim == 4 else image)
            outputs = self.runner.run(batch)
            t_infer = _now()
            if outputs is not self._outputs:  # new buffers: slice them once
                self._outputs = outputs
                self._slices = [[o[i:i + 1] for o in outputs] for i in range(len(self))]
            for i, image in enumerate(images):
                if image is not None:
                    self._decode(i, self._slices[i], t_ns)
        else:
            for i, image in enumerate(images):
                if image is not None:
                    self._decode(i, self.runner.run(image), t_ns)
            t_infer = _now()
        for i, image in enumerate(images):
            if image is None:
                self.views[i] = np.nan
                self.views[i, ..., 2] = 0.0
        return t_pre, t_infer

    def _decode(self, i: int, outputs: Sequence[np.ndarray], t_ns: int) -> None:
        points = self.decoder.decode(outputs, self.views[i], self._transforms[i])
        tracker = self.trackers[i]
        if tracker is not None:
            tracker.update(points, self.ids[i], t_ns)
        self.preprocesses[i].update(points)

    def _batch_for(self, shape: tuple[int, ...]) -> np.ndarray:
        """The V x H x W x 3 batch buffer for graph inputs of ``shape`` (reused)."""
        hwc = shape[1:] if len(shape) == 4 else shape
        if self._batch is None or self._batch.shape[1:] != hwc:
            self._batch = np.zeros((len(self), *hwc), np.uint8)
        return self._batch
