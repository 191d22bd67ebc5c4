"""``angle``: the direction of part_a -> part_b within a range of degrees.

2D: the direction in the image, 0 = +x (right), 90 = +y (down); ``range`` wraps past 360.
3D without ``axis``: the same heading, of the vector's (x, y) floor projection, at any pitch
(so a 2D config keeps its meaning; unknown for a vertical vector). 3D with ``axis``: the
angle between the 3D vector and the world direction ``axis``, 0 to 180 degrees, ``range``
without wrapping ("body axis within 30 degrees of up": ``axis: [0, 0, 1], range: [0, 30]``).
"""

from __future__ import annotations

from math import atan2, degrees, isfinite, sqrt
from typing import Annotated, Literal

from pydantic import Field, model_validator

from poseloop.rules.compiler import Context, PoseRows, Test
from poseloop.rules.schema import MinLikelihood, PredicateConfig, register_predicate

Degrees = Annotated[float, Field(ge=-360, le=360)]


class Angle(PredicateConfig):
    """Direction of part_a -> part_b in [lo, hi] degrees (0 = +x, 90 = +y; wraps), or, in
    3D with ``axis``, the angle between part_a -> part_b and axis in [lo, hi] (0 to 180)."""

    type: Literal["angle"] = "angle"
    part_a: str
    part_b: str
    range: tuple[Degrees, Degrees] = Field(
        description="[lo, hi] degrees, lo up to hi, wrapping; with axis 0 <= lo < hi <= 180"
    )
    axis: tuple[float, float, float] | None = Field(
        default=None, description="3D poses only: a world direction [x, y, z] to measure from"
    )
    min_likelihood: MinLikelihood = None

    @model_validator(mode="after")
    def _valid(self) -> Angle:
        if self.part_a == self.part_b:
            raise ValueError("part_a and part_b must be different bodyparts")
        lo, hi = self.range
        if self.axis is not None:
            if not any(self.axis):
                raise ValueError("axis must not be [0, 0, 0]")
            if not 0 <= lo < hi <= 180 or (lo, hi) == (0, 180):
                raise ValueError(f"with axis, range {list(self.range)} must be [lo, hi] with "
                                 "0 <= lo < hi <= 180, not the whole [0, 180]")
        elif (hi - lo) % 360 == 0:
            raise ValueError(f"range {list(self.range)} is empty or the full circle")
        return self


@register_predicate(Angle)
def compile_angle(angle: Angle, ctx: Context) -> Test:
    i, j = ctx.part(angle.part_a, "part_a").row, ctx.part(angle.part_b, "part_b").row
    m = ctx.min_likelihood(angle.min_likelihood)
    lo, hi = angle.range
    start, width = lo % 360.0, (hi - lo) % 360.0
    if angle.axis is not None:
        if ctx.dims == 2:
            ctx.error("axis", "an angle to a 3D axis needs triangulated poses "
                              "(cameras with a calibration)")
            return lambda rows: None  # never runs: the error fails the compile
        return _to_axis(i, j, m, angle.axis, lo, hi)

    def test(rows: PoseRows) -> bool | None:
        xa, ya, pa = rows[i]
        xb, yb, pb = rows[j]
        if pa >= m and pb >= m and isfinite(xa + ya + xb + yb) and (xa != xb or ya != yb):
            return (degrees(atan2(yb - ya, xb - xa)) - start) % 360.0 <= width
        return None

    def test_floor(rows: PoseRows) -> bool | None:
        xa, ya, za, pa = rows[i]
        xb, yb, zb, pb = rows[j]
        if (pa >= m and pb >= m and isfinite(xa + ya + za + xb + yb + zb)
                and (xa != xb or ya != yb)):
            return (degrees(atan2(yb - ya, xb - xa)) - start) % 360.0 <= width
        return None

    return test if ctx.dims == 2 else test_floor


def _to_axis(i: int, j: int, m: float, axis: tuple[float, float, float], lo: float,
             hi: float) -> Test:
    """The 3D test: the angle between rows i -> j and ``axis`` in [lo, hi] degrees.

    The angle is atan2(|v x axis|, v . axis), accurate at every angle (acos of a cosine is
    not near 0 and 180 degrees), so a range's bounds fall where they are written."""
    ux, uy, uz = axis

    def test(rows: PoseRows) -> bool | None:
        xa, ya, za, pa = rows[i]
        xb, yb, zb, pb = rows[j]
        dx, dy, dz = xb - xa, yb - ya, zb - za
        if pa >= m and pb >= m and isfinite(dx + dy + dz) and (dx or dy or dz):
            cx, cy, cz = dy * uz - dz * uy, dz * ux - dx * uz, dx * uy - dy * ux
            return lo <= degrees(atan2(sqrt(cx * cx + cy * cy + cz * cz),
                                       dx * ux + dy * uy + dz * uz)) <= hi
        return None

    return test
