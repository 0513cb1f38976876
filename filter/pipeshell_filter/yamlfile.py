"""YAML as rules and field maps are read: PyYAML's safe loader, with duplicate keys refused."""

from __future__ import annotations

import yaml

# libyaml's parser when PyYAML was built with it (it is in the wheels): same safe
# constructor, a fraction of the start-up time.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UniqueKeyLoader(SAFE_LOADER):
    """PyYAML's safe loader, but a key given twice is an error: silently keeping
    the last ``filter:`` of a rule would drop the first one from detection."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


class YamlProblem(ValueError):
    """Why a text is not YAML the filter can read, in one line (``str``)."""


def load_yaml(text, every: bool = False):
    """The YAML document of ``text`` (``every``: the list of its documents, empty ones left out),
    or YamlProblem: its syntax, a key given twice, or a scalar YAML resolves but Python cannot
    build (an integer of 5,000 digits, the date 2001-13-45), which would otherwise escape as a
    traceback."""
    try:
        if every:
            return [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d is not None]
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(error, "problem", None) or (str(error).splitlines() or [type(error).__name__])[0]
        raise YamlProblem(f"{where}: {' '.join(str(problem).split())}"[:240]) from None
    except (ValueError, OverflowError, RecursionError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise YamlProblem(f": {reason[:200]}") from None
