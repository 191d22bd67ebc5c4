"""``zone``: a bodypart inside a shape (boundaries count as inside).

2D shapes (``rect``, ``circle``, ``polygon``) test x, y: in a 3D session the point's (x, y)
projection on the world's floor plane, at any height ("snout in the left third of the arena,
at any height"). 3D shapes (``box``, ``sphere``) test x, y, z and need triangulated poses.
"""

from __future__ import annotations

from collections.abc import Callable
from math import isfinite
from typing import Literal

from pydantic import Field, model_validator

from poseloop.rules.compiler import Context, PoseRows, Test
from poseloop.rules.schema import (
    Box,
    Circle,
    MinLikelihood,
    Polygon,
    PredicateConfig,
    Rect,
    Sphere,
    register_predicate,
)

SHAPES = ("rect", "circle", "polygon", "box", "sphere")
SHAPES_3D = ("box", "sphere")


class Zone(PredicateConfig):
    """A bodypart inside a rectangle, circle, polygon, box or sphere (give exactly one)."""

    type: Literal["zone"] = "zone"
    part: str
    rect: Rect | None = None
    circle: Circle | None = None
    polygon: Polygon | None = Field(
        default=None, description="[[x, y], ...] in order around the outline"
    )
    box: Box | None = Field(default=None, description="3D poses only")
    sphere: Sphere | None = Field(default=None, description="3D poses only")
    min_likelihood: MinLikelihood = None

    @model_validator(mode="after")
    def _one_shape(self) -> Zone:
        given = [k for k in SHAPES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(SHAPES)} (got {', '.join(given) or 'none'})"
            )
        return self


def _inside_2d(zone: Zone) -> Callable[[float, float], bool]:
    """Whether (x, y) is inside the zone's rect, circle or polygon."""
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

    return inside


def _inside_3d(zone: Zone) -> Callable[[float, float, float], bool]:
    """Whether (x, y, z) is inside the zone's box or sphere."""
    if zone.box is not None:
        b = zone.box
        x1, y1, z1, x2, y2, z2 = b.x1, b.y1, b.z1, b.x2, b.y2, b.z2

        def inside(x: float, y: float, z: float) -> bool:
            return x1 <= x <= x2 and y1 <= y <= y2 and z1 <= z <= z2
    else:
        s = zone.sphere
        assert s is not None  # the validator leaves exactly one shape
        cx, cy, cz, r2 = s.cx, s.cy, s.cz, s.r**2

        def inside(x: float, y: float, z: float) -> bool:
            return (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r2

    return inside


@register_predicate(Zone)
def compile_zone(zone: Zone, ctx: Context) -> Test:
    i = ctx.part(zone.part, "part").row
    m = ctx.min_likelihood(zone.min_likelihood)
    shape = next(k for k in SHAPES if getattr(zone, k) is not None)
    if ctx.dims == 2:
        if shape in SHAPES_3D:
            ctx.error(shape, "a 3D zone needs triangulated poses (cameras with a calibration)")
            return lambda rows: None  # never runs: the error fails the compile
        inside = _inside_2d(zone)

        def test(rows: PoseRows) -> bool | None:
            x, y, p = rows[i]
            if p >= m and isfinite(x + y):  # x + y is not finite if either is NaN or inf
                return inside(x, y)
            return None

        return test

    if shape in SHAPES_3D:
        inside_3d = _inside_3d(zone)

        def test_3d(rows: PoseRows) -> bool | None:
            x, y, z, p = rows[i]
            if p >= m and isfinite(x + y + z):
                return inside_3d(x, y, z)
            return None

        return test_3d

    floor = _inside_2d(zone)

    def test_floor(rows: PoseRows) -> bool | None:
        x, y, z, p = rows[i]
        if p >= m and isfinite(x + y + z):  # an untriangulated part is NaN in x, y and z
            return floor(x, y)
        return None

    return test_floor
