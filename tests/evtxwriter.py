"""Minimal writer for Windows XML Event Log (``.evtx``) files, for tests.

``write_evtx(path, events)`` produces a binary file that real EVTX parsers
(the ``evtx`` package, i.e. the Rust ``evtx`` crate) read back.  It writes a
small, honest subset of the format:

* File header (4096 bytes): ``ElfFile\\0``, first/last chunk number, next
  record id, header size 128, version 3.1, block size 4096, chunk count,
  flags 0 and the CRC32 of the first 120 bytes.
* Chunks of exactly 64 KiB: ``ElfChnk\\0``, first/last record number and id,
  header size 128, offsets of the last record and of the free space, CRC32 of
  the record data and of the header (bytes 0-120 and 128-512).  The common
  string table and the template table are left empty (all zero) because every
  name is written inline.  A record that does not fit into the current chunk
  starts a new one.
* Event records: ``**\\0\\0``, size, record id, FILETIME written time, a
  BinXML fragment and the trailing size copy.
* BinXML: fragment header 1.1, then plain elements (open start element
  without dependency id, as in MS-EVEN6's template-less example; name given
  as a chunk-relative offset that points right behind itself, followed by
  the inline name: next-offset 0, 16-bit hash, length, UTF-16LE, NUL),
  attribute lists, close start / close empty element, end element, and value
  tokens holding UTF-16LE strings or typed values (UInt8, UInt16, Int32,
  UInt32, Int64, UInt64, HexInt64, FILETIME), end of stream.  No templates,
  substitutions, CDATA, entity/character references or arrays.

Each event is a dict::

    {"provider": "Microsoft-Windows-PowerShell", "event_id": 4104,
     "qualifiers": None, "level": 5, "time": "2026-11-01T10:00:00.1234567Z",
     "record_id": 11, "channel": "Microsoft-Windows-PowerShell/Operational",
     "computer": "srv01.example.test",
     "data": {"MessageNumber": "1", "ScriptBlockText": "..."}}

``data`` is either a mapping (``<Data Name="k">v</Data>``) or a list of
unnamed ``<Data>`` values (a ``(name, value)`` pair in it is a named one: a
name may then be given twice, as some Windows events do).  Values may be ``str``, ``int`` (written as Int64),
``Typed(INT32, 1)`` etc., or ``None``/``""`` (empty element).  ``time`` is an
ISO-8601 string (``Z`` or ``+hh:mm``, up to 9 fraction digits, kept to 100 ns),
a ``datetime`` (naive means UTC) or an ``int`` of nanoseconds since the Unix
epoch; it becomes both the record's written time and ``TimeCreated``.
Optional keys: ``qualifiers`` (``None``/absent omits the attribute),
``version``, ``task``, ``opcode``, ``keywords`` (int, HexInt64),
``process_id``, ``thread_id``, ``provider_guid`` (str) and ``user_id`` (a SID
string).  ``record_id`` defaults to the previous id + 1 and must increase.

The System element mirrors Windows' order: Provider, EventID, Version, Level,
Task, Opcode, Keywords, TimeCreated, EventRecordID, Correlation, Execution,
Channel, Computer, Security.  Note the parser prints ``SystemTime`` with 6
fraction digits (microseconds); only the record header timestamp keeps 7.
"""
import datetime as _dt
import re
import struct
import zlib

CHUNK_SIZE = 0x10000
CHUNK_HEADER_SIZE = 512
FILE_HEADER_SIZE = 4096
EVENT_XMLNS = "http://schemas.microsoft.com/win/2004/08/events/event"

# BinXML tokens; MORE marks "has attributes" / "another attribute follows".
T_EOF, T_OPEN, T_CLOSE_START, T_CLOSE_EMPTY, T_END = 0x00, 0x01, 0x02, 0x03, 0x04
T_VALUE, T_ATTR, T_FRAGMENT, MORE = 0x05, 0x06, 0x0F, 0x40

# BinXML value types (MS-EVEN6 / libevtx numbering) and the struct format of
# the fixed-size ones.  Strings (0x01) are a UTF-16 code-unit count + UTF-16LE.
STRING, UINT8, UINT16, INT32, UINT32, INT64, UINT64 = 0x01, 0x04, 0x06, 0x07, 0x08, 0x09, 0x0A
FILETIME, HEXINT64 = 0x11, 0x15
_TYPED = {UINT8: "<B", UINT16: "<H", INT32: "<i", UINT32: "<I", INT64: "<q", UINT64: "<Q",
          FILETIME: "<Q", HEXINT64: "<Q"}

