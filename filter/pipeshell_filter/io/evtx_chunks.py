"""EVTX files read chunk by chunk in a child process that can be killed.

The Rust parser (``evtx``) runs inside the interpreter: on some damaged chunks
it spins for ever, holding the interpreter, so that neither the other inputs
nor SIGTERM get a turn.  Here each 64 KiB chunk (its templates and strings are
its own) is handed to a child process as a file of its own (the file header,
saying one chunk, and the chunk); the filter waits for the chunk's records with
a time limit, and kills and replaces the child when it is stuck: that chunk's
records are reported lost, and the file goes on with the next chunk.

Reading chunk by chunk also says what a damaged file lost: each chunk's header
numbers its first and last record, so records the parser skipped in silence
(a zeroed chunk, a bad record that ends its chunk) are counted.  A file cut
inside a chunk (a copy interrupted, a full disk), which the parser skips whole,
gives the child that chunk's records wholly present and zeros after them.

Run as ``python -m pipeshell_filter.io.evtx_chunks``, it is the child: one
request per line on stdin (``[path, chunk index]`` as JSON), and per request
``H`` (the EventRecordIDs its chunk's header numbers, as the child read it: a log
in use may have gained records since the filter looked), ``R`` (a record's JSON line), ``D`` (a
damaged record) and one final ``E`` messages on stdout, each a tag, a 4-byte length and the bytes (a record's: its
EventRecordID in 8 bytes, then its line).  The child ignores SIGTERM and
Ctrl-C (sent to the whole process group, they are the filter's to handle: it
stops reading at once, and kills the child) and dies with the filter, which
may not outlive a chunk the child spins on.
"""

from __future__ import annotations

import io
import os
import re
import select
import signal
import subprocess
import sys
import time
import zlib
from typing import Callable, Iterator, List, Optional, Tuple

import ujson

EVTX_HEADER, EVTX_CHUNK = 4096, 65536  # file header block; chunks of 64 KiB
CHUNK_HEADER = 512  # a chunk's header and its string and template tables; its records follow
CHUNK_MAGIC = b"ElfChnk\0"
FILE_MAGIC = b"ElfFile\0"  # all the parser asks of the file header: its chunks are read by their own headers
STUCK = 10.0  # seconds without a word from the child on one chunk: it is stuck (a chunk takes milliseconds)
MOST_RECORDS = 65536 // 24  # a chunk's header claiming more records than fit is not believed


class Layout:
    """What the file's bytes hold: its whole chunks, the part of a chunk it ends inside, and the
    chunk count of its header when that can be believed (its checksum holds: a damaged count
    named thousands of missing chunks).  Windows updates the header lazily: a log in use says
    fewer chunks than it holds, so more chunks than it says are read, and fewer are a loss."""

    def __init__(self, path: str):
        with open(path, "rb") as handle:
            header = handle.read(EVTX_HEADER)
            size = os.fstat(handle.fileno()).st_size
        self.whole, self.tail = max(0, size - EVTX_HEADER) // EVTX_CHUNK, max(0, size - EVTX_HEADER) % EVTX_CHUNK
        believed = len(header) >= 128 and zlib.crc32(header[:120]) == int.from_bytes(header[124:128], "little")
        self.said = int.from_bytes(header[42:44], "little") if believed else None
        # a log closed cleanly (not dirty), not wrapped: its chunks are in record order, the next record id holds
        self.next_id = int.from_bytes(header[24:32], "little") if believed and not header[120] & 1 and \
            header[8:16] == bytes(8) else None

    def after(self, path: str) -> Optional[int]:
        """How many records the header says followed the last chunk the file holds, when it can say."""
        if self.next_id is None or not self.whole + (self.tail > 0):
            return None
        with open(path, "rb") as handle:
            handle.seek(EVTX_HEADER + (self.whole + (self.tail > 0) - 1) * EVTX_CHUNK)
            head = handle.read(40)
        if len(head) < 40 or head[:8] != CHUNK_MAGIC:
            return None
        count = self.next_id - 1 - int.from_bytes(head[32:40], "little")
        return count if 0 < count <= (self.said or 0) * MOST_RECORDS else None


