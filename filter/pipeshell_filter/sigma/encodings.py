"""The encoding modifiers as plain string transforms: windash, UTF-16, base64, base64offset.

Sigma defines them as rewrites of the rule value ("the value is encoded with Base64"), so
they run once, at compile time; the event text is then compared with the results like any
other value.  Bytes made by a UTF-16 step are carried as a str of one character per byte
(code points 0-255): that is how such bytes stand in an event string, and what a following
base64 step encodes back into bytes.
"""

from __future__ import annotations

import base64

# |windash: each of these in a value stands for any of them (hyphen, slash, en dash, em dash,
# horizontal bar): Windows programs take their flags with a dash or a slash, and pasted or
# obfuscated command lines use the typographic dashes.
DASHES = "-/\u2013\u2014\u2015"

UTF16 = ("utf16le", "utf16be", "utf16", "wide")
BASE64 = ("base64", "base64offset")

BOM = "\xff\xfe"  # |utf16: UTF-16LE's byte order mark, as byte characters


def utf16(text: str, name: str) -> str:
    """``text`` in UTF-16 (``name`` one of UTF16; ``wide`` is ``utf16le``, ``utf16`` adds the
    little-endian byte order mark), as byte characters."""
    codec = "utf-16-be" if name == "utf16be" else "utf-16-le"
    data = text.encode(codec, "surrogatepass").decode("latin-1")
    return BOM + data if name == "utf16" else data


def to_bytes(text: str, byte_chars: bool) -> bytes:
    """What a base64 step encodes: byte characters as they are, text as UTF-8."""
    return text.encode("latin-1") if byte_chars else text.encode("utf-8", "surrogatepass")


def base64_plain(data: bytes) -> str:
    """|base64: the value's own encoding, padding included."""
    return base64.b64encode(data).decode("ascii")


# Base64 turns each group of 3 bytes into 4 characters of 6 bits.  Inside a longer text the value
# starts 0, 1 or 2 bytes into a group; the characters that also carry bits of the unknown
# neighbours are cut: at the start 0, 2 or 3 of them (by that shift), at the end 0, 3 or 2
# (by how many of the value's bytes the last group holds: 0, 1 or 2 past a whole group).
_CUT_START = (0, 2, 3)
_CUT_END = (0, 3, 2)


def base64_offsets(data: bytes) -> tuple:
    """|base64offset: the three forms ``data`` takes inside any base64 text, one per shift.
    ValueError when a form would be empty (a value shorter than 2 bytes), since an empty
    form would be found in every text."""
    forms = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode("ascii")
        end = len(encoded) - _CUT_END[(shift + len(data)) % 3]
        forms.append(encoded[_CUT_START[shift]:end])
    if not all(forms):
        raise ValueError("|base64offset needs a value of at least 2 bytes")
    return tuple(forms)