_EPOCH_AS_FILETIME = 116444736000000000  # 1970-01-01 in 100 ns ticks since 1601
_UTC = _dt.timezone.utc
_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?$")


class Typed:
    """A BinXML value of a fixed-size type, e.g. ``Typed(UINT16, 4104)``."""

    def __init__(self, vtype, value):
        self.vtype, self.value = vtype, value


def filetime(t):
    """Convert an ISO string, datetime or Unix-epoch nanoseconds to FILETIME ticks."""
    if isinstance(t, bool):
        raise TypeError("time must be a str, datetime or int")
    if isinstance(t, int):
        return _EPOCH_AS_FILETIME + t // 100
    fraction = 0
    if isinstance(t, str):
        m = _ISO.match(t.strip())
        if not m:
            raise ValueError(f"unsupported timestamp: {t!r}")
        fraction = int((m.group(2) or "").ljust(9, "0")) // 100
        t = _dt.datetime.fromisoformat(m.group(1) + (m.group(3) or "Z").replace("Z", "+00:00"))
    elif isinstance(t, _dt.datetime):
        fraction, t = t.microsecond * 10, t.replace(microsecond=0)
    else:
        raise TypeError("time must be a str, datetime or int")
    if t.tzinfo is None:
        t = t.replace(tzinfo=_UTC)
    seconds = (t - _dt.datetime(1970, 1, 1, tzinfo=_UTC)) // _dt.timedelta(seconds=1)
    return _EPOCH_AS_FILETIME + seconds * 10_000_000 + fraction


def name_hash(name):
    """16-bit hash stored with every BinXML name (hash * 65599 + code unit)."""
    h = 0
    for (unit,) in struct.iter_unpack("<H", name.encode("utf-16-le")):
        h = (h * 65599 + unit) & 0xFFFFFFFF
    return h & 0xFFFF


