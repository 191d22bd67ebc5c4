"""Frame -> the exact graph input (uint8 1 x H x W x 3) and the FrameTransform back.

Steps, all into buffers reused while the output size is stable: an optional static crop,
an optional dynamic crop around the last confident pose (DeepLabCut-Live style), a resize
by the model's ``input_scale`` times a user ``resize`` (cv2 INTER_LINEAR, as in training and
evaluation: 5x cheaper than INTER_AREA when shrinking), and the channel order the model
wants. Frames are BGR (OpenCV's order); grey (H x W or H x W x 1) frames are expanded to
three channels and BGRA frames (common from camera SDKs) lose their alpha channel. An
uncropped, unscaled BGR frame for a BGR model is passed as a view, without a copy.

The returned image is a reused buffer (or a view of the frame): use it before the next call.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import Field

from poseloop.config import Strict
from poseloop.errors import ConfigError, FrameError
from poseloop.modelspec import INPUT_ORDERS, ModelSpec
from poseloop.realtime.types import Frame, FrameTransform

#: Dynamic crops are sized so the network input is a multiple of this (clean map geometry).
ALIGN = 32
#: Smallest network input side: the backbones downsample by up to 32.
MIN_SIDE = 32
_MAX_BUFFERS = 32
#: Per frame, how much of the animals' remembered extent the dynamic crop keeps.
_EXTENT_KEEP = 0.98

# (channels of the frame, model input order) -> cv2 conversion code (None: already right)
_CONVERSIONS = {
    (1, "BGR"): cv2.COLOR_GRAY2BGR,
    (1, "RGB"): cv2.COLOR_GRAY2RGB,
    (3, "BGR"): None,
    (3, "RGB"): cv2.COLOR_BGR2RGB,
    (4, "BGR"): cv2.COLOR_BGRA2BGR,
    (4, "RGB"): cv2.COLOR_BGRA2RGB,
}


class PreprocessConfig(Strict):
    """Frame -> network input: static crop, extra resize, dynamic crop around the animal."""

    resize: float = Field(default=1.0, gt=0, le=4, description="extra factor on the model's scale")
    crop: tuple[int, int, int, int] | None = Field(default=None, description="x1, x2, y1, y2 in px")
    dynamic: bool = Field(default=False, description="crop around the last confident pose")
    dynamic_pcutoff: float | None = Field(
        default=None, ge=0, le=1, description="None = model pcutoff"
    )
    dynamic_margin: float = Field(default=20.0, ge=0, description="pixels around the bodyparts")
    dynamic_min_fraction: float = Field(
        default=0.5, ge=0, le=1,
        description="fewer confident bodyparts than this (per animal seen): search the next "
        "frame whole, so a crop that lost the animal finds it again",
    )


class Preprocessor:
    """Turns a Frame into the graph input and the transform that maps poses back.

    input_order, input_scale: from the model (see :meth:`from_spec`).
    resize: an extra factor on top of ``input_scale`` (e.g. 0.5 for speed).
    crop: static crop (x1, x2, y1, y2) in full-frame pixels, end-exclusive.
    dynamic: None, or (pcutoff, margin): crop around the bodyparts (of every individual) of
        the last pose given to :meth:`update` whose likelihood >= pcutoff, widened by
        ``margin`` pixels and clipped to the frame (or the static crop); the full frame while
        fewer than ``dynamic_min_fraction`` of the bodyparts of the animals seen are
        confident. The box is never smaller than the animals' recent extent (the largest
        box of their confident bodyparts, fading by 2 % a frame): when some bodyparts drop
        below pcutoff the crop keeps room for them instead of closing in on the rest.

    The live engine builds it with :meth:`from_config` (``PreprocessConfig`` holds the
    defaults of every option).
    """

    def __init__(
        self,
        input_order: str = "BGR",
        input_scale: float = 1.0,
        resize: float = 1.0,
        crop: tuple[int, int, int, int] | None = None,
        dynamic: tuple[float, float] | None = None,
        dynamic_min_fraction: float = 0.5,
    ):
        if input_order not in INPUT_ORDERS:
            raise ConfigError(f"input_order must be one of {INPUT_ORDERS}, got {input_order!r}")
        if not (input_scale > 0 and resize > 0):
            raise ConfigError(f"input_scale and resize must be > 0, got {input_scale}, {resize}")
        if crop is not None:
            crop = _check_crop(crop)
        if dynamic is not None and dynamic[1] < 0:
            raise ConfigError(f"dynamic crop margin must be >= 0 pixels, got {dynamic[1]}")
        self.input_order = input_order
        self.scale = float(input_scale) * float(resize)
        self.crop = crop
        self.dynamic = None if dynamic is None else (float(dynamic[0]), float(dynamic[1]))
        self.dynamic_min_fraction = float(dynamic_min_fraction)
        self._box: tuple[float, float, float, float] | None = None
        self._extent = (0.0, 0.0)  # the animals' recent width and height (confident parts)
        self._frame_shape: tuple[int, ...] = ()
        self._buffers: dict[tuple[int, ...], np.ndarray] = {}
        self._transform_key: tuple[int, ...] = ()
        self._transform = FrameTransform()
        # (frame shape, transform) when such frames go to the network untouched
        self._passthrough: tuple[tuple[int, ...], FrameTransform] | None = None

    @classmethod
    def from_spec(cls, spec: ModelSpec, config: PreprocessConfig | None = None) -> Preprocessor:
        """A preprocessor feeding the model described by ``spec``, set up by ``config``."""
        cfg = config or PreprocessConfig()
        dynamic = None
        if cfg.dynamic:
            pcutoff = spec.pcutoff if cfg.dynamic_pcutoff is None else cfg.dynamic_pcutoff
            dynamic = (pcutoff, cfg.dynamic_margin)
        return cls(spec.input_order, spec.input_scale, cfg.resize, cfg.crop, dynamic,
                   cfg.dynamic_min_fraction)

    def update(self, points: np.ndarray) -> None:
        """Remember where the animals are (N x K x 3 or K x 3, full-frame pixels) for dynamic
        cropping: the box around every confident bodypart of every individual."""
        if self.dynamic is None:
            return
        pcutoff, margin = self.dynamic
        animals = points.reshape(-1, *points.shape[-2:])  # N x K x 3 (K x 3: one animal)
        seen = (animals[..., 2] >= pcutoff) & np.isfinite(animals[..., 0]) \
            & np.isfinite(animals[..., 1])
        present = seen.any(axis=1)
        if not present.any() or seen.sum() < self.dynamic_min_fraction * present.sum() * \
                animals.shape[1]:
            self._box = None  # lost (or nearly): search the whole frame next
            return
        xs, ys = animals[seen, 0], animals[seen, 1]
        x1, x2, y1, y2 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
        w = max(x2 - x1, _EXTENT_KEEP * self._extent[0])
        h = max(y2 - y1, _EXTENT_KEEP * self._extent[1])
        self._extent = (w, h)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        self._box = (cx - w / 2 - margin, cx + w / 2 + margin + 1.0,
                     cy - h / 2 - margin, cy + h / 2 + margin + 1.0)

    def preprocess(self, frame: Frame) -> tuple[np.ndarray, FrameTransform]:
        """The graph input for ``frame`` and the transform from its pixels to full-frame ones.

        Raises FrameError (naming the frame) for images of the wrong type or shape, and for
        a static crop that does not fit the frame.
        """
        src = _source(frame)
        passthrough = self._passthrough
        if passthrough is not None and self._box is None and src.shape == passthrough[0] \
                and src.flags.c_contiguous:
            return src[None], passthrough[1]  # the whole frame as it is: the common case
        if src.shape != self._frame_shape:
            self._check_frame(frame, src)
        x1, x2, y1, y2 = self._region(src.shape[1], src.shape[0])
        cw, ch = x2 - x1, y2 - y1
        ow, oh = max(1, round(cw * self.scale)), max(1, round(ch * self.scale))
        channels = 1 if src.ndim == 2 else src.shape[2]
        conversion = _CONVERSIONS[(channels, self.input_order)]
        view = src[y1:y2, x1:x2]
        transform = self._transform_for(x1, y1, cw, ch, ow, oh)
        if conversion is None and (ow, oh) == (cw, ch) and view.flags.c_contiguous:
            if (x1, y1, cw, ch) == (0, 0, src.shape[1], src.shape[0]):
                self._passthrough = (src.shape, transform)
            return view[None], transform
        out = self._buffer((1, oh, ow, 3))
        if (ow, oh) == (cw, ch):
            if conversion is None:
                np.copyto(out[0], view)
            else:
                cv2.cvtColor(view, conversion, dst=out[0])
            return out, transform
        interpolation = cv2.INTER_LINEAR
        if channels == 3:
            cv2.resize(view, (ow, oh), dst=out[0], interpolation=interpolation)
            if conversion is not None:
                cv2.cvtColor(out[0], conversion, dst=out[0])
        else:
            small = self._buffer((oh, ow) if channels == 1 else (oh, ow, channels))
            cv2.resize(view, (ow, oh), dst=small, interpolation=interpolation)
            assert conversion is not None  # grey and BGRA frames always need one
            cv2.cvtColor(small, conversion, dst=out[0])
        return out, transform

    def _check_frame(self, frame: Frame, src: np.ndarray) -> None:
        h, w = src.shape[:2]
        if self.crop is not None:
            x1, x2, y1, y2 = self.crop
            if x2 > w or y2 > h:
                raise FrameError(
                    f"frame {frame.index}: crop (x1, x2, y1, y2) = {self.crop} does not fit the "
                    f"{w} x {h} frame; use x2 <= {w} and y2 <= {h}"
                )
        x1, x2, y1, y2 = self.crop or (0, w, 0, h)
        if min(round((x2 - x1) * self.scale), round((y2 - y1) * self.scale)) < MIN_SIDE:
            raise FrameError(
                f"frame {frame.index}: {x2 - x1} x {y2 - y1} pixels at scale {self.scale:g} is "
                f"smaller than the {MIN_SIDE} px per side the network needs"
            )
        self._frame_shape = src.shape

    def _region(self, w: int, h: int) -> tuple[int, int, int, int]:
        """(x1, x2, y1, y2) to feed the network: dynamic crop, static crop or the full frame."""
        x1, x2, y1, y2 = self.crop or (0, w, 0, h)
        if self._box is None:
            return x1, x2, y1, y2
        bx1, bx2, by1, by2 = self._box
        xs = _aligned_span(bx1, bx2, x1, x2, self.scale)
        ys = _aligned_span(by1, by2, y1, y2, self.scale)
        if xs is None or ys is None:
            return x1, x2, y1, y2
        return xs[0], xs[1], ys[0], ys[1]

    def _transform_for(self, x1: int, y1: int, cw: int, ch: int, ow: int,
                       oh: int) -> FrameTransform:
        key = (x1, y1, cw, ch, ow, oh)
        if key != self._transform_key:
            self._transform = FrameTransform(x0=float(x1), y0=float(y1), sx=ow / cw, sy=oh / ch)
            self._transform_key = key
        return self._transform

    def _buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """A uint8 buffer of ``shape``, the same object each time the shape comes back."""
        buf = self._buffers.get(shape)
        if buf is None:
            if len(self._buffers) >= _MAX_BUFFERS:
                del self._buffers[next(iter(self._buffers))]
            buf = self._buffers[shape] = np.empty(shape, np.uint8)
        return buf


def _source(frame: Frame) -> np.ndarray:
    """The frame's image as H x W (grey) or H x W x 3|4, or FrameError naming the frame."""
    image = frame.image
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.size:
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
            return image
        if image.ndim == 3 and image.shape[2] == 1:
            return image[:, :, 0]
    found = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
             else type(image).__name__)
    raise FrameError(
        f"frame {frame.index}: expected a uint8 image H x W x 3 (BGR), H x W x 4 (BGRA) or "
        f"H x W (grey), got {found}; convert it to uint8 0-255 pixels in the camera"
    )


def _check_crop(crop: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    try:
        x1, x2, y1, y2 = (int(v) for v in crop)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"crop must be four integers (x1, x2, y1, y2), got {crop!r}") from e
    if not (0 <= x1 < x2 and 0 <= y1 < y2):
        raise ConfigError(
            f"crop (x1, x2, y1, y2) = {crop} needs 0 <= x1 < x2 and 0 <= y1 < y2 (pixels)"
        )
    return x1, x2, y1, y2


def _aligned_span(lo: float, hi: float, start: int, stop: int,
                  scale: float) -> tuple[int, int] | None:
    """[lo, hi) clipped to [start, stop) and widened to an ALIGN-friendly length, or None.

    The span grows about its centre until length * scale is a multiple of ALIGN, as far as
    [start, stop) allows, then shifts to stay inside; None if nothing of it is inside.
    """
    lo_i, hi_i = max(math.floor(lo), start), min(math.ceil(hi), stop)
    if hi_i <= lo_i:
        return None
    size = min(round(math.ceil((hi_i - lo_i) * scale / ALIGN) * ALIGN / scale), stop - start)
    first = min(max(round((lo_i + hi_i - size) / 2), start), stop - size)
    return first, first + size
