"""Events that arrive as Windows' event XML inside a text: Sysmon for Linux's syslog lines, and
Fluent Bit's ``winevtlog`` input with ``Render_Event_As_XML``.

Sysmon for Linux writes each event to syslog as one line of event XML after the syslog
header (``... sysmon: <Event><System>...</System><EventData><Data Name="Image">...``).
Collectors forward that line as text in a JSON record: Fluent Bit's ``tail`` in ``log``, its
syslog parser and Vector's ``file`` source in ``message``, journald's in ``MESSAGE``.  Such a
record is read as the event its XML holds, in the shape of the ``evtx`` profile
(``Event.System``, ``Event.EventData``), so that the channel ``Linux-Sysmon/Operational`` routes it
to the rules of ``product: linux``.  The syslog file itself, read with ``cat``, is lines that are not JSON:
such a line is read as its XML's event too (``event_in_line``, asked by ``io.stream`` of a line that
failed to parse).

Fluent Bit's ``winevtlog`` with ``Render_Event_As_XML`` writes the whole event (``EvtRenderEventXml``:
System, EventData or UserData) as one XML text in the record's ``System`` key, beside ``Message`` (the
rendered description) and, by its other options, ``StringInserts`` and an ``EventData`` map
(``plugins/in_winevtlog/pack.c``, ``winevtlog_pack_xml_event``).  Such a record is read as the XML's
event too, with the record's ``Message`` beside it: the one text the XML does not hold, which the
record's of every other Fluent Bit mode is, for keyword searches and a rule's ``Message``.
``StringInserts`` and the map are the XML's own data again (by position, by name) and are left out, as
is anything else of the record (``date``, the time Fluent Bit read it).

Only a line whose bytes hold ``<Event`` (``carries_xml``; JSON may write ``<`` as ``\\u003c``) is
looked at, so every other line costs one byte search.  The XML is untrusted: a document type
declaration, comment, CDATA section or processing instruction is refused before parsing (no entity
can be declared, so none can expand), and the parse stops at the first element nested deeper than
``MAX_DEPTH`` or past ``MAX_ELEMENTS``.  A refused text is an ``XmlEventProblem``; the record is then
read as it is.  A character XML 1.0 cannot hold, raw or as a reference, is no reason to refuse one
(``_stood_in``): pugixml writes a command line's ESC as ``&#27;``.

Why the raw-byte prefilter stays sound.  A value of the event is the text of one element (or one
attribute), which, with none of the constructs above, is a piece of the JSON-decoded string as it
is, except for entity and character references (``&amp;``, ``&#99;``) and the whitespace XML
normalises in attribute values (a tab or line break read as a space).  A line that carries XML and
holds an ``&`` or one of those characters, in any JSON spelling, in its XML's text (``hides_text``: from
the first ``<Event`` to the end of the string holding the last; not in ``Message``, whose CR LF every
Windows event has) goes to the full path; in every other such line each value is a piece of a JSON
string, which the prefilter's own argument covers.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple
from xml.etree import ElementTree

from .fields import FieldResolver, FramedEvent, builtin_profiles

# Where a line may carry an event's XML: what the filter looks for in the raw bytes (JSON may write
# ``<`` as an escape), the prefilter and the reading alike.
MARKS = (b"<Event", b"\\u003cEvent", b"\\u003CEvent")
# What XML decoding may turn into text the raw bytes do not hold (see the module docstring): an
# entity or character reference, and a tab, CR or LF in an attribute value (read as a space); as raw
# bytes, and as JSON escapes (``_ESCAPED_HIDING``).
HIDING = (b"&", b"\t", b"\r", b"\n")
# A JSON escape of one of those, where a backslash starts an escape (``_hiding_in_xml``).
_ESCAPED_HIDING = re.compile(rb"\\(?:[tnr]|u00(?:0[9aAdD]|26))")

MAX_CHARS = 1 << 20  # events are a few KiB: a larger text is not parsed
MAX_DEPTH = 16  # Event / UserData / <element> / <field>: four deep at most
MAX_ELEMENTS = 1024  # Sysmon writes about forty, Windows a few dozen
_FEED = 1 << 14  # characters given to the parser at a time
_REFUSED = ("<!", "<?")  # a DOCTYPE (entities), a comment or CDATA section, a processing instruction


# Characters XML 1.0 cannot hold, which writers put in values all the same: pugixml (Sysmon for Linux's
# outputxml.cpp) spells a C0 control as ``&#27;``, so an ESC or \\x01 in a command line made expat refuse the
# whole event, read then by no rule.  When a parse fails, each (raw or a reference) is written as ``_SHIFT`` and
# a code of its own, ``_SHIFT`` itself too, and the text is parsed again, ``_restored`` turning the pairs back in
# every text and attribute value.  Every ``_SHIFT`` then starts a pair, so each pair is found by a plain
# ``replace``, ``_SHIFT``'s own last (C speed: a line of a million of them takes 30 ms, not a second).
_UNWRITABLE = [code for code in range(32) if code not in (9, 10, 13)] + [0xFFFE, 0xFFFF]
_SHIFT = "\ue000"  # a private-use character: XML holds it, Windows and Sysmon never write it
_STAND_INS = {code: _SHIFT + chr(0xE001 + at) for at, code in enumerate(_UNWRITABLE + [ord(_SHIFT)])}
_PAIRS_BACK = [(stand_in, chr(code)) for code, stand_in in _STAND_INS.items()]  # _SHIFT's own last
_REFERENCE = re.compile("&#(?:x0*([0-9a-fA-F]{1,6})|0*([0-9]{1,7}));")


def _stand_in(found) -> str:
    """The pair written for a reference to a character XML cannot hold (or to ``_SHIFT``); any other as it is."""
    hexadecimal, decimal = found.groups()
    return _STAND_INS.get(int(hexadecimal, 16) if hexadecimal else int(decimal), found.group())


def _stood_in(text: str) -> str:
    return _REFERENCE.sub(_stand_in, text.translate(_STAND_INS)) if "&#" in text else text.translate(_STAND_INS)


def _restored(text: str) -> str:
    if _SHIFT in text:
        for pair, character in _PAIRS_BACK:
            text = text.replace(pair, character)
    return text


class XmlEventProblem(ValueError):
    """A text that starts an event's XML but is not one the filter reads."""


