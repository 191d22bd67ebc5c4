"""``near``: another animal within ``within`` px of a bodypart of this one.

"Another mouse close to this one's snout": any other animal whose ``other_part`` (default:
any of its confident bodyparts) lies within ``within`` px of this animal's ``part``. The
event names both animals.
"""

from __future__ import annotations

from math import isfinite
from typing import Literal

from pydantic import Field

from poseloop.rules.compiler import Context, PoseRows, Test
from poseloop.rules.schema import MinLikelihood, PredicateConfig, register_predicate


class Near(PredicateConfig):
    """Another animal's other_part (or any part) within ``within`` px of this one's part."""

    type: Literal["near"] = "near"
    part: str
    within: float = Field(gt=0, description="px")
    other_part: str | None = Field(default=None, description="None = any bodypart")
    min_likelihood: MinLikelihood = None


@register_predicate(Near)
def compile_near(near: Near, ctx: Context) -> Test:
    a = ctx.animal_of(None, "animal")
    i = ctx.part(near.part, "part").row
    others = [n for n in range(len(ctx.individuals)) if n != a]
    if near.other_part is not None:
        rows_of = tuple((b, (ctx.part(near.other_part, "other_part", b).row,)) for b in others)
    else:
        rows_of = tuple((b, ctx.rows_of(b)) for b in others)
    m = ctx.min_likelihood(near.min_likelihood)
    r2 = near.within * near.within
    hits = ctx.hits

    def test(rows: PoseRows) -> bool | None:
        xa, ya, pa = rows[i]
        if not (pa >= m and isfinite(xa + ya)):
            return None
        result = None
        for b, js in rows_of:
            for j in js:
                xb, yb, pb = rows[j]
                if pb >= m and isfinite(xb + yb):
                    if (xb - xa) ** 2 + (yb - ya) ** 2 <= r2:
                        hits.append(a)
                        hits.append(b)
                        return True
                    result = False
        return result

    return test