class _BinXml:
    """Encodes an element tree; ``base`` is the buffer's offset in its chunk."""

    def __init__(self, base):
        self.base, self.buf = base, bytearray([T_FRAGMENT, 1, 1, 0])

    def _name(self, name):
        units = name.encode("utf-16-le")
        here = self.base + len(self.buf) + 4  # inline: offset points right behind itself
        self.buf += struct.pack("<IIHH", here, 0, name_hash(name), len(units) // 2)
        self.buf += units + b"\0\0"

    def _value(self, value):
        if isinstance(value, int) and not isinstance(value, bool):
            value = Typed(INT64, value)
        if isinstance(value, Typed):
            self.buf += bytes([T_VALUE, value.vtype]) + struct.pack(_TYPED[value.vtype], value.value)
            return
        units = str(value).encode("utf-16-le")
        if len(units) // 2 > 0xFFFF:
            raise ValueError("string value longer than 65535 UTF-16 code units")
        self.buf += bytes([T_VALUE, STRING]) + struct.pack("<H", len(units) // 2) + units

    def _patch_size(self, at):
        struct.pack_into("<I", self.buf, at, len(self.buf) - at - 4)

    def element(self, name, attrs=(), content=None):
        """``content``: None/"" (empty element), a value, or a list of child tuples."""
        attrs = [(k, v) for k, v in attrs if v is not None]
        self.buf += bytes([T_OPEN | (MORE if attrs else 0)])
        size_at = len(self.buf)
        self.buf += b"\0\0\0\0"
        self._name(name)
        if attrs:
            list_at = len(self.buf)
            self.buf += b"\0\0\0\0"
            for i, (key, value) in enumerate(attrs):
                self.buf.append(T_ATTR | (MORE if i + 1 < len(attrs) else 0))
                self._name(key)
                self._value(value)
            self._patch_size(list_at)
        if content is None or content == "" or content == []:
            self.buf.append(T_CLOSE_EMPTY)
        else:
            self.buf.append(T_CLOSE_START)
            if isinstance(content, list):
                for child in content:
                    self.element(*child)
            else:
                self._value(content)
            self.buf.append(T_END)
        self._patch_size(size_at)

    def finish(self):
        self.buf.append(T_EOF)
        return bytes(self.buf)


def _event_tree(ev, record_id, ticks):
    """The <Event> element of one event dict as nested (name, attrs, content) tuples."""
    data = ev.get("data") or {}
    if isinstance(data, dict):
        data_elems = [("Data", [("Name", k)], v) for k, v in data.items()]
    else:
        data_elems = [("Data", [("Name", v[0])], v[1]) if isinstance(v, tuple) else ("Data", (), v) for v in data]
    system = [
        ("Provider", [("Name", ev["provider"]), ("Guid", ev.get("provider_guid"))]),
        ("EventID", [("Qualifiers", _opt(UINT16, ev.get("qualifiers")))],
         Typed(UINT16, ev["event_id"])),
        ("Version", (), Typed(UINT8, ev.get("version", 0))),
        ("Level", (), Typed(UINT8, ev.get("level", 4))),
        ("Task", (), Typed(UINT16, ev.get("task", 0))),
        ("Opcode", (), Typed(UINT8, ev.get("opcode", 0))),
        ("Keywords", (), Typed(HEXINT64, ev.get("keywords", 0))),
        ("TimeCreated", [("SystemTime", Typed(FILETIME, ticks))]),
        ("EventRecordID", (), Typed(UINT64, record_id)),
        ("Correlation",),
        ("Execution", [("ProcessID", _opt(UINT32, ev.get("process_id"))),
                       ("ThreadID", _opt(UINT32, ev.get("thread_id")))]),
        ("Channel", (), ev.get("channel", "")),
        ("Computer", (), ev.get("computer", "localhost")),
        ("Security", [("UserID", ev.get("user_id"))]),
    ]
    return ("Event", [("xmlns", EVENT_XMLNS)],
            [("System", (), system), ("EventData", (), data_elems)])


def _opt(vtype, value):
    """A typed attribute value, or None (attribute omitted) when absent."""
    return None if value is None else Typed(vtype, value)


def _record(ev, record_id, offset):
    """Encode one event record located at ``offset`` within its chunk."""
    ticks = filetime(ev["time"])
    xml = _BinXml(offset + 24)
    xml.element(*_event_tree(ev, record_id, ticks))
    body = xml.finish()
    size = 24 + len(body) + 4
    return struct.pack("<4sIQQ", b"**\0\0", size, record_id, ticks) + body + struct.pack("<I", size)


def _chunk(records):
    """Build one 64 KiB chunk from (record_id, offset, bytes) triples."""
    chunk = bytearray(CHUNK_SIZE)
    for _, offset, rec in records:
        chunk[offset:offset + len(rec)] = rec
    free = records[-1][1] + len(records[-1][2])
    first, last = records[0][0], records[-1][0]
    struct.pack_into("<8sQQQQIIII", chunk, 0, b"ElfChnk\0", first, last, first, last,
                     128, records[-1][1], free, zlib.crc32(chunk[CHUNK_HEADER_SIZE:free]))
    crc = zlib.crc32(chunk[:120] + chunk[128:CHUNK_HEADER_SIZE])
    struct.pack_into("<I", chunk, 124, crc)
    return bytes(chunk)


def write_evtx(path, events):
    """Write ``events`` (dicts, see module docstring) to ``path`` as an EVTX file."""
    chunks, current, offset, record_id = [], [], CHUNK_HEADER_SIZE, 0
    for ev in events:
        rid = ev.get("record_id")
        rid = record_id + 1 if rid is None else rid
        if rid <= record_id:
            raise ValueError(f"record ids must be positive and increasing: {rid} after {record_id}")
        record_id = rid
        rec = _record(ev, rid, offset)
        if len(rec) > CHUNK_SIZE - CHUNK_HEADER_SIZE:
            raise ValueError(f"record {rid} ({len(rec)} bytes) does not fit into one chunk")
        if offset + len(rec) > CHUNK_SIZE:
            chunks.append(_chunk(current))
            current, offset = [], CHUNK_HEADER_SIZE
            rec = _record(ev, rid, offset)  # names are chunk-relative offsets: re-encode
        current.append((rid, offset, rec))
        offset += len(rec)
    if current:
        chunks.append(_chunk(current))
    if len(chunks) > 0xFFFF:
        raise ValueError("too many chunks")
    header = bytearray(FILE_HEADER_SIZE)
    struct.pack_into("<8sQQQIHHHH", header, 0, b"ElfFile\0", 0, max(len(chunks) - 1, 0),
                     record_id + 1, 128, 1, 3, FILE_HEADER_SIZE, len(chunks))
    struct.pack_into("<I", header, 124, zlib.crc32(header[:120]))
    with open(path, "wb") as f:
        f.write(header)
        for chunk in chunks:
            f.write(chunk)
