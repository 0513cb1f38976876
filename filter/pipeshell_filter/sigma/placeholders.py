"""``|expand``: ``%name%`` placeholders in rule values, filled from a placeholders file.

Sigma leaves a placeholder's meaning to the site (``%Workstations%`` are this network's
workstations) and says a tool that cannot fill one must reject the rule.  The file is a YAML
mapping from name to a string or a list of strings; each string is a Sigma value (wildcards
work) and a list means any of them, so a value with a placeholder becomes several values,
OR-ed (an empty list: none, so the value matches nothing).  ``\\%`` writes a plain percent sign.
"""

from __future__ import annotations

import string
from typing import Callable, Mapping, Optional


from ..dirwalk import FileProblem, read_bounded
from ..yamlfile import YamlProblem, load_yaml

# A placeholder name: what SigmaHQ's rules use (``%DC-MACHINE-NAME%``, ``%dc_ip_addresses%``).
# Anything else between two percent signs is plain text (``100%`` or URL escapes like ``%20``).
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_-.")
# One rule value may not expand into more values than this (several placeholders multiply).
MAX_VALUES = 10_000


class PlaceholderError(ValueError):
    """A placeholder that cannot be filled, or a placeholders file that cannot be used; one line."""


def load_placeholders(path: str) -> dict:
    """The placeholders file at ``path``: name -> tuple of values."""
    try:
        data = read_bounded(path, "placeholders file")
    except FileProblem as problem:
        raise PlaceholderError(str(problem)) from None
    try:
        loaded = load_yaml(data)
    except YamlProblem as problem:
        raise PlaceholderError(f"placeholders file {path} is not valid YAML{problem}") from None
    return placeholders_from(loaded, f"placeholders file {path}")


def placeholders_from(loaded, where: str = "placeholders") -> dict:
    """A loaded mapping checked and normalised: keys may be written with or without the percent signs."""
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise PlaceholderError(f"{where}: must be a mapping of placeholder name to a string or a list of strings")
    table = {}
    for key, value in loaded.items():
        name = str(key)
        if len(name) > 2 and name.startswith("%") and name.endswith("%"):
            name = name[1:-1]
        if not name or not _NAME_CHARS.issuperset(name):
            raise PlaceholderError(f"{where}: {str(key)[:80]!r} is not a placeholder name (letters, digits, _ - .)")
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in items):
            raise PlaceholderError(f"{where}: placeholder {name!r} must be a string or a list of strings")
        table[name] = tuple(item if isinstance(item, str) else str(item) for item in items)
    return table


def expand(value: str, placeholders: Optional[Mapping], quote: Optional[Callable[[str], str]] = None) -> list:
    """The values ``value`` stands for once its placeholders are filled (one when it has none).
    ``quote``: how a placeholder's value is written into the rule's text (each value is a Sigma
    value of its own: written out with its escapes, a trailing backslash must not escape the
    rule's next wildcard)."""
    if placeholders is None:
        raise PlaceholderError("|expand needs --placeholders FILE")
    pieces = [""]  # text, then alternately a placeholder's values and text
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and value[i + 1:i + 2] == "%":
            pieces[-1] += "%"
            i += 2
        elif ch == "\\" and value[i + 1:i + 2] in ("\\", "*", "?"):
            pieces[-1] += value[i:i + 2]  # an escape of the wildcard syntax: kept for it
            i += 2
        elif ch == "%" and (end := value.find("%", i + 1)) > i + 1 and _NAME_CHARS.issuperset(value[i + 1:end]):
            name = value[i + 1:end]
            if name not in placeholders:
                raise PlaceholderError(f"placeholder %{name}% is not defined in the placeholders file")
            pieces += [placeholders[name] if quote is None else tuple(map(quote, placeholders[name])), ""]
            i = end + 1
        else:
            pieces[-1] += ch
            i += 1
    values = [""]
    for n, piece in enumerate(pieces):
        if n % 2 == 0:
            values = [v + piece for v in values]
        else:
            if len(values) * len(piece) > MAX_VALUES:
                raise PlaceholderError(f"|expand gives more than {MAX_VALUES} values")
            values = [v + item for v in values for item in piece]
    return values
