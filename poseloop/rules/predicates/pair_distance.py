"""``pair_distance``: a bodypart of one animal and a bodypart of another, in a band.

"fly1's head within 20 px of fly2's abdomen": ``animal_a`` (default: the animal the rule
looks at) and ``animal_b`` (default: any *other* animal); the test holds when some pair of
different animals is in the band, and names both in the event. Distances are in the poses'
units: image px in 2D, world units (mm) in 3D, where they are 3D distances.
"""

from __future__ import annotations

from math import inf, isfinite
from typing import Literal

from pydantic import Field, model_validator

from poseloop.rules.compiler import Context, PoseRows, Test
from poseloop.rules.schema import MinLikelihood, PredicateConfig, check_band, register_predicate


class PairDistance(PredicateConfig):
    """Distance between part_a of animal_a and part_b of animal_b: > above and/or < below."""

    type: Literal["pair_distance"] = "pair_distance"
    part_a: str
    part_b: str
    animal_a: str | None = Field(default=None, description="None = the rule's animal")
    animal_b: str | None = Field(default=None, description="None = any other animal")
    above: float | None = Field(default=None, ge=0, description="px, or world units (mm) in 3D; "
                                "holds when distance > above")
    below: float | None = Field(default=None, gt=0, description="px, or world units (mm) in 3D; "
                                "holds when distance < below")
    min_likelihood: MinLikelihood = None

    @model_validator(mode="after")
    def _valid(self) -> PairDistance:
        if self.animal_a is not None and self.animal_a == self.animal_b:
            raise ValueError("animal_a and animal_b must be different animals")
        check_band(self.above, self.below)
        return self


@register_predicate(PairDistance)
def compile_pair_distance(pair: PairDistance, ctx: Context) -> Test:
    a = ctx.animal_of(pair.animal_a, "animal_a")
    others = [ctx.animal_of(pair.animal_b, "animal_b")] if pair.animal_b is not None \
        else [n for n in range(len(ctx.individuals)) if n != a]
    i = ctx.part(pair.part_a, "part_a", a).row
    js = tuple((b, ctx.part(pair.part_b, "part_b", b).row) for b in others if b != a)
    m = ctx.min_likelihood(pair.min_likelihood)
    lo = -1.0 if pair.above is None else pair.above * pair.above
    hi = inf if pair.below is None else pair.below * pair.below
    return between_animals(a, i, js, lo, hi, m, ctx.hits, ctx.dims)


def between_animals(a: int, i: int, others: tuple[tuple[int, int], ...], lo: float, hi: float,
                    m: float, hits: list[int], dims: int = 2) -> Test:
    """The test: row ``i`` (of animal ``a``) and some row j of another animal b (``others``:
    (b, j) pairs), both at likelihood >= m, lie lo < distance^2 < hi apart (in ``dims``
    dimensions); names a and b. None when ``i`` or every other row is unknown."""

    def test(rows: PoseRows) -> bool | None:
        xa, ya, pa = rows[i]
        if not (pa >= m and isfinite(xa + ya)):
            return None
        result = None
        for b, j in others:
            xb, yb, pb = rows[j]
            if pb >= m and isfinite(xb + yb):
                if lo < (xb - xa) ** 2 + (yb - ya) ** 2 < hi:
                    hits.append(a)
                    hits.append(b)
                    return True
                result = False
        return result

    def test_3d(rows: PoseRows) -> bool | None:
        xa, ya, za, pa = rows[i]
        if not (pa >= m and isfinite(xa + ya + za)):
            return None
        result = None
        for b, j in others:
            xb, yb, zb, pb = rows[j]
            if pb >= m and isfinite(xb + yb + zb):
                if lo < (xb - xa) ** 2 + (yb - ya) ** 2 + (zb - za) ** 2 < hi:
                    hits.append(a)
                    hits.append(b)
                    return True
                result = False
        return result

    return test if dims == 2 else test_3d
