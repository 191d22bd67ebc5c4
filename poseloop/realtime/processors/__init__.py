"""Pose processors: latency compensation, and running any DeepLabCut-Live processor.

A processor maps the N x K x 3 points of a frame (N individuals, K bodyparts; x, y,
likelihood in full-frame pixels), or the N x K x 4 points of triangulated 3D poses (x, y,
z, likelihood in world units, mm), to points of the same shape. poseloop calls it the
DeepLabCut-Live way, ``process(points, **kwargs)``, with the kwargs ``frame_time``
(DeepLabCut-Live's: wall-clock seconds, ``time.time()``, of the capture), ``t_capture_ns``
(host ``perf_counter_ns`` at capture), ``latency_ns`` (the engine's measured
capture-to-output latency, or None) and ``frame_index``. DeepLabCut-Live's own
processors (K x 3 poses; K x 4 in 3D) run unchanged through :class:`DlcLiveAdapter`
(config ``type: python``). Settings in position units (the Kalman filter's noise) are in
the points' units: px, or mm in 3D.

A kind of processor is one file here: its config section (with a ``type`` literal), the
processor, and a factory ``(config, pcutoff) -> Processor`` registered in ``PROCESSORS``
under that ``type``; importing the file below adds it to ``ProcessorConfig``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from poseloop.realtime.processors.chain import (
    PROCESS_KWARGS,
    PROCESSORS,
    ProcessorChain,
    ProcessorFactory,
    make_processors,
)
from poseloop.realtime.processors.kalman import KalmanConfig, KalmanPredictor, kalman_step
from poseloop.realtime.processors.python import (
    DlcLiveAdapter,
    PythonProcessorConfig,
    load_processor,
)

if TYPE_CHECKING:  # what type checkers see: the kinds above
    ProcessorConfig = Annotated[KalmanConfig | PythonProcessorConfig, Field(discriminator="type")]
else:  # at run time, every registered kind
    #: Any processor section, chosen by its ``type`` (``EngineConfig.processors``).
    ProcessorConfig = Annotated[Union[PROCESSORS.configs()], Field(discriminator="type")]  # noqa: UP007

__all__ = [
    "PROCESSORS",
    "PROCESS_KWARGS",
    "DlcLiveAdapter",
    "KalmanConfig",
    "KalmanPredictor",
    "ProcessorChain",
    "ProcessorConfig",
    "ProcessorFactory",
    "PythonProcessorConfig",
    "kalman_step",
    "load_processor",
    "make_processors",
]
