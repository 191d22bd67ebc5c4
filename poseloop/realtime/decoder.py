"""Peak decoding of one image's scoremap + locref into a 1 x K x 3 pose, without allocating.

``decode_peaks`` is the numba kernel the live loop runs; ``decode_peaks_numpy`` is its
plain-numpy twin, built on :meth:`HeatmapSpec.decode`, that the tests hold it to. Both take
every argument explicitly (numba default arguments cost ~30 µs a call) and write into a
preallocated K x 3 float32 ``out`` (x, y in graph-input pixels, likelihood).

Per bodypart j: the argmax cell (iy, ix) of scoremap[j] (ties go to the first cell in
row-major order, like ``np.argmax``), xy = (ix, iy) * stride + offset +
locref[2j:2j+2, iy, ix] * locref_stdev, and the likelihood from the peak value by mode:
``sigmoid`` (the graph outputs logits), ``clip`` to [0, 1], or ``raw``.

NaN: a bodypart whose scoremap holds any NaN decodes to (NaN, NaN, NaN). A non-finite
network output is a fault, not a detection; a NaN likelihood fails every
``likelihood >= pcutoff`` test, so filters, rules and dynamic cropping treat the bodypart as
unseen. (``np.argmax`` returns the first NaN, so the numpy twin agrees.)
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence

import numpy as np
from numba import njit

from poseloop.errors import ModelError
from poseloop.heatmap import LIKELIHOOD_MODES, HeatmapSpec
from poseloop.modelspec import ModelSpec
from poseloop.realtime.transform import FrameTransform, map_to_full
from poseloop.realtime.types import Decoder
from poseloop.registry import Registry

#: Likelihood modes (``HeatmapSpec.likelihood``) as the kernel's integer argument.
MODES = {name: i for i, name in enumerate(LIKELIHOOD_MODES)}
_MODE_NAMES = dict(enumerate(LIKELIHOOD_MODES))

# The argmax works on the int32 / uint32 views of the float32 map: max/min reductions over
# integers vectorise, float ones do not (NaN semantics). Non-negative floats order like their
# int32 bits, negative floats in reverse; a positive NaN's int32 bits lie above +inf's, a
# negative NaN's uint32 bits above -inf's. Each block of _BLOCK cells is reduced with SIMD,
# then only the winning block is scanned for the first cell holding the maximum.
_BLOCK = 512
_I32_MIN = np.int32(-(2**31))
_I32_MAX = np.int32(2**31 - 1)
_POS_INF_BITS = np.int32(0x7F800000)
_NEG_INF_UBITS = np.uint32(0xFF800000)
_U32_ZERO = np.uint32(0)
_NO_KEY = np.int64(-(2**40))


@njit(cache=True, nogil=True)
def _order_key(bits: np.int64) -> np.int64:
    """Monotone integer key of a finite float32's bits (-0.0 and +0.0 share key 0)."""
    return bits if bits >= 0 else -(bits & 0x7FFFFFFF)


@njit(cache=True, nogil=True)
def _first_argmax(bits: np.ndarray, ubits: np.ndarray) -> int:
    """Index of the first maximum of a float32 row given as its int32/uint32 views; -1 on NaN."""
    n = bits.size
    best = _NO_KEY
    best_start = 0
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        hi = _I32_MIN
        lo = _I32_MAX
        uhi = _U32_ZERO
        for i in range(start, stop):
            x = bits[i]
            hi = x if x > hi else hi
            lo = x if x < lo else lo
            u = ubits[i]
            uhi = u if u > uhi else uhi
        if hi > _POS_INF_BITS or uhi > _NEG_INF_UBITS:
            return -1
        key = _order_key(np.int64(hi) if hi >= 0 else np.int64(lo))
        if key > best:
            best = key
            best_start = start
    for i in range(best_start, min(best_start + _BLOCK, n)):
        if _order_key(np.int64(bits[i])) == best:
            return i
    return -1


