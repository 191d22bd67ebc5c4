"""``zone``: a bodypart inside a rectangle, circle or polygon (boundaries count as inside)."""

from __future__ import annotations

from math import isfinite
from typing import Literal

from pydantic import Field, model_validator

from poseloop.rules.compiler import Context, PoseRows, Test
from poseloop.rules.schema import (
    Circle,
    MinLikelihood,
    Polygon,
    PredicateConfig,
    Rect,
    register_predicate,
)


class Zone(PredicateConfig):
    """A bodypart inside a rectangle, circle or polygon (give exactly one)."""

    type: Literal["zone"] = "zone"
    part: str
    rect: Rect | None = None
    circle: Circle | None = None
    polygon: Polygon | None = Field(
        default=None, description="[[x, y], ...] in order around the outline"
    )
    min_likelihood: MinLikelihood = None

    @model_validator(mode="after")
    def _one_shape(self) -> Zone:
        given = [k for k in ("rect", "circle", "polygon") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of rect, circle, polygon (got {', '.join(given) or 'none'})"
            )
        return self


@register_predicate(Zone)
def compile_zone(zone: Zone, ctx: Context) -> Test:
    i = ctx.part(zone.part, "part").row
    m = ctx.min_likelihood(zone.min_likelihood)
    if zone.rect is not None:
        x1, y1, x2, y2 = zone.rect.x1, zone.rect.y1, zone.rect.x2, zone.rect.y2

        def inside(x: float, y: float) -> bool:
            return x1 <= x <= x2 and y1 <= y <= y2
    elif zone.circle is not None:
        cx, cy, r2 = zone.circle.cx, zone.circle.cy, zone.circle.r**2

        def inside(x: float, y: float) -> bool:
            return (x - cx) ** 2 + (y - cy) ** 2 <= r2
    else:
        pts = zone.polygon or []
        # Even-odd ray casting; per edge (y_i, y_j, x_i, dx/dy), horizontal edges never count.
        edges = [
            (yi, yj, xi, (xj - xi) / (yj - yi))
            for (xi, yi), (xj, yj) in zip(pts, pts[-1:] + pts[:-1], strict=True)
            if yi != yj
        ]

        def inside(x: float, y: float) -> bool:
            odd = False
            for yi, yj, xi, slope in edges:
                if (yi > y) != (yj > y) and x < xi + (y - yi) * slope:
                    odd = not odd
            return odd

    def test(rows: PoseRows) -> bool | None:
        x, y, p = rows[i]
        if p >= m and isfinite(x + y):  # x + y is not finite if either is NaN or inf
            return inside(x, y)
        return None

    return test