def first_record(path: str) -> bytes:
    """The bytes of the first record of the file's first chunk (in file order): what an EVTX file
    is known by across runs (``position.RecordPlace``).  Written once, they stay until a full log
    wraps over its first chunk; the headers change with every record added.  A first chunk without
    a whole record: its bytes as they are."""
    with open(path, "rb") as handle:
        handle.seek(EVTX_HEADER)
        chunk = handle.read(EVTX_CHUNK)
    if chunk[:8] == CHUNK_MAGIC and chunk[CHUNK_HEADER:CHUNK_HEADER + 4] == b"**\0\0":
        size = int.from_bytes(chunk[CHUNK_HEADER + 4:CHUNK_HEADER + 8], "little")
        if 28 <= size <= len(chunk) - CHUNK_HEADER:
            return chunk[CHUNK_HEADER:CHUNK_HEADER + size]
    return chunk


def record_at(path: str, record_id: int, near: Optional[int] = None) -> Tuple[Optional[bytes], int]:
    """The bytes of the record with that EventRecordID (None: not there) and its chunk's index: what a
    log that wrapped over its first chunk is still known by (``position.RecordPlace``).  The chunks'
    headers are looked at from ``near`` on (by default the last: a file read to its end), round to
    the one before it, until one numbers the id; that chunk's records are walked."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        count = max(0, size - EVTX_HEADER - CHUNK_HEADER) // EVTX_CHUNK + (size >= EVTX_HEADER + CHUNK_HEADER)
        first = near if near is not None and 0 <= near < count else count - 1
        for index in ((first + step) % count for step in range(count)):
            handle.seek(EVTX_HEADER + index * EVTX_CHUNK)
            head = handle.read(40)
            if head[:8] != CHUNK_MAGIC or not int.from_bytes(head[24:32], "little") <= record_id \
                    <= int.from_bytes(head[32:40], "little"):
                continue
            chunk = head + handle.read(EVTX_CHUNK - 40)
            offset = CHUNK_HEADER
            while offset + 28 <= len(chunk) and chunk[offset:offset + 4] == b"**\0\0":
                length = int.from_bytes(chunk[offset + 4:offset + 8], "little")
                if length < 28 or offset + length > len(chunk):
                    break
                if int.from_bytes(chunk[offset + 8:offset + 16], "little") == record_id:
                    return chunk[offset:offset + length], index
                offset += length
    return None, 0


def holds_chunks(path: str) -> bool:
    """Whether a file whose header the parser refuses (damaged, zeroed) holds a chunk at a chunk's place:
    its chunks are then read on their own (``_one_chunk_file``), the header being no part of any record."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            for index in range(max(0, size - EVTX_HEADER - CHUNK_HEADER) // EVTX_CHUNK + 1):
                handle.seek(EVTX_HEADER + index * EVTX_CHUNK)
                if handle.read(8) == CHUNK_MAGIC:
                    return True
    except OSError:
        pass
    return False


def complete_end(chunk: bytes) -> int:
    """Where the records wholly present in a chunk the file ends inside end: each record is
    walked by its size and checked by its magic and the copy of its size at its end, as far as
    the parser reads a whole chunk (its free space offset, its last record)."""
    free = int.from_bytes(chunk[48:52], "little")
    limit = min(len(chunk), free if CHUNK_HEADER < free <= EVTX_CHUNK else EVTX_CHUNK)
    last = chunk[32:40]
    end = CHUNK_HEADER
    while end + 28 <= limit and chunk[end:end + 4] == b"**\0\0":
        size = chunk[end + 4:end + 8]
        length = int.from_bytes(size, "little")
        if length < 28 or end + length > len(chunk) or chunk[end + length - 4:end + length] != size:
            break
        end += length
        if chunk[end - length + 8:end - length + 16] == last:  # the parser stops after the chunk's last record
            break
    return end


# ------------------------------------------------------------------ the child