@njit(cache=True, nogil=True)
def _likelihood(peak: float, mode: int) -> float:
    if mode == 0:
        return 1.0 / (1.0 + math.exp(-peak))
    if mode == 1:
        return min(max(peak, 0.0), 1.0)
    return peak


@njit(cache=True, nogil=True)
def decode_peaks(
    scoremap: np.ndarray,
    locref: np.ndarray,
    stride: float,
    offset: float,
    locref_stdev: float,
    mode: int,
    out: np.ndarray,
) -> np.ndarray:
    """numba kernel: K x h x w scoremap + 2K x h x w locref (C-contiguous float32) -> out K x 3."""
    k, h, w = scoremap.shape
    flat = scoremap.reshape(k, h * w)
    bits = flat.view(np.int32)
    ubits = flat.view(np.uint32)
    for j in range(k):
        i = _first_argmax(bits[j], ubits[j])
        if i < 0:
            out[j, 0] = np.nan
            out[j, 1] = np.nan
            out[j, 2] = np.nan
            continue
        iy = i // w
        ix = i - iy * w
        out[j, 0] = ix * stride + offset + locref[2 * j, iy, ix] * locref_stdev
        out[j, 1] = iy * stride + offset + locref[2 * j + 1, iy, ix] * locref_stdev
        out[j, 2] = _likelihood(np.float64(flat[j, i]), mode)
    return out


@njit(cache=True, nogil=True)
def decode_peaks_full(
    scoremap: np.ndarray,
    locref: np.ndarray,
    stride: float,
    offset: float,
    locref_stdev: float,
    mode: int,
    x0: float,
    y0: float,
    sx: float,
    sy: float,
    out: np.ndarray,
) -> np.ndarray:
    """:func:`decode_peaks`, then mapped to full-frame pixels (FrameTransform x0, y0, sx, sy)
    in the same call: the live loop's decode is one dispatch, made while the caches are
    still cold from inference (each Python-level call there costs ~20 us, not ~1)."""
    decode_peaks(scoremap, locref, stride, offset, locref_stdev, mode, out)
    map_to_full(out, x0, y0, sx, sy)
    return out


def decode_peaks_numpy(
    scoremap: np.ndarray,
    locref: np.ndarray,
    stride: float,
    offset: float,
    locref_stdev: float,
    mode: int,
    out: np.ndarray,
) -> np.ndarray:
    """The plain-numpy twin of :func:`decode_peaks` (same arguments, same result)."""
    spec = HeatmapSpec(stride=stride, offset=offset, locref_stdev=locref_stdev,
                       likelihood=_MODE_NAMES[mode])
    xy, peak = spec.decode(scoremap, locref)
    out[:, :2] = xy
    out[:, 2] = spec.likelihood_of(peak)
    out[np.isnan(peak)] = np.nan
    return out


#: Decoder kinds by ``ModelSpec.decoder``: name -> factory(spec) -> Decoder. A decoder for
#: another kind of model is one file that registers itself here (and is listed in BUILTIN).
DECODERS: Registry[Callable[[ModelSpec], Decoder]] = Registry("decoder")
BUILTIN = ("poseloop.realtime.decoder", "poseloop.realtime.multi_decoder")


def make_decoder(spec: ModelSpec) -> Decoder:
    """The decoder of a model's outputs (ConfigError naming the kind if none is registered)."""
    for module in BUILTIN:
        importlib.import_module(module)
    if spec.decoder not in DECODERS:
        raise ModelError(f"no decoder for {spec.decoder} models in this poseloop (known: "
                         f"{', '.join(DECODERS.names())})")
    return DECODERS[spec.decoder].factory(spec)


