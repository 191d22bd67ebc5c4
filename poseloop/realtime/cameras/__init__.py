"""Frame sources behind the ``Camera`` protocol, and the thread that keeps the newest frame.

* :class:`OpenCVCamera` (kind ``opencv``): a device index (width/height/fps/exposure where
  the backend allows) or a video file, read as fast as possible or ``paced`` at the file's
  frame rate like a camera.
* :class:`SyntheticCamera` (kind ``synthetic``): :class:`poseloop.synthetic.SyntheticScene`,
  each frame carrying its ground-truth keypoints in ``Frame.truth``.
* :class:`BaslerCamera` (kind ``basler``): pypylon, an optional import (``PYLON_CAMEMU=1``
  gives pylon's emulated camera); the device timestamp goes into ``Frame.t_device_ns``.
* :class:`GenICamCamera` (kind ``genicam``): any GenICam camera through harvesters and its
  maker's GenTL producer (.cti), an optional import; hardware line trigger, frames numbered
  by the camera.
* :class:`SyntheticViewCamera` (kind ``synthetic_view``): one virtual camera of the
  synthetic 3D rig (:mod:`poseloop.threed.synthetic_views`); a group of them is a
  triggered multi-camera rig with known calibration and 3D truth.
* :class:`GrabThread`: reads an opened camera continuously in its own thread, keeps only the
  newest frame and hands it to the loop; camera errors, stalls and the end of a file reach
  the consumer.

A camera's owner opens it (``open()`` returns the :class:`CameraInfo` of what it delivers:
size, frame rate, pixel format) and closes it; every camera fills a caller's buffer when
given one (``read(out)``), so the grab thread cycles three images and a running loop
allocates no frame memory.

A kind of camera is one module here: its config section (``kind: Literal[name]``) and its
class with ``from_config``, registered with :func:`camera_kind` in :data:`CAMERAS`.
Importing its module below (these imports are the list of built-in kinds) adds it to
``CameraConfig``; :func:`make_camera` builds any registered kind, also one registered later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Field, RootModel, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from poseloop.config import validate
from poseloop.errors import ConfigError
from poseloop.realtime.cameras.basler import BaslerCamera, BaslerConfig
from poseloop.realtime.cameras.common import Pacer
from poseloop.realtime.cameras.genicam import GenICamCamera, GenICamConfig
from poseloop.realtime.cameras.grab import GrabThread
from poseloop.realtime.cameras.opencv import OpenCVCamera, OpenCVConfig
from poseloop.realtime.cameras.registry import CAMERAS, CameraKind, camera_kind, lookup
from poseloop.realtime.cameras.synthetic import SyntheticCamera, SyntheticConfig
from poseloop.realtime.cameras.synthetic_view import SyntheticViewCamera, SyntheticViewConfig
from poseloop.realtime.types import Camera

if TYPE_CHECKING:  # what type checkers see: the kinds above
    _Section = (OpenCVConfig | SyntheticConfig | BaslerConfig | GenICamConfig
                | SyntheticViewConfig)
else:  # at run time, the kinds registered so far: the built-in ones
    _Section = Annotated[Union[CAMERAS.configs()], Field(discriminator="kind")]  # noqa: UP007


class CameraConfig(RootModel[_Section]):
    """Any camera section; ``kind`` (opencv, synthetic, basler, ...) selects which.

    The union holds the kinds registered when this package is imported (the built-in
    ones). Errors name the section's own fields (``camera.width``, not the union's
    ``camera.synthetic.width``), and an unknown or missing kind lists the known ones.
    """

    @model_validator(mode="before")
    @classmethod
    def _section(cls, data: Any) -> Any:
        """A mapping validated by its kind's section (errors keep that section's paths)."""
        if not isinstance(data, Mapping):
            return data
        try:
            section, _ = lookup(data.get("kind"))
        except ConfigError as e:
            raise ValidationError.from_exception_data(cls.__name__, [InitErrorDetails(
                type=PydanticCustomError("camera_kind", "{message}", {"message": str(e)}),
                loc=("kind",), input=data.get("kind"),
            )]) from None
        return section.model_validate(dict(data))


def make_camera(config: BaseModel | Mapping[str, Any], source: str = "camera") -> Camera:
    """The camera of a config section, a ``CameraConfig``, or a mapping.

    A mapping is validated by its kind's section first: ConfigError naming ``source`` (where
    it came from) and the field, e.g. an unknown ``kind`` with the known ones listed.
    """
    if isinstance(config, Mapping):
        try:
            section, _ = lookup(config.get("kind"))
        except ConfigError as e:
            raise ConfigError(f"{source}: field 'kind': {e}") from None
        config = validate(section, dict(config), source)
    elif isinstance(config, CameraConfig):
        config = config.root
    try:
        _, cls = lookup(getattr(config, "kind", None))
    except ConfigError as e:
        raise ConfigError(f"{source}: {type(config).__name__}: {e}") from None
    return cls.from_config(config)


__all__ = [
    "CAMERAS",
    "BaslerCamera",
    "BaslerConfig",
    "CameraConfig",
    "CameraKind",
    "GenICamCamera",
    "GenICamConfig",
    "GrabThread",
    "OpenCVCamera",
    "OpenCVConfig",
    "Pacer",
    "SyntheticCamera",
    "SyntheticConfig",
    "SyntheticViewCamera",
    "SyntheticViewConfig",
    "camera_kind",
    "lookup",
    "make_camera",
]