def _one_chunk_file(path: str, index: int) -> Optional[bytes]:
    with open(path, "rb") as handle:
        header = bytearray(handle.read(EVTX_HEADER))
        handle.seek(EVTX_HEADER + index * EVTX_CHUNK)
        chunk = handle.read(EVTX_CHUNK)
    if len(chunk) < EVTX_CHUNK:  # the file ends inside this chunk: its records wholly present, the rest zero
        if len(chunk) < CHUNK_HEADER or chunk[:8] != CHUNK_MAGIC:
            return None
        chunk = chunk[:complete_end(chunk)].ljust(EVTX_CHUNK, b"\0")
    header[42:44] = (1).to_bytes(2, "little")  # one chunk follows
    header[:8] = FILE_MAGIC  # a damaged header (``holds_chunks``)
    return bytes(header) + chunk


def _send(out, tag: bytes, data: bytes) -> None:
    out.write(tag + len(data).to_bytes(4, "little") + data)


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child
    for number in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGINT)):
        signal.signal(number, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass  # elsewhere the child ends when its stdin does, unless stuck
    if os.getppid() != parent:  # the filter died before the line above
        os._exit(1)


def _parser(PyEvtxParser, data: bytes):
    """The parser of one chunk's file, and whether it writes each record as one compact line, as
    ``evtx_dump -o jsonl`` does: a name an event gives twice (``<Data Name="Group">`` repeated)
    is kept twice, as when evtx_dump's lines are piped in; parsed and written again, all but its
    last value were lost from the events passed on.  An evtx package without the option: its
    indented JSON is written again, compact."""
    try:
        return PyEvtxParser(io.BytesIO(data), number_of_threads=1, indent=False), True
    except TypeError:
        return PyEvtxParser(io.BytesIO(data), number_of_threads=1), False


# The parser writes an element's name as the chunk's string table holds it: a damaged one may hold a
# control character, unescaped (its values it escapes).  Compact JSON has them nowhere but in strings.
_RAW_CONTROL = re.compile(r"[\x00-\x1f]")


def _escaped(found) -> str:
    return f"\\u{ord(found.group()):04x}"


def _serve() -> None:  # pragma: no cover - runs in the child; tested through ChunkReader
    from evtx import PyEvtxParser
    out = sys.stdout.buffer
    for request in sys.stdin.buffer:
        path, index = ujson.loads(request)
        try:
            data = _one_chunk_file(path, index)
            if data:
                _send(out, b"H", data[EVTX_HEADER + 24:EVTX_HEADER + 40])
            parser, compact = _parser(PyEvtxParser, data) if data else (None, True)
            records = iter(parser.records_json()) if data else iter(())
        except Exception as error:  # the parser refuses the chunk whole
            _send(out, b"D", str(error).splitlines()[0][:200].encode("utf-8", "replace") if str(error) else b"?")
            records = iter(())
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except Exception as error:  # a damaged record; the parser goes on with the next
                _send(out, b"D", (str(error).splitlines() or ["?"])[0][:200].encode("utf-8", "replace"))
                continue
            try:
                text = record["data"]
                if compact and _RAW_CONTROL.search(text):  # a name damaged into a line break split the line
                    text = _RAW_CONTROL.sub(_escaped, text)
                event = ujson.loads(text)  # what the filter cannot read is reported here, with its chunk
                line = text if compact else ujson.dumps(event, ensure_ascii=False, escape_forward_slashes=False)
                _send(out, b"R", int(record["event_record_id"]).to_bytes(8, "little") +
                      line.encode("utf-8", "surrogatepass"))
            except (ValueError, KeyError, TypeError, OverflowError) as error:
                _send(out, b"D", f"not convertible to JSON ({error})"[:200].encode("utf-8", "replace"))
        _send(out, b"E", b"")
        out.flush()


# ------------------------------------------------------------------ the filter's side


class ChunkReader:
    """The child process, started on first use and replaced when it is stuck or dies."""

    def __init__(self, stuck: float = STUCK):
        self.stuck = stuck
        self.died: Optional[int] = None  # the exit status of the last child killed
        self.numbered: Optional[Tuple[int, int]] = None  # the last chunk's EventRecordIDs, by the header parsed
        self._child: Optional[subprocess.Popen] = None

    def _start(self) -> subprocess.Popen:
        if self._child is None:
            self._child = subprocess.Popen([sys.executable, "-m", "pipeshell_filter.io.evtx_chunks", str(os.getpid())],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        return self._child

    def close(self) -> Optional[int]:
        """Kill the child; its exit status (negative: the signal), or None when there was none."""
        child, self._child = self._child, None
        if child is None:
            return None
        child.kill()
        status = child.wait()
        child.stdin.close()
        child.stdout.close()
        return status

    def chunk(self, path: str, index: int, stop=None) -> Tuple[List[tuple], List[str], str]:
        """The chunk's records, ``(EventRecordID, JSON line)``, and damaged-record messages, and how it
        ended: "done"; "stuck" or "died" (the child killed: the next chunk gets a new one, ``self.died``
        its status); "stopped", when ``stop`` (a ``signals.StopRequest``) was requested meanwhile.
        ``self.numbered``: the first and last EventRecordID the chunk's header numbered when the child
        read it (None: the child read no chunk header)."""
        self.numbered = None
        child = self._start()
        try:
            child.stdin.write(ujson.dumps([path, index]).encode() + b"\n")
            child.stdin.flush()
        except OSError:
            self.died = self.close()
            return [], [], "died"
        records, damaged = [], []
        stream = child.stdout
        while True:
            head, why = self._read(stream, 5, stop)
            if head is not None:
                body, why = self._read(stream, int.from_bytes(head[1:], "little"), stop)
            if why is not None:
                self.died = self.close()
                return records, damaged, why
            tag = head[:1]
            if tag == b"E":
                return records, damaged, "done"
            if tag == b"R":
                records.append((int.from_bytes(body[:8], "little"), body[8:]))
            elif tag == b"H":
                self.numbered = int.from_bytes(body[:8], "little"), int.from_bytes(body[8:16], "little")
            else:
                damaged.append(body.decode("utf-8", "replace"))

    def _read(self, stream, size: int, stop) -> Tuple[Optional[bytes], Optional[str]]:
        """``size`` bytes; or None and why not: the child said nothing for ``stuck`` seconds, is
        gone, or ``stop`` was requested."""
        data = b""
        deadline = time.monotonic() + self.stuck
        descriptor = stream.fileno()
        watched = [descriptor] if stop is None else [descriptor, stop.fd]
        while len(data) < size:
            if stop is not None and stop.requested:
                return None, "stopped"
            left = deadline - time.monotonic()
            ready = select.select(watched, [], [], left)[0] if left > 0 else []
            if stop is not None and stop.fd in ready:
                stop.drain()
                continue
            if not ready:
                return None, "stuck"
            piece = os.read(descriptor, size - len(data))
            if not piece:
                return None, "died"
            data += piece
            deadline = time.monotonic() + self.stuck
        return data, None


_READER = ChunkReader()


def evtx_records(path: str, report: Callable[[str, str], None], reader: Optional[ChunkReader] = None,
                 stop=None) -> Iterator[bytes]:
    """The records of an EVTX file as JSON lines (``numbered_records``, from the first)."""
    for _, line in numbered_records(path, report, reader, stop):
        yield line


def numbered_records(path: str, report: Callable[[str, str], None], reader: Optional[ChunkReader] = None,
                     stop=None, after: int = 0) -> Iterator[tuple]:
    """The records of an EVTX file as ``(EventRecordID, JSON line)``, chunk by chunk in the order of
    their records; every record lost is reported: a cut last chunk, damaged ones by the parser's word,
    and a chunk that yielded fewer than its header numbers.  ``after``: the records up to that id were
    read before (``position.RecordPlace``): the chunks whose header says they end there or before are
    not parsed, and the records of the chunk holding it up to it not handed on.  ``stop`` (a
    ``signals.StopRequest``) requested: the file ends there."""
    reader = reader or _READER
    layout = Layout(path)
    whole, said = layout.whole, layout.said
    present = whole + (layout.tail > 0)  # chunks the file holds, whole or not
    if said is not None and present < said:  # the parser skips missing chunks in silence
        missing = said - present
        ends = f", the file ends inside chunk {present}" if layout.tail else ""
        following = layout.after(path)
        report(path, f"EVTX file truncated: {whole} of {said} chunks complete{ends}; the records of the "
                     f"{'missing chunk' if missing == 1 else f'{missing} missing chunks'}"
                     f"{f' ({following} records)' if following else ''} are lost")
    # Each chunk's header is looked at once and only its numbers kept (a log preallocated or carved from a
    # disk may be gigabytes of zeros: its headers kept took 11 MB a gigabyte); the places that hold no
    # chunk are kept as runs of indexes, a loss when a chunk used was written after them.
    chunks = []  # (its place in the reading, index, first and last record number and id, header as written)
    gaps: List[List[int]] = []  # [first index, index after] of places that hold no chunk
    cut_head = None  # the header of a chunk the file ends inside, when it ends before the records
    with open(path, "rb") as handle:
        for index in range(present):
            handle.seek(EVTX_HEADER + index * EVTX_CHUNK)
            head = handle.read(CHUNK_HEADER + 16)  # and the first record's header: its magic and id
            if head[:8] == CHUNK_MAGIC and not (index == whole and layout.tail < CHUNK_HEADER):
                first_id, last_id = int.from_bytes(head[24:32], "little"), int.from_bytes(head[32:40], "little")
                chunks.append((_reading_place(head, first_id, last_id), index, int.from_bytes(head[8:16], "little"),
                               int.from_bytes(head[16:24], "little"), first_id, last_id, _header_holds(head)))
            elif index == whole:
                cut_head = head
            elif gaps and gaps[-1][1] == index:
                gaps[-1][1] = index + 1
            else:
                gaps.append([index, index + 1])
    # a chunk before the last one used was written: not a chunk, it is a loss, whatever the header says
    # (a log in use, its header updated lazily, names fewer chunks than it holds)
    written = max(max((chunk[1] + 1 for chunk in chunks), default=0), said or 0,
                  whole + 1 if cut_head is not None and cut_head[:8] == CHUNK_MAGIC else 0)
    for first_gap, after_gap in gaps:
        for index in range(first_gap, min(after_gap, written)):
            report(f"{path} chunk {index + 1}", "not an EVTX chunk (damaged or zeroed); its records are lost")
    if cut_head is not None and cut_head.strip(b"\0"):  # else the file ends inside space not used yet
        if CHUNK_MAGIC.startswith(cut_head[:8]):  # a copy cut inside a chunk's header
            first, last = int.from_bytes(cut_head[8:16], "little"), int.from_bytes(cut_head[16:24], "little")
            which = f"its {last - first + 1} records" if len(cut_head) >= 24 and 0 <= last - first < MOST_RECORDS \
                else "its records"
            report(f"{path} chunk {whole + 1}", f"the file ends inside this chunk's header, after "
                                                f"{layout.tail} bytes; {which} are lost")
        elif whole < written:  # written, yet not a chunk
            report(f"{path} chunk {whole + 1}", "not an EVTX chunk (damaged or zeroed); its records are lost")
    # A full log wraps around: Windows overwrites its oldest chunk, so the newest records may come
    # first in the file.  Read in file order, a correlation's watermark jumped to the newest events
    # and every older chunk's events were late.  The chunks are read in the order of their records.
    # A chunk's header numbers its records in the file (bytes 8-24: from 1 in an export) and by their
    # EventRecordID (bytes 24-40): a count is the first's, a place (``after``) and the order the second's.
    for place, index, first, last, first_id, last_id, as_written in sorted(chunks):
        where = f"{path} chunk {index + 1}"
        believed = 0 <= last - first < MOST_RECORDS
        if after and first_id <= last_id <= after and as_written:
            continue  # read by an earlier run: not parsed again
        expected = last - first + 1 if believed else None
        records, damaged, ended = reader.chunk(path, index, stop)
        if reader.numbered is not None and reader.numbered[0] == first_id and last_id <= reader.numbered[1]:
            last_id = reader.numbered[1]  # the log gained records in this chunk since its header was read above
        if first_id <= last_id and (as_written or last_id - first_id < MOST_RECORDS):  # an export's may be far apart
            records = _ids_within(records, first_id, last_id)
        else:  # the header's ids damaged: those that its first record's id and its count leave room for
            records = _ids_within(records, place, place + (last - first if believed else MOST_RECORDS - 1))
        parsed = len(records)  # before those read by an earlier run are left out
        if after and records and records[0][0] <= after:
            records = [record for record in records if record[0] > after]
            expected = expected - (parsed - len(records)) if expected is not None else None
        for message in damaged:  # each counted; the diagnostics limit how many are shown
            report(where, f"damaged EVTX record skipped ({message})")
        if ended == "stopped":  # the run is stopping: what was read goes on, nothing more is read
            yield from records
            return
        if ended != "done":
            why = f"was stuck on this chunk (no answer in {reader.stuck:g} s)" if ended == "stuck" else \
                f"died on this chunk ({_status(reader.died)})"
            report(where, f"the EVTX parser {why}; stopped after {len(records)} records, the rest of the chunk "
                          "is lost")
        elif index == whole:  # the file ends inside this chunk: its records wholly present were read
            lost = f"{expected - len(records)} of its {expected} records are" if expected is not None else \
                f"its records after the {len(records)} read are"
            if expected is None or len(records) < expected:
                report(where, f"the file ends inside this chunk, after {layout.tail} of its {EVTX_CHUNK} bytes; "
                              f"{lost} lost")
        elif expected is not None and expected > 0 and len(records) + len(damaged) < expected:
            report(where, f"{expected - len(records)} of its {expected} records could not be read")
        elif expected is None and not parsed and not damaged:  # a chunk is written with a record at least
            report(where, "its header's record numbers are damaged and none of its records could be read; "
                          "they are lost")
        yield from records


def _reading_place(head: bytes, first_id: int, last_id: int) -> int:
    """Where a chunk comes in the reading: at its first record's EventRecordID, as the place (``after``)
    counts, so that every record is handed on after those of lower ids.  The id its own header gives,
    when it lies within those its chunk's header numbers (else that header's first): ordered by the
    record numbers of the chunks' headers, one damaged sent the first chunk after the others, and a
    run stopped between them left the place past its records, which no later run passed on; by the
    chunks' first ids, one damaged did the same."""
    own = int.from_bytes(head[CHUNK_HEADER + 8:CHUNK_HEADER + 16], "little")
    if head[CHUNK_HEADER:CHUNK_HEADER + 4] == b"**\0\0" and len(head) >= CHUNK_HEADER + 16 and \
            (first_id <= own <= last_id or not 0 <= last_id - first_id < MOST_RECORDS):
        return own
    return first_id


def _header_holds(head: bytes) -> bool:
    """Whether a chunk's header is as written (its checksum holds): only then are the records its
    EventRecordIDs end with taken as read by an earlier run without parsing the chunk."""
    return len(head) >= CHUNK_HEADER and \
        zlib.crc32(head[:120] + head[128:CHUNK_HEADER]) == int.from_bytes(head[124:128], "little")


def _ids_within(records: List[tuple], first_id: int, last_id: int) -> List[tuple]:
    """A chunk's records, each whose own EventRecordID lies outside those its chunk's header numbers
    (that record's header damaged: a bit flipped) given the id after the record before it, when the
    next record leaves that free (ids of a log follow each other), else the same id: taken as the
    file's place (``position.RecordPlace``), a damaged id put the place past every record the log
    gained after; given the id before it, a run stopped there took the record for read already."""
    placed, previous = [], first_id - 1
    for at, (record_id, line) in enumerate(records):
        if not previous < record_id <= last_id:
            following = next((records[later][0] for later in range(at + 1, len(records))
                              if previous < records[later][0] <= last_id), last_id + 1)
            record_id = previous + 1 if previous + 1 < following else previous
        previous = record_id
        placed.append((record_id, line))
    return placed


def _status(status: Optional[int]) -> str:
    if status is not None and status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) > 1:
        _die_with_parent(int(sys.argv[1]))
    try:
        _serve()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