@DECODERS.register("single_animal")
class PeakDecoder:
    """The single-animal decoder: network outputs of one image -> 1 x K x 3 points in ``out``.

    spec: a ModelSpec, or a HeatmapSpec (its ``likelihood`` mode included) and ``k``
    bodyparts. use_numba=False runs the numpy twin (for
    comparison; same results). Outputs (scoremap, locref, ...) may carry a leading batch
    dimension of 1 (ORT's N=1 outputs), which is dropped without copying; float32
    C-contiguous maps are used as they are, anything else is converted once per call.
    """

    def __init__(self, spec: ModelSpec | HeatmapSpec, use_numba: bool = True,
                 k: int | None = None):
        heat = spec.heatmap_spec() if isinstance(spec, ModelSpec) else spec
        if heat.likelihood not in MODES:
            raise ModelError(f"likelihood mode must be one of {tuple(MODES)}, "
                             f"got {heat.likelihood!r}")
        if k is None:
            if not isinstance(spec, ModelSpec):
                raise TypeError("PeakDecoder(HeatmapSpec) needs k, the number of bodyparts")
            k = len(spec.bodyparts)
        #: The shape of the points this decoder writes: (1, K, 3).
        self.shape: tuple[int, int, int] = (1, k, 3)
        self.stride = float(heat.stride)
        self.offset = float(heat.offset)
        self.locref_stdev = float(heat.locref_stdev)
        self.mode = MODES[heat.likelihood]
        self._kernel = decode_peaks if use_numba else decode_peaks_numpy
        self._full = decode_peaks_full if use_numba else None
        self._checked: tuple | None = None

    def warmup(self) -> None:
        """Compile (or load from numba's cache) the kernel, so no frame pays for it."""
        self._kernel(np.zeros((1, 2, 2), np.float32), np.zeros((2, 2, 2), np.float32),
                     self.stride, self.offset, self.locref_stdev, self.mode,
                     np.empty((1, 3), np.float32))
        if self._full is not None:
            self._full(np.zeros((1, 2, 2), np.float32), np.zeros((2, 2, 2), np.float32),
                       self.stride, self.offset, self.locref_stdev, self.mode, 0.0, 0.0, 1.0,
                       1.0, np.empty((1, 3), np.float32))

    def decode(self, outputs: Sequence[np.ndarray], out: np.ndarray,
               transform: FrameTransform | None = None) -> np.ndarray:
        """Decode ([1 x] K x h x w scoremap, [1 x] 2K x h x w locref) into out (1 x K x 3):
        graph-input pixels, or full-frame pixels through ``transform``."""
        scoremap, locref = outputs[0], outputs[1]
        key = (scoremap.shape, locref.shape, out.shape, out.dtype)
        if key != self._checked:
            _check_shapes(scoremap, locref, out)
            self._checked = key
        if scoremap.ndim == 4:
            scoremap, locref = scoremap[0], locref[0]
        if transform is not None and self._full is not None:
            t = transform
            self._full(_float32(scoremap), _float32(locref), self.stride, self.offset,
                       self.locref_stdev, self.mode, t.x0, t.y0, t.sx, t.sy, out[0])
            return out
        self._kernel(_float32(scoremap), _float32(locref), self.stride, self.offset,
                     self.locref_stdev, self.mode, out[0])
        if transform is not None:
            transform.to_full(out)
        return out


def _float32(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.float32 and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a, dtype=np.float32)


def _check_shapes(scoremap: np.ndarray, locref: np.ndarray, out: np.ndarray) -> None:
    if scoremap.ndim not in (3, 4) or locref.ndim != scoremap.ndim:
        raise ModelError(
            f"decoder expects scoremap K x h x w and locref 2K x h x w (optionally with a "
            f"leading batch of 1), got {scoremap.shape} and {locref.shape}"
        )
    if scoremap.ndim == 4 and (scoremap.shape[0] != 1 or locref.shape[0] != 1):
        raise ModelError(
            f"the live decoder takes one image, got a batch of {scoremap.shape[0]} "
            f"(scoremap {scoremap.shape}, locref {locref.shape})"
        )
    k, h, w = scoremap.shape[-3:]
    if locref.shape[-3:] != (2 * k, h, w) or h * w == 0:
        raise ModelError(
            f"locref must be 2K x h x w for scoremap K x h x w = {scoremap.shape[-3:]}, "
            f"got {locref.shape[-3:]}"
        )
    if out.shape != (1, k, 3) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous 1 x {k} x 3 float32 array, got {out.shape} {out.dtype}"
        )