# ``<`` escaped (``MARKS``), its backslash included: the text ``u003cEvent`` alone is none, and the prefilter,
# which finds the lines carrying XML by ``MARKS``, does not take it for one.  The regex's literal-prefix
# search: 2x ``in``'s speed here.
_ESCAPED_MARK = re.compile(rb"\\u003[cC]Event")


def carries_xml(raw: bytes) -> bool:
    """Whether a raw line may carry an event's XML: the only lines ``carried_event`` reads.  Asked of
    every line the filter parses: a ``<`` (memchr) first, since searching a 1.5 KB line for ``<Event``
    or ``u003cEvent`` with ``in`` took 1.3-1.6 us each."""
    return b"<" in raw and b"<Event" in raw or _ESCAPED_MARK.search(raw) is not None


def hides_text(raw: bytes) -> bool:
    """Whether XML decoding may give this line's event text its raw bytes do not hold: it then goes to
    the prefilter's full path (``Prefilter``, ``RuleIndex``), as a line holding a JSON escape does."""
    if not carries_xml(raw) or not (any(mark in raw for mark in HIDING) or _ESCAPED_HIDING.search(raw)):
        return False  # the search first: it finds a backslash faster than ``in`` finds ``\\t``
    return _hiding_in_xml(raw)


# ``<Event`` in any JSON spelling, each character as itself or a ``\\u`` escape: a line holding one raw mark
# (``carries_xml``) is read from the first text whose decoded value holds ``<Event``, which may spell it
# otherwise (``<\\u0045vent``), before the raw mark.
_ANY_MARK = re.compile(rb"(?:<|\\u003[cC])(?:E|\\u0045)(?:v|\\u0076)(?:e|\\u0065)(?:n|\\u006[eE])(?:t|\\u0074)")


def _hiding_in_xml(raw: bytes) -> bool:
    """Whether an ``&``, tab, CR or LF, as itself or as a JSON escape (``_ESCAPED_HIDING``), is where an
    event's XML may be: from the first mark, in any JSON spelling (``_ANY_MARK``), to the end of the JSON string
    that holds the last one.  Elsewhere (``Message``, whose Windows text breaks its lines with CR LF, the syslog
    header) the text is JSON's alone.
    A backslash JSON writes doubled starts no escape (``\\\\temp`` in a Windows path is no tab):
    ``replace`` takes the pairs off each run of backslashes from its start, as JSON reads them, then the
    escaped quotes, so every quote left ends a string.  Linear in the line, a run of a million backslashes
    included."""
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    if b"\\u" in text:  # an escape may spell any letter of a mark (``_ANY_MARK``)
        found = [spelled.start() for spelled in _ANY_MARK.finditer(text)]
    else:
        found = [at for at in (text.find(MARKS[0]), text.rfind(MARKS[0])) if at >= 0]
    if not found:
        return False  # each mark was an escaped backslash's ``\\u003cEvent``: no XML is read
    end = text.find(b'"', max(found))
    xml = text[min(found):len(text) if end < 0 else end]
    return any(mark in xml for mark in HIDING) or _ESCAPED_HIDING.search(xml) is not None


