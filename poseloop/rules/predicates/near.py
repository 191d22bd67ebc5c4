"""``near``: another animal within ``within`` (px, or world units in 3D) of a bodypart of this one.

"Another mouse close to this one's snout": any other animal whose ``other_part`` (default:
any of its confident bodyparts) lies within ``within`` of this animal's ``part`` (image px
in 2D; in 3D the 3D distance, in world units such as mm). The event names both animals.
"""

from __future__ import annotations

from math import inf, nextafter
from typing import Literal

from pydantic import Field

from poseloop.rules.compiler import Context, Test
from poseloop.rules.predicates.pair_distance import between_animals
from poseloop.rules.schema import MinLikelihood, PredicateConfig, register_predicate


class Near(PredicateConfig):
    """Another animal's other_part (or any part) within ``within`` of this one's part."""

    type: Literal["near"] = "near"
    part: str
    within: float = Field(gt=0, description="px, or world units (mm) in 3D")
    other_part: str | None = Field(default=None, description="None = any bodypart")
    min_likelihood: MinLikelihood = None


@register_predicate(Near)
def compile_near(near: Near, ctx: Context) -> Test:
    a = ctx.animal_of(None, "animal")
    i = ctx.part(near.part, "part").row
    others = [n for n in range(len(ctx.individuals)) if n != a]
    if near.other_part is not None:
        pairs = tuple((b, ctx.part(near.other_part, "other_part", b).row) for b in others)
    else:
        pairs = tuple((b, j) for b in others for j in ctx.rows_of(b))
    m = ctx.min_likelihood(near.min_likelihood)
    within = nextafter(near.within * near.within, inf)  # the edge counts as within
    return between_animals(a, i, pairs, -1.0, within, m, ctx.hits, ctx.dims)
