"""``speed``: a bodypart's speed between consecutive poses, in a band (strict).

In the poses' units per second: image px/s in 2D, world units (mm) per second in 3D, where
it is the 3D speed.
"""

from __future__ import annotations

from math import hypot, inf, isfinite
from typing import Literal

from pydantic import Field, model_validator

from poseloop.rules.compiler import Context, Part, PoseRows, Test
from poseloop.rules.schema import MinLikelihood, PredicateConfig, check_band, register_predicate


class Speed(PredicateConfig):
    """A bodypart's speed (2D or 3D) between consecutive poses: > above and/or < below."""

    type: Literal["speed"] = "speed"
    part: str
    above: float | None = Field(default=None, ge=0, description="px/s, or world units (mm) per "
                                "second in 3D; holds when speed > above")
    below: float | None = Field(default=None, gt=0, description="px/s, or world units (mm) per "
                                "second in 3D; holds when speed < below")
    min_likelihood: MinLikelihood = None

    @model_validator(mode="after")
    def _valid(self) -> Speed:
        check_band(self.above, self.below)
        return self


class SpeedTracker:
    """A bodypart's speed from the last two confident poses; None when there were not two.

    Updated on every frame, before the rules, so a speed inside a short-circuited ``all``
    still spans one frame interval.
    """

    __slots__ = ("i", "m", "x", "y", "t_ns", "speed")

    def __init__(self, part: Part, m: float) -> None:
        self.i = part.row
        self.m = m
        self.reset()

    def reset(self) -> None:
        self.x = self.y = 0.0
        self.t_ns: int | None = None
        self.speed: float | None = None

    def update(self, rows: PoseRows, t_ns: int) -> None:
        x, y, p = rows[self.i]
        if not (p >= self.m and isfinite(x + y)):
            self.t_ns = self.speed = None
            return
        if self.t_ns is not None and t_ns > self.t_ns:
            self.speed = hypot(x - self.x, y - self.y) * 1e9 / (t_ns - self.t_ns)
        else:
            self.speed = None
        self.x, self.y, self.t_ns = x, y, t_ns


class SpeedTracker3D(SpeedTracker):
    """``SpeedTracker`` for 3D poses: the speed along the 3D path, rows ``[x, y, z, p]``."""

    __slots__ = ("z",)

    def reset(self) -> None:
        super().reset()
        self.z = 0.0

    def update(self, rows: PoseRows, t_ns: int) -> None:
        x, y, z, p = rows[self.i]
        if not (p >= self.m and isfinite(x + y + z)):
            self.t_ns = self.speed = None
            return
        if self.t_ns is not None and t_ns > self.t_ns:
            self.speed = hypot(x - self.x, y - self.y, z - self.z) * 1e9 / (t_ns - self.t_ns)
        else:
            self.speed = None
        self.x, self.y, self.z, self.t_ns = x, y, z, t_ns


@register_predicate(Speed)
def compile_speed(speed: Speed, ctx: Context) -> Test:
    tracker_type = SpeedTracker if ctx.dims == 2 else SpeedTracker3D
    tracker = ctx.track(
        tracker_type(ctx.part(speed.part, "part"), ctx.min_likelihood(speed.min_likelihood))
    )
    lo = -1.0 if speed.above is None else speed.above
    hi = inf if speed.below is None else speed.below

    def test(rows: PoseRows) -> bool | None:
        v = tracker.speed
        return None if v is None else lo < v < hi

    return test
