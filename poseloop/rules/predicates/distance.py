"""``distance``: the Euclidean distance between two bodyparts, in a band (strict).

In the poses' units: image px in 2D, world units (mm) in 3D, where it is the 3D distance.
"""

from __future__ import annotations

from math import inf, isfinite
from typing import Literal

from pydantic import Field, model_validator

from poseloop.rules.compiler import Context, PoseRows, Test
from poseloop.rules.schema import MinLikelihood, PredicateConfig, check_band, register_predicate


class Distance(PredicateConfig):
    """Euclidean distance between two bodyparts (2D or 3D): > above and/or < below."""

    type: Literal["distance"] = "distance"
    part_a: str
    part_b: str
    above: float | None = Field(default=None, ge=0, description="px, or world units (mm) in 3D; "
                                "holds when distance > above")
    below: float | None = Field(default=None, gt=0, description="px, or world units (mm) in 3D; "
                                "holds when distance < below")
    min_likelihood: MinLikelihood = None

    @model_validator(mode="after")
    def _valid(self) -> Distance:
        if self.part_a == self.part_b:
            raise ValueError("part_a and part_b must be different bodyparts")
        check_band(self.above, self.below)
        return self


@register_predicate(Distance)
def compile_distance(dist: Distance, ctx: Context) -> Test:
    i, j = ctx.part(dist.part_a, "part_a").row, ctx.part(dist.part_b, "part_b").row
    m = ctx.min_likelihood(dist.min_likelihood)
    lo = -1.0 if dist.above is None else dist.above * dist.above
    hi = inf if dist.below is None else dist.below * dist.below

    def test(rows: PoseRows) -> bool | None:
        xa, ya, pa = rows[i]
        xb, yb, pb = rows[j]
        if pa >= m and pb >= m and isfinite(xa + ya + xb + yb):
            d2 = (xb - xa) ** 2 + (yb - ya) ** 2
            return lo < d2 < hi
        return None

    def test_3d(rows: PoseRows) -> bool | None:
        xa, ya, za, pa = rows[i]
        xb, yb, zb, pb = rows[j]
        if pa >= m and pb >= m and isfinite(xa + ya + za + xb + yb + zb):
            d2 = (xb - xa) ** 2 + (yb - ya) ** 2 + (zb - za) ** 2
            return lo < d2 < hi
        return None

    return test if ctx.dims == 2 else test_3d
