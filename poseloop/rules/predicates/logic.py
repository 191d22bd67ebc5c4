"""The combinators ``all``, ``any`` and ``not``, in Kleene logic (unknown propagates)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from poseloop.rules.compiler import Context, PoseRows, Test
from poseloop.rules.schema import Predicate, PredicateConfig, register_predicate


class AllOf(PredicateConfig):
    """True when every child is True (False if any child is False, else unknown)."""

    type: Literal["all"] = "all"
    all: list[Predicate] = Field(min_length=1)


class AnyOf(PredicateConfig):
    """True when some child is True (False if every child is False, else unknown)."""

    type: Literal["any"] = "any"
    any: list[Predicate] = Field(min_length=1)


class Not(PredicateConfig):
    """Negation; unknown stays unknown (a low-confidence part never fires a rule)."""

    type: Literal["not"] = "not"
    not_: Predicate = Field(alias="not")


@register_predicate(AllOf)
def compile_all(config: AllOf, ctx: Context) -> Test:
    children = [ctx.child(c, f"all[{k}]") for k, c in enumerate(config.all)]

    def test(rows: PoseRows) -> bool | None:
        result: bool | None = True
        for child in children:
            v = child(rows)
            if v is False:
                return False
            if v is None:
                result = None
        return result

    return test


@register_predicate(AnyOf)
def compile_any(config: AnyOf, ctx: Context) -> Test:
    children = [ctx.child(c, f"any[{k}]") for k, c in enumerate(config.any)]

    def test(rows: PoseRows) -> bool | None:
        result: bool | None = False
        for child in children:
            v = child(rows)
            if v is True:
                return True
            if v is None:
                result = None
        return result

    return test


@register_predicate(Not)
def compile_not(config: Not, ctx: Context) -> Test:
    child = ctx.child(config.not_, "not")

    def test(rows: PoseRows) -> bool | None:
        v = child(rows)
        return None if v is None else not v

    return test
