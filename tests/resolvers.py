"""The built-in field profiles read once per test process, for tests that make a resolver per run.

``builtin_profiles()`` parses eight YAML files (25 ms), more than a small stream takes through the
engine; a property that made a resolver per run spent most of its time there.  The profiles are
data (a field's plan is made once and kept, the same for every resolver): each run still gets a
resolver of its own, as each process of the filter does.
"""

from pipeshell_filter.events.fields import FieldResolver, builtin_profiles

PROFILES = builtin_profiles()


def auto() -> FieldResolver:
    """What ``--profile auto`` (the default) gives: ``cli.make_resolver("auto", None, None)``."""
    return FieldResolver(PROFILES, "auto")
