"""The camera config sections under their former import path.

Each section lives beside its camera in :mod:`poseloop.realtime.cameras` (one module per
kind); ``CameraConfig`` is the union of the registered kinds, chosen by ``kind``.
"""

from poseloop.realtime.cameras import BaslerConfig, CameraConfig, OpenCVConfig, SyntheticConfig

__all__ = ["BaslerConfig", "CameraConfig", "OpenCVConfig", "SyntheticConfig"]
