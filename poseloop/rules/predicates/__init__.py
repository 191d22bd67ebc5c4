"""The built-in predicate kinds, one module each; importing this package registers them.

A kind is one module holding its config section (a ``PredicateConfig`` with
``type: Literal["<name>"]``) and its compile function, registered with
``@register_predicate(Config)``; it returns the test the rules run on every frame. A new
built-in kind is one new module here plus its name in ``BUILTIN``.
"""

from importlib import import_module

#: The modules of the built-in kinds, in the order error messages list the kinds.
BUILTIN = ("zone", "distance", "angle", "speed", "likelihood", "logic", "pair_distance",
           "near")

for _module in BUILTIN:
    import_module(f"{__name__}.{_module}")