def event_to_read(raw: bytes, event: dict, resolver: Optional[FieldResolver] = None) -> Tuple[dict, Optional[str]]:
    """The event the filter reads for a line, ``event`` its JSON: that whose XML the line carries
    (``carried_event``, ``resolver`` the filter's), else ``event`` itself; and, when the XML was refused, why
    (the line is then read as it is).  The XML's event of a record in a Fluent Bit frame has the frame's
    time where it has no ``TimeCreated`` of its own, as the record would (``FramedEvent``).  A line in the
    evtx shape already is not searched: a dictionary lookup, then a ``<`` (memchr), is every other line's
    whole cost."""
    if event.get("Event").__class__ is dict or not carries_xml(raw):
        return event, None
    try:
        found = carried_event(event, resolver)
    except XmlEventProblem as problem:
        return event, str(problem)
    if found is None:
        return event, None
    frame_time = getattr(event, "frame_time", None)
    return (found if frame_time is None else FramedEvent(found, frame_time)), None


def carried_event(event: dict, resolver: Optional[FieldResolver] = None) -> Optional[dict]:
    """The event whose XML a top-level text of ``event`` holds (from ``<Event`` on: the syslog header
    before it is the collector's), as the ``evtx`` profile reads it; None when no text holds one (an
    ``<Event`` with no ``<System`` after it, in a web log's URL say, is no event's XML: read as it is).
    A text ``System`` is Fluent Bit's ``Render_Event_As_XML``: only it is looked at, and the record's
    ``Message`` goes with its event (``rendered_event``); else only the texts collectors carry a line in
    (``CARRIERS``).  A record that names an EventID of its own, as
    ``resolver`` (by default the built-in shapes') reads it, is an event itself (``FieldResolver.own_event``):
    its other texts are its data, never read as an event's XML.
    Only for a line that ``carries_xml``.  XmlEventProblem when the text is not XML the filter reads."""
    if event.get("Event").__class__ is dict:
        return None  # the evtx shape already
    system = event.get("System")
    if system.__class__ is str:
        return rendered_event(event, system)
    if (resolver or _builtin_resolver()).own_event(event):
        return None
    for key in CARRIERS:
        value = event.get(key)
        if value.__class__ is str:
            found = event_in_text(value)
            if found is not None:
                return found
    return None


# The texts collectors carry a line in: Fluent Bit's tail ``log``; Vector's file source, syslog parsers,
# Filebeat, Logstash ``message``; rsyslog's JSON templates ``msg``; journald ``MESSAGE``.  Any other text
# is the record's own data, which an attacker may write: a web server's User-Agent ending in an event's XML
# made the record read as that forged event, and its request went unmatched.
CARRIERS = ("log", "message", "msg", "MESSAGE")


_BUILTIN = []  # the built-in shapes' resolver, made on first need


def _builtin_resolver() -> FieldResolver:
    if not _BUILTIN:
        _BUILTIN.append(FieldResolver(builtin_profiles()))
    return _BUILTIN[0]


def event_in_line(raw: bytes) -> Optional[dict]:
    """The event whose XML a line that is not JSON holds (a line of Sysmon for Linux's own syslog file),
    as the evtx profile reads it; None when the line ``carries_xml`` not, is not UTF-8, or holds no event's
    XML.  XmlEventProblem when that XML is not one the filter reads."""
    if not carries_xml(raw):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return event_in_text(text)


def rendered_event(record: dict, system: str) -> Optional[dict]:
    """A Fluent Bit ``Render_Event_As_XML`` record's event: its ``System`` text's XML, in the evtx shape,
    with the record's ``Message`` (see the module docstring); None when that text holds no event's XML."""
    found = event_in_text(system)
    if found is not None and "Message" in record:
        found["Message"] = record["Message"]
    return found


def event_in_text(text: str) -> Optional[dict]:
    """``parse_event_xml`` of the ``<Event`` element in ``text``, if one with ``<System`` after it is there:
    a collector's text, or a line of Sysmon for Linux's own syslog file."""
    start = _element_start(text)
    if start >= 0 and text.find("<System", start) >= 0:  # else a text that names no event's XML
        return parse_event_xml(text[start:].rstrip())
    return None


def _element_start(text: str) -> int:
    """Where ``<Event`` opens an element in ``text`` (not ``<EventData``); -1 when nowhere."""
    at = text.find("<Event")
    while at >= 0:
        following = text[at + 6:at + 7]
        if following in (">", "/", " ", "\t", "\r", "\n"):
            return at
        at = text.find("<Event", at + 6)
    return -1


