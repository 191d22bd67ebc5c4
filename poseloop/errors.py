"""The poseloop error hierarchy: every error a user can cause says what to fix."""

from __future__ import annotations


class PoseloopError(Exception):
    """Base class for errors caused by input the user can fix."""


class ConfigError(PoseloopError):
    """A configuration file or option is invalid; the message names the field."""


class ProjectError(PoseloopError):
    """A DeepLabCut project is unreadable; the message names the file, row and column."""


class WeightsError(PoseloopError):
    """Pretrained weights could not be found or do not fit the backbone."""


class ModelError(PoseloopError):
    """A trained or exported model file is missing, corrupt or of the wrong kind."""


class CameraError(PoseloopError):
    """A camera or video source cannot be opened or stopped delivering frames."""


class ProviderError(PoseloopError):
    """A requested ONNX Runtime execution provider is not available here."""


class FrameError(PoseloopError):
    """A frame has the wrong shape or dtype for the model; the message names the frame."""
