"""YAML as rules and field maps are read: PyYAML's safe loader, with duplicate keys refused (and, in
rules, the text of numbers YAML 1.1 rewrites kept)."""

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


class WrittenInt(int):
    """A plain YAML integer not written as the decimal text it compares by (``0755``, ``0x1F``, ``1_000``,
    ``1:30``, ``+5``): the int YAML 1.1 reads (493, 31, 1000, 90, 5), with the text as written in
    ``written``.  A rule compares it as that text (``sigma.modifiers``): an event's ``"0755"`` is what
    ``FileMode: 0755`` means, never 493.  Everywhere else it is the int."""

    written: str


class WrittenFloat(float):
    """``WrittenInt``'s float: ``1.10``, ``1.0``, ``+1.5``, ``1_000.5`` (``written``), read as 1.1, 1.0, ..."""

    written: str


def _compared_text(number) -> str:
    """The text a number compares by, as ``values.leaves`` writes one (this layer cannot import it)."""
    if isinstance(number, float):
        return str(int(number)) if number.is_integer() else repr(number)
    return str(number)


def _keeping_text(construct, kind):
    """``construct`` (the safe loader's for ints or floats), keeping the text of a plain scalar whose
    value does not compare by it (``values.leaves``); a canonical one (4104, -5, 1.5) is the number alone,
    as before, and so is a quoted one with an explicit tag (``!!int '0755'``)."""
    def construct_number(loader, node):
        number = construct(loader, node)
        if node.style or _compared_text(number) == node.value:  # the C parser's plain style is ''
            return number
        kept = kind(number)
        kept.written = node.value
        return kept
    return construct_number


def written(value) -> str:
    """A scalar's text as its author wrote it: a ``WrittenInt``'s own text (an id ``0x10`` stays
    ``0x10``, not 16), any other value's ``str``."""
    return getattr(value, "written", None) or str(value)


class RuleLoader(UniqueKeyLoader):
    """``UniqueKeyLoader`` keeping the text of numbers written in a form YAML rewrites (``WrittenInt``)."""


_SAFE = yaml.constructor.SafeConstructor
RuleLoader.add_constructor("tag:yaml.org,2002:int", _keeping_text(_SAFE.construct_yaml_int, WrittenInt))
RuleLoader.add_constructor("tag:yaml.org,2002:float", _keeping_text(_SAFE.construct_yaml_float, WrittenFloat))

# What a plain scalar's text resolves to, as the loaders read it.
_RESOLVER = yaml.resolver.Resolver()


def plain_is_number(text: str) -> bool:
    """Whether YAML reads ``text``, written unquoted, as a number (``12``, ``0755``, not ``09`` or ``1e3``)."""
    tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))
    return tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class YamlProblem(ValueError):
    """Why a text is not YAML the filter can read, in one line (``str``)."""


def load_yaml(text, every: bool = False, written_numbers: bool = False):
    """The YAML document of ``text`` (``every``: the list of its documents, empty ones left out;
    ``written_numbers``: numbers YAML rewrites keep their text, ``WrittenInt``),
    or YamlProblem: its syntax, a key given twice, a scalar YAML resolves but Python cannot
    build (an integer of 5,000 digits, the date 2001-13-45), or a value its explicit tag cannot read
    (``!!timestamp tomorrow``), which would otherwise escape as a traceback."""
    loader = RuleLoader if written_numbers else UniqueKeyLoader
    try:
        if every:
            return [d for d in yaml.load_all(text, Loader=loader) if d is not None]
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(error, "problem", None) or (str(error).splitlines() or [type(error).__name__])[0]
        raise YamlProblem(f"{where}: {' '.join(str(problem).split())}"[:240]) from None
    except (ValueError, OverflowError, RecursionError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise YamlProblem(f": {reason[:200]}") from None
    except (AttributeError, KeyError, IndexError, TypeError):  # PyYAML's constructors, on `!!bool maybe`, `!!map [a]`
        raise YamlProblem(": a value its explicit tag (such as !!bool or !!timestamp) cannot read") from None


def expanded(document):
    """``(value, depth)`` of every value and key of ``document`` with its YAML aliases expanded (a shared
    object met each time it is named, as every later walk meets it), depth first.  A small file may alias
    a huge tree ("billion laughs") or itself: the walk is iterative and lazy, so a caller that stops at its
    first limit passed pays at most its allowance."""
    stack = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        yield value, depth
        if isinstance(value, (dict, list, tuple, set)):
            items = value.items() if isinstance(value, dict) else ((item,) for item in value)
            for pair in items:
                stack.extend((item, depth + 1) for item in pair)


def expanded_size_problem(document, max_nodes: int, max_chars: int, max_depth: int):
    """Why ``document`` is too large once its YAML aliases are expanded (``expanded``), or None."""
    chars = 0
    for nodes, (value, depth) in enumerate(expanded(document), 1):
        if nodes > max_nodes:
            return f"more than {max_nodes:,} values and keys (YAML aliases count each time they are used)"
        if isinstance(value, str):
            chars += len(value)
            if chars > max_chars:
                return f"more than {max_chars >> 20} MiB of text (YAML aliases count each time they are used)"
        elif depth >= max_depth and isinstance(value, (dict, list, tuple, set)):
            return f"nesting deeper than {max_depth} levels"
    return None
