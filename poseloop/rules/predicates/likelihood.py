"""``likelihood``: a plain gate on a bodypart's likelihood, never unknown."""

from __future__ import annotations

from typing import Literal

from poseloop.rules.compiler import Context, PoseRows, Test
from poseloop.rules.schema import Likelihood01, PredicateConfig, register_predicate


class Likelihood(PredicateConfig):
    """Gate: the bodypart's likelihood >= p. Never unknown, so ``not`` of it is meaningful."""

    type: Literal["likelihood"] = "likelihood"
    part: str
    p: Likelihood01


@register_predicate(Likelihood)
def compile_likelihood(gate: Likelihood, ctx: Context) -> Test:
    i, p = ctx.part(gate.part, "part").row, gate.p
    c = ctx.dims  # the likelihood is a row's last element: [x, y, p] or [x, y, z, p]

    def test(rows: PoseRows) -> bool:
        return rows[i][c] >= p

    return test
