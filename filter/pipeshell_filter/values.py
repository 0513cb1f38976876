"""How a JSON value compares as text: its leaf strings, and case folding.

Shared by the rule language (what a rule value becomes) and by events (what a
field value becomes), so both sides of every comparison are made the same way.
"""

from __future__ import annotations

from typing import Iterator, Optional

MISSING = object()  # a field the event does not have (distinct from JSON null)


def leaves(value) -> Iterator[str]:
    """Every scalar inside a JSON value, as the string a rule compares with, in document order.

    An XML-as-JSON element ``{"#attributes": ..., "#text": x}`` stands for x:
    attributes are metadata (``Qualifiers="0"`` must not match ``EventID: 0``).
    Walked with a stack of its own, not by recursion: the JSON parser accepts
    nesting a thousand deep, deeper than Python's recursion allows.
    """
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, bool):
            yield "true" if value else "false"
        elif isinstance(value, int):
            yield str(value)
        elif isinstance(value, float):
            yield str(int(value)) if value.is_integer() else repr(value)
        elif isinstance(value, dict):
            if "#text" in value:
                stack.append(value["#text"])
            else:
                stack.extend(item for key, item in reversed(value.items()) if key != "#attributes")
        elif isinstance(value, list):
            stack.extend(reversed(value))


def _attributes(key: str) -> bool:
    """An XML element's attributes as XML-as-JSON writes them: ``#attributes``, or ``Name_attributes``
    beside the element (evtx_dump's separate-attributes variant)."""
    return key == "#attributes" or key.endswith("_attributes")


def _declaration(key) -> bool:
    """An XML namespace declaration: the XML's syntax, the same URL on every Windows event."""
    return key == "xmlns" or key.startswith("xmlns:")


def event_texts(event) -> Iterator[str]:
    """Every scalar of a whole event, as a keyword search reads it: ``leaves``, with the XML attributes'
    values too (a Provider Name, an EventID's Qualifiers, a TimeCreated SystemTime).  They are text of
    the event, and keywords must not depend on the collector's shape: Winlogbeat writes the provider as
    ``winlog.provider_name`` and evtx_dump's other variant as ``Provider_attributes``, plain keys that
    were searched already.  Namespace declarations (``xmlns``) are left out: syntax, not the event's."""
    stack = [event]
    while stack:
        value = stack.pop()
        if value.__class__ is str:
            yield value
        elif isinstance(value, dict):
            if "attributes" in "\0".join(value):  # an XML element's: one C call on the keys rules out the others
                for key, item in reversed(value.items()):
                    if _attributes(key) and isinstance(item, dict):
                        stack.extend(inner for name, inner in reversed(item.items()) if not _declaration(name))
                    else:
                        stack.append(item)
            else:
                stack.extend(reversed(value.values()))
        elif isinstance(value, list):
            stack.extend(reversed(value))
        elif value is not None:
            yield next(leaves(value))


def first_leaf(value) -> Optional[str]:
    return next(leaves(value), None)


def fold(text: str) -> str:
    """Caseless form of a string: full Unicode case folding, applied to both sides.

    ``str.casefold`` is context-free (a final sigma folds like any sigma) and is
    what the prefilter's soundness argument is built on (see ``io.prefilter``).
    """
    return text.casefold()


def one_line(text: str) -> str:
    """``text`` with its control characters (line breaks, escape sequences, bidirectional overrides)
    written as escapes (``\\n``, ``\\x1b``, ``\\u202e``): what goes into a one-line message on stderr
    (a path, a command line, a rule's name) must neither start a line of its own nor drive the terminal."""
    return text if text.isprintable() else "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
