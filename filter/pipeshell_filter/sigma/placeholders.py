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
# Nor into more text than a rule file may hold: 10 values of 1.6 MB written '%a%%a%%a%%a%' made 10,000 of 6.4 MB.
MAX_CHARS = 16 << 20
# A placeholders file's values and their text, YAML aliases counted each time they are used: 2,000 names
# aliasing one list of 100,000 (a file of 700 KB) took 23 s and 1.6 GB before any rule was read.
MAX_FILE_VALUES = 1_000_000
MAX_FILE_CHARS = 16 << 20


class PlaceholderError(ValueError):
    """A placeholder that cannot be filled, or a placeholders file that cannot be used; one line."""


def load_placeholders(path: str) -> dict:
    """The placeholders file at ``path``: name -> tuple of values."""
    try:
        data = read_bounded(path, "placeholders file")
    except FileProblem as problem:
        raise PlaceholderError(str(problem)) from None
    try:
        loaded = load_yaml(data, written_numbers=True)  # 0755 is the value 0755, as in a rule (YAML 1.1: 493)
    except YamlProblem as problem:
        raise PlaceholderError(f"placeholders file {path} is not valid YAML{problem}") from None
    return placeholders_from(loaded, f"placeholders file {path}")


def placeholders_from(loaded, where: str = "placeholders") -> dict:
    """A loaded mapping checked and normalised: keys may be written with or without the percent signs."""
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise PlaceholderError(f"{where}: must be a mapping of placeholder name to a string or a list of strings")
    table, values_left, chars_left = {}, MAX_FILE_VALUES, MAX_FILE_CHARS
    for key, value in loaded.items():
        name = str(key)
        if len(name) > 2 and name.startswith("%") and name.endswith("%"):
            name = name[1:-1]
        if not name or not _NAME_CHARS.issuperset(name):
            raise PlaceholderError(f"{where}: {str(key)[:80]!r} is not a placeholder name (letters, digits, _ - .)")
        if name in table:  # ``'%a%'`` and ``a``: two YAML keys, one placeholder (the last won, in silence)
            raise PlaceholderError(f"{where}: placeholder {name!r} is given twice (with and without its percent signs)")
        items = value if isinstance(value, list) else [value]
        values_left -= len(items)
        if values_left < 0:
            raise PlaceholderError(f"{where}: more than {MAX_FILE_VALUES:,} values (YAML aliases count each time "
                                   "they are used)")
        if not all(isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in items):
            raise PlaceholderError(f"{where}: placeholder {name!r} must be a string or a list of strings")
        table[name] = tuple(item if isinstance(item, str) else getattr(item, "written", None) or str(item)
                            for item in items)
        chars_left -= sum(map(len, table[name]))
        if chars_left < 0:
            raise PlaceholderError(f"{where}: more than {MAX_FILE_CHARS >> 20} MiB of text (YAML aliases count "
                                   "each time they are used)")
    return table


def expand(value: str, placeholders: Optional[Mapping], quote: Optional[Callable[[str], str]] = None) -> list:
    """The values ``value`` stands for once its placeholders are filled (one when it has none).
    ``quote``: how a placeholder's value is written into the rule's text (each value is a Sigma
    value of its own: written out with its escapes, a trailing backslash must not escape the
    rule's next wildcard)."""
    if placeholders is None:
        raise PlaceholderError("|expand needs --placeholders FILE")
    pieces = [""]  # text, then alternately a placeholder's values and text
    i, unread = 0, None  # unread: the first %...% that pySigma would take for a placeholder and we do not
    escaped = None  # the first \\%name%: pySigma reads a backslash then the placeholder (``C:\\Users\\%admins%``)
    while i < len(value):
        ch = value[i]
        if ch == "\\" and value[i + 1:i + 2] == "%":
            end = value.find("%", i + 2)
            if escaped is None and end > i + 2 and _NAME_CHARS.issuperset(value[i + 2:end]):
                escaped = value[i:end + 1]
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
            if ch == "%" and unread is None and (end := value.find("%", i + 1)) > i + 1 \
                    and "\\" not in value[i + 1:end]:
                unread = value[i:end + 1]
            pieces[-1] += ch
            i += 1
    if unread is not None and len(pieces) == 1:  # |expand asked for one; plain text matched in silence
        raise PlaceholderError(f"{unread[:80]!r} is no placeholder name (letters, digits, _ - .) and the value has "
                               "no other placeholder: rename it, or write \\% for a plain percent sign")
    if escaped is not None and len(pieces) == 1:
        raise PlaceholderError(f"|expand finds no placeholder: {escaped[:80]!r} is an escaped percent sign then text "
                               "(pySigma reads a backslash then the placeholder); write \\\\% for a backslash "
                               "before a placeholder")
    values, chars = [""], 0  # chars: the values' text, summed, worked out before they are made
    for n, piece in enumerate(pieces):
        if n % 2 == 0:
            chars += len(values) * len(piece)
        else:
            if len(values) * len(piece) > MAX_VALUES:
                raise PlaceholderError(f"|expand gives more than {MAX_VALUES} values")
            chars = chars * len(piece) + len(values) * sum(map(len, piece))
        if chars > MAX_CHARS:
            raise PlaceholderError(f"|expand gives more than {MAX_CHARS >> 20} MiB of text")
        values = [v + piece for v in values] if n % 2 == 0 else [v + item for v in values for item in piece]
    return values
