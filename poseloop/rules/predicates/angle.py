"""``angle``: the direction of part_a -> part_b within a range of degrees (wrapping)."""

from __future__ import annotations

from math import atan2, degrees, isfinite
from typing import Annotated, Literal

from pydantic import Field, model_validator

from poseloop.rules.compiler import Context, PoseRows, Test
from poseloop.rules.schema import MinLikelihood, PredicateConfig, register_predicate

Degrees = Annotated[float, Field(ge=-360, le=360)]


class Angle(PredicateConfig):
    """Direction of part_a -> part_b in [lo, hi] degrees (0 = +x, 90 = +y down; wraps)."""

    type: Literal["angle"] = "angle"
    part_a: str
    part_b: str
    range: tuple[Degrees, Degrees] = Field(description="[lo, hi] degrees, lo up to hi, wrapping")
    min_likelihood: MinLikelihood = None

    @model_validator(mode="after")
    def _valid(self) -> Angle:
        if self.part_a == self.part_b:
            raise ValueError("part_a and part_b must be different bodyparts")
        if (self.range[1] - self.range[0]) % 360 == 0:
            raise ValueError(f"range {list(self.range)} is empty or the full circle")
        return self


@register_predicate(Angle)
def compile_angle(angle: Angle, ctx: Context) -> Test:
    i, j = ctx.part(angle.part_a, "part_a").row, ctx.part(angle.part_b, "part_b").row
    m = ctx.min_likelihood(angle.min_likelihood)
    lo, hi = angle.range
    start, width = lo % 360.0, (hi - lo) % 360.0

    def test(rows: PoseRows) -> bool | None:
        xa, ya, pa = rows[i]
        xb, yb, pb = rows[j]
        if pa >= m and pb >= m and isfinite(xa + ya + xb + yb) and (xa != xb or ya != yb):
            return (degrees(atan2(yb - ya, xb - xa)) - start) % 360.0 <= width
        return None

    return test