def parse_event_xml(text: str) -> dict:
    """``{"Event": {"System": ..., "EventData": ...}}`` of one event's XML, as evtx renders it:
    an element's attributes under ``#attributes`` (its text then under ``#text``), named ``Data``
    as keys of ``EventData`` (a name given twice: the list of its values), unnamed ones as the list
    ``Data.#text``, namespaces left out.  XmlEventProblem for what is refused or malformed."""
    if len(text) > MAX_CHARS:
        raise XmlEventProblem(f"event XML of more than {MAX_CHARS >> 20} MiB; not read")
    for refused in _REFUSED:
        if refused in text:
            raise XmlEventProblem("event XML with a DOCTYPE, comment, CDATA section or processing instruction "
                                  "(neither Windows nor Sysmon writes one); not read")
    try:
        root = _parsed(text, None)
    except ElementTree.ParseError as error:
        stood_in = _stood_in(text)  # only now: a search of every text cost a fifth of its parse
        if stood_in == text:
            raise XmlEventProblem(f"event XML not well-formed ({error}); not read") from None
        try:
            root = _parsed(stood_in, _restored)
        except ElementTree.ParseError as error:
            raise XmlEventProblem(f"event XML not well-formed ({error}); not read") from None
    name, value = root
    if name != "Event" or value.__class__ is not dict or value.get("System").__class__ is not dict:
        raise XmlEventProblem("event XML without <Event><System>; not read")
    return {"Event": value}


def _parsed(text: str, restored) -> tuple:
    """The root (name, value) of ``text``, ``restored`` undoing its stand-ins (``_stood_in``) if it has them."""
    parser = ElementTree.XMLParser(target=_Builder(restored))
    try:
        for at in range(0, len(text), _FEED):  # a problem found stops the parse within a piece
            parser.feed(text[at:at + _FEED])
        return parser.close()
    except UnicodeEncodeError:  # a lone surrogate (JSON's ``\\ud800``): the parser takes UTF-8 only
        raise XmlEventProblem("event XML holding a lone surrogate, which no XML text can; not read") from None


class _Builder:
    """An ElementTree parser target that builds the evtx form as it goes, in bounded depth."""

    def __init__(self, restored=None):
        self.restored = restored  # what undoes the stand-ins of characters XML cannot hold, when there are some
        self.stack = []  # per open element: [name, attributes, children (name, value), texts]
        self.elements = 0
        self.root = None

    def start(self, tag: str, attributes: dict) -> None:
        self.elements += 1
        if len(self.stack) >= MAX_DEPTH:
            raise XmlEventProblem(f"event XML nested deeper than {MAX_DEPTH} elements; not read")
        if self.elements > MAX_ELEMENTS:
            raise XmlEventProblem(f"event XML of more than {MAX_ELEMENTS} elements; not read")
        if self.restored is not None:
            attributes = {name: self.restored(value) for name, value in attributes.items()}
        self.stack.append([_local(tag), {_local(k): v for k, v in attributes.items()}, [], []])

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1][3].append(text)

    def end(self, _tag: str) -> None:
        name, attributes, children, texts = self.stack.pop()
        if children:  # text between child elements is layout, not a value
            value = _data_map(children) if name in ("EventData", "UserData") else _object(children)
        else:
            value = ("".join(texts) if self.restored is None else self.restored("".join(texts))) if texts else None
        if attributes:
            value = {"#attributes": attributes, **({} if value is None else {"#text": value}
                                                    if value.__class__ is str else value)}
        if self.stack:
            self.stack[-1][2].append((name, value))
        else:
            self.root = (name, value)

    def close(self):
        return self.root


def _local(name: str) -> str:
    """A tag or attribute name without its namespace (``{http://...}Event`` -> ``Event``)."""
    return name.rsplit("}", 1)[-1]


def _object(children: list) -> dict:
    """Child elements by name; a name given twice holds the list of its values."""
    found = {}
    for name, value in children:
        found.setdefault(name, []).append(value)
    return {name: values[0] if len(values) == 1 else values for name, values in found.items()}


def _data_map(children: list) -> dict:
    """EventData's ``<Data Name="Image">/usr/bin/curl</Data>`` as ``{"Image": "/usr/bin/curl"}``."""
    named, unnamed, other = {}, [], []
    for name, value in children:
        if name == "Data" and value.__class__ is dict and set(value) <= {"#attributes", "#text"} \
                and "Name" in value["#attributes"]:
            key, text = value["#attributes"]["Name"], value.get("#text", "")
            if key in named:
                named[key] = (named[key] if named[key].__class__ is list else [named[key]]) + [text]
            else:
                named[key] = text
        elif name == "Data" and (value is None or value.__class__ is str):
            unnamed.append(value or "")
        else:
            other.append((name, value))
    found = _object(other)
    found.update(named)
    if unnamed:
        found["Data"] = {"#text": unnamed}
    return found
