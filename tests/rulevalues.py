"""One rule value compiled as the rule compiler compiles it (``ModifierSpec.parse`` then
``compile_value``), from a set of modifier names: the matching tests' shorthand, so that they
test the path every rule takes, not one of their own."""

from pipeshell_filter.sigma.modifiers import ModifierSpec, compile_value


def compile_string(value, modifiers):
    """``value`` (a string, number or bool) under ``modifiers`` (names in any order; windash goes
    first, before any encoding, as the rule compiler wants it written)."""
    return compile_value(value, ModifierSpec.parse(sorted(modifiers, key=lambda name: name != "windash")))


compile_scalar = compile_string  # a number's or a bool's text, as a rule writes it unquoted
