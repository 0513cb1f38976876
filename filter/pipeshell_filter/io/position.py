"""Where a file input was read up to, saved with ``--state`` so that a restart reads on from there.

A regular file (``--input FILE``, ``< FILE``, or the files of ``--input DIR`` merged) is the input
whose place the filter itself keeps: a pipe's writer keeps its own (a shipper's offset), the bus
its sequence.  Without it a restart read the file from its first line again: every event passed on
twice, and line numbers past the file's end.  So a snapshot holds the file's path, device and
inode, the byte offset after the last whole line handed on, and digests of the file's first 4 KiB
and of the 4 KiB before that offset.  A restart reads on from that offset when those bytes are
still there, in a file at least that long; a file replaced (rotated), rewritten or cut shorter is
read from its start, and the events it sends again are taken once, as any replay is.  A file is
the saved one by its path; among files merged, by its inode first, so that a file renamed by a
rotation is read on from where it was left under its old name, and one found by neither by its
bytes (a copy a rotation made).  A file a rotation moved out of what a run reads (``events.ndjson.1``,
which a directory's walk leaves out, or the file of ``--input FILE``) is looked for beside its old
name and read on there too when it holds lines the saved run did not read (``rotated_away``).

An EVTX file (``.evtx``, read whole or among files merged) keeps its place as the highest
EventRecordID handed on: its records come in id order (its chunks sorted by their first record,
a chunk's records in id order), and each chunk's header numbers its first and last record, so a
restart parses none of the chunks read before (``RecordPlace``).  It is the saved file by its path
(merged: by its inode first) and the digest of its first record, written once and kept until a full
log wraps over its first chunk, or of the record the place was left after (a log that wrapped: it is
still there, the same bytes, until the log wraps round once more); another file there is read from
its start.

A last line without its newline at the end of the file is processed (nothing read is lost), and
remembered as ``unterminated``: when a writer finishes it later, the next run reads the whole line
again rather than its rest alone.
"""

from __future__ import annotations

import os
import stat
from typing import Optional

from ..detect import blake2b  # CPython's own BLAKE2: no OpenSSL loaded (3 MB) for a digest
from .evtx_chunks import first_record, record_at

SAMPLE = 4096  # bytes digested at each end of what was read
NAMED = 3  # files read from their start named each in its line; more are said in one


def file_path(fd: int, given: Optional[str] = None) -> Optional[str]:
    """The path of the regular file open as ``fd``: the kernel's name for it (``/dev/stdin``, a
    link, ``< FILE``), else ``given`` made absolute; None when it has none (deleted, anonymous)."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(given) if given is not None else None
    return None if not path.startswith("/") or path.endswith(" (deleted)") else path


def _digest(fd: int, start: int, end: int) -> str:
    data = os.pread(fd, end - start, start) if end > start else b""
    return blake2b(data, digest_size=16).hexdigest()


class Place:
    """The place in one regular file input: ``offset``, the end of the whole lines handed on (and
    ``unterminated``, the length of a last line handed on without its newline); ``between_lines``
    is false while a line longer than the read limit is being handed on in pieces (no place to
    restart from: a snapshot waits for its end)."""

    def __init__(self, fd: int, path: str):
        self.fd = fd
        self.path = path
        status = os.fstat(fd)
        self.device, self.inode = status.st_dev, status.st_ino
        self.offset = os.lseek(fd, 0, os.SEEK_CUR)
        self.unterminated = 0
        self.lines = None  # of a file merged with others: its lines up to the offset (the count is its own)
        self.between_lines = True
        self._mark = None  # taken while the file is open, for the snapshot at the end
        self.continued = 0  # read on from the end of a last line handed on without its newline (``continue_line``)
        self.on_again = None  # the reader's line counters' step back for a line read again whole (``continue_line``)

    def handed(self, offset: int, unterminated: int = 0, lines: Optional[int] = None) -> None:
        if self.fd is not None:  # once closed, the mark stays: a line handed on after is read again
            self.offset, self.unterminated, self.between_lines = offset, unterminated, True
            if lines is not None:
                self.lines = lines
            self._mark = None

    def close(self) -> None:
        """The file is about to be closed: the mark is taken now, for the snapshot at the end."""
        self.mark()
        self.fd = None

    def mark(self) -> dict:
        """What a snapshot keeps of this place."""
        if self._mark is None:
            end = self.offset + self.unterminated
            self._mark = {"path": self.path, "device": self.device, "inode": self.inode, "offset": self.offset,
                          "unterminated": self.unterminated, "head": _digest(self.fd, 0, min(SAMPLE, end)),
                          "tail": _digest(self.fd, max(0, end - SAMPLE), end)}
            if self.lines is not None:
                self._mark["lines"] = self.lines
        return self._mark

    def resume(self, saved: Optional[dict]) -> tuple:
        """Seek to where ``saved`` (a snapshot's mark of this file, the caller says) left it, if the
        bytes read up to there are still there.  Returns (the offset read on from, or None; the lines
        counted there to take back: 1 for an unterminated last line read again whole; why the file is
        read from its start instead, in one line, or None)."""
        if not saved or self.offset != 0:
            return None, 0, None
        end = saved["offset"] + saved["unterminated"]
        size = os.fstat(self.fd).st_size
        if not _read_there(self.fd, saved, size):
            return None, 0, (f"input {self.path}: not the bytes the saved state read there (replaced, rotated, "
                             "rewritten or cut shorter): read from its start")
        start, again, half = end, 0, 0
        if saved["unterminated"] and size > end:
            written = os.pread(self.fd, 2, end)
            ending = _line_end(written)  # the line's end written since: a newline, or CRLF
            if ending:
                start = end + ending
            elif written == b"\r":  # the CR of a CRLF whose LF is not written yet: the line was not added to
                start, half = end + 1, 1
            else:
                start, again = saved["offset"], 1  # the last line read has grown since: read whole again
        os.lseek(self.fd, start, os.SEEK_SET)
        self.offset = start
        if start == end + half:  # nothing past it yet: the place stays as it was, unterminated line and all
            self.offset, self.unterminated = saved["offset"], saved["unterminated"] + half
            self.continued = self.unterminated
        return start, again, None

    def continue_line(self, first: bytes) -> tuple:
        """Read on from the end of a last line handed on without its newline (``continued``): what the
        first bytes read there make of it, since its writer may have gone on after ``resume`` looked.
        Returns (bytes to read past: the line's end, a newline or CRLF, or 0; the line's start, to read
        it again whole with what was written since, its count taken back through ``on_again``)."""
        if not first:
            return 0, b""  # nothing after it yet: the question stays for the first bytes read
        length, self.continued = self.continued, 0
        ending = _line_end(first)
        if ending:
            return ending, b""
        if self.on_again is not None:
            self.on_again(1)
        return 0, os.pread(self.fd, length, self.offset)


def _line_end(written: bytes) -> int:
    """How many of the bytes written after a line without its newline end it: a newline, or CRLF."""
    return 1 if written.startswith(b"\n") else 2 if written.startswith(b"\r\n") else 0


def _read_there(fd: int, saved: dict, size: int, more: bool = False) -> bool:
    """Whether the file open as ``fd`` (``size`` bytes) holds the bytes a saved mark read, by their
    digests (``more``: and bytes after them)."""
    end = saved["offset"] + saved["unterminated"]
    return size >= end + more and saved["head"] == _digest(fd, 0, min(SAMPLE, end)) \
        and saved["tail"] == _digest(fd, max(0, end - SAMPLE), end)


class RecordPlace:
    """The place in an EVTX file: ``record``, the highest EventRecordID handed on (0: none), and
    ``lines``, the records handed on up to it (its labels' numbers go on from there).  The file is
    known by its path, device and inode, and ``head``, the digest of its first record."""

    between_lines = True  # a record is handed on whole: a snapshot can be taken between any two

    def __init__(self, path: str):
        self.path = os.path.realpath(path)
        status = os.stat(path)
        self.device, self.inode = status.st_dev, status.st_ino
        self.head = blake2b(first_record(path), digest_size=16).hexdigest()
        self.record = self.lines = 0
        self._last = None  # (record, the digest of its bytes) for ``mark``, made again when the place moves
        self._near = None  # the index of the chunk it was found in: the next one is looked for from there

    def handed(self, record: int, number: int) -> None:
        if record > self.record:
            self.record = record
        self.lines = number

    def mark(self) -> dict:
        mark = {"kind": "evtx", "path": self.path, "device": self.device, "inode": self.inode, "head": self.head,
                "record": self.record, "lines": self.lines}
        if self.record:
            if self._last is None or self._last[0] != self.record:
                digest, self._near = _record_digest(self.path, self.record, self._near)
                self._last = self.record, digest
            if self._last[1] is not None:
                mark["last"] = self._last[1]
        return mark

    def resume(self, saved: dict) -> Optional[str]:
        """Go on after the records ``saved`` (a mark of this file, the caller says) read, if it is the
        same file: its first record, or (a full log that wrapped over its first chunk) the record the
        place was left after, as they were; else why the file is read from its start, in one line."""
        if saved["head"] != self.head and ("last" not in saved or saved["record"] == 0
                                           or saved["last"] != _record_digest(self.path, saved["record"])[0]):
            return (f"input {self.path}: not the EVTX file the saved state read there (another file, or a full "
                    "log that wrapped over the records read): read from its start")
        self.record, self.lines = saved["record"], saved["lines"]
        if "last" in saved:  # the same record's, until the place moves
            self._last = self.record, saved["last"]
        return None


def _record_digest(path: str, record_id: int, near: Optional[int] = None) -> tuple:
    """(The digest of the record's bytes, or None: not in the file; the index of its chunk)."""
    try:
        found, index = record_at(path, record_id, near)
    except OSError:
        return None, near
    return (blake2b(found, digest_size=16).hexdigest() if found is not None else None), index


class RecordPlaced(str):
    """An EVTX record's label (``"a.evtx record 7"``) that moves its file's place past the record once
    it was processed (``Placed``'s kin)."""

    def __new__(cls, path: str, number: int, place: RecordPlace, record: int):
        label = super().__new__(cls, f"{path} record {number}")
        label.number, label.place, label.record = number, place, record
        return label

    def handed(self) -> None:
        self.place.handed(self.record, self.number)


def check_mark(saved, merged: bool = False) -> bool:
    """Whether a snapshot's ``input`` (``merged``: an item of its ``inputs``) has the shape ``Place.mark``
    (or, ``"kind": "evtx"``, ``RecordPlace.mark``) writes."""
    if isinstance(saved, dict) and "kind" in saved:
        return saved["kind"] == "evtx" and isinstance(saved.get("path"), str) and isinstance(saved.get("head"), str) \
            and isinstance(saved.get("last", ""), str) \
            and all(type(saved.get(key)) is int and saved[key] >= 0 for key in ("device", "inode", "record", "lines"))
    numbers = ("device", "inode", "offset", "unterminated") + (("lines",) if merged else ())
    return isinstance(saved, dict) and isinstance(saved.get("path"), str) and all(
        type(saved.get(key)) is int and saved[key] >= 0 for key in numbers) \
        and all(isinstance(saved.get(key), str) for key in ("head", "tail"))


def _holds(path: str, saved: dict, more: bool = False) -> bool:
    """Whether the regular file at ``path`` holds the bytes a saved mark read (``more``: and bytes after)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO put there is no file, and no wait
    except OSError:
        return False
    try:
        return regular(fd) and _read_there(fd, saved, os.fstat(fd).st_size, more)
    finally:
        os.close(fd)


def _inode(path: str) -> Optional[tuple]:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def rotated_away(saved: list, paths: list) -> list:
    """The files a rotation moved saved places to, with lines the saved run did not read, for a run
    that reads the files at those places' paths again: logrotate renames ``events.ndjson`` to
    ``events.ndjson.1`` (found by its inode in the same directory) or copies it there and empties it
    (``copytruncate``: found by its bytes among the files whose names begin as its name does).  Read
    with ``paths``, on from where the saved state left them, the lines written between the last run
    and the rotation are not lost.  So is such a file the saved run read but not to its end (stopped, or
    its writer wrote on there until it opened the new log), by its own place: its name begins with the
    name of a file read beside it.  Returns ``[(path, one-line note)]``."""
    reads = {os.path.realpath(path) for path in paths}
    found, listed = [], {}
    for mark in saved or ():
        if not check_mark(mark, "lines" in mark) or "kind" in mark:
            continue
        end = mark["offset"] + mark["unterminated"]
        if mark["path"] not in reads:
            if _rotated_beside(mark["path"], reads) and mark["path"] not in {path for path, _ in found} \
                    and _inode(mark["path"]) == (mark["device"], mark["inode"]) and _holds(mark["path"], mark, True):
                found.append((mark["path"], f"input {mark['path']}: not read to its end by the saved run; its lines "
                                            f"after byte {end}, where the saved state left it, are read"))
            continue  # else another run's file
        # No whole line read (none, or the start of the first): those bytes begin any log alike, so the file
        # at the path is the saved one by its inode alone, and a copy (``copytruncate``) cannot be told
        # from an older one: only a file renamed is looked for.
        whole = mark["offset"] > 0
        same = _inode(mark["path"]) == (mark["device"], mark["inode"])
        if _holds(mark["path"], mark) and (whole or same):
            continue  # read on where it is
        directory = os.path.dirname(mark["path"])
        if directory not in listed:
            try:
                with os.scandir(directory) as entries:
                    listed[directory] = sorted((entry.path, entry.inode()) for entry in entries
                                               if entry.is_file(follow_symlinks=False))
            except OSError:
                listed[directory] = []
        stem = os.path.basename(mark["path"]).split(".")[0]
        taken = reads | {path for path, _ in found}
        candidates = [path for path, inode in listed[directory] if inode == mark["inode"]] + \
            [path for path, _ in listed[directory] if whole and os.path.basename(path).startswith(stem)]
        for path in candidates:
            if path not in taken and _holds(path, mark, more=True):
                found.append((path, f"input {mark['path']}: rotated to {path} since the saved state; its lines "
                                    f"after byte {end}, where the saved state left it, are read there"))
                break
    return found


def _rotated_beside(path: str, reads: set) -> bool:
    """Whether ``path`` is named as a rotation names a file it moved away from one of ``reads``
    (``events.ndjson.1``, ``events.ndjson-20260101`` beside ``events.ndjson``)."""
    directory, name = os.path.split(path)
    return any(os.path.dirname(read) == directory and name.startswith(os.path.basename(read)) for read in reads)


class Placed(str):
    """A merged file's line label (``"a.ndjson line 7"``) that knows its file's place after the line:
    the merge reads ahead of the lines processed, so each line carries where it ends."""

    def __new__(cls, path: str, number: int, place: Place, end: int, unterminated: int = 0):
        label = super().__new__(cls, f"{path} line {number}")
        label.number, label.place, label.end, label.unterminated = number, place, end, unterminated
        return label

    def handed(self) -> None:
        """The line was processed: its file's place moves past it."""
        self.place.handed(self.end, self.unterminated, self.number)


class FilePlaces:
    """The places in the regular files merged by one run (``--input DIR`` with ``--state``): each file
    opened here and kept open until the run's last snapshot; the saved ones matched by inode (a file
    renamed by a rotation), then by path, and a file matched by neither by its bytes (a copy a
    rotation made: logrotate's ``copytruncate``)."""

    def __init__(self, saved: Optional[list]):
        self._saved = [mark for mark in saved or () if "kind" not in mark]
        evtx = [mark for mark in saved or () if mark.get("kind") == "evtx"]
        self._records_by_inode = {(mark["device"], mark["inode"]): mark for mark in evtx}
        self._records_by_path = {mark["path"]: mark for mark in evtx}
        self._by_inode = {(mark["device"], mark["inode"]): mark for mark in self._saved}
        self._by_path = {mark["path"]: mark for mark in self._saved}
        self._claimed = set()  # ids of the saved marks a file was read on from
        self._by_head = None  # the saved marks by their first bytes' digest, made when first needed
        self._problems = []  # (mark, path, one-line note): a file under a saved path read from its start
        self.opened = []  # (place, handle)
        self.records = []  # the RecordPlaces of the EVTX files
        self.alone = False  # one EVTX file read alone: its mark is the snapshot's ``input``
        self.read_on = 0  # NDJSON files read on from past their start
        self.records_read_on = 0  # EVTX files read on after a record the saved state read
        self.again = 0  # unterminated last lines read again whole (counted before)

    def place_all(self) -> None:
        """Move the places ``add`` gave to where the saved state left their files: each by its inode or
        path first, then the rest by their bytes, so that a copy never takes the place of its original."""
        unknown = [place for place, _ in self.opened if self._place(place, self._known) is None]
        for place in unknown:
            self._place(place, self._by_bytes)
        for place in self.records:
            self._place_records(place)

    def add_records(self, path: str) -> RecordPlace:
        """The place in the EVTX file at ``path``, at its start (``place_all``)."""
        place = RecordPlace(path)
        self.records.append(place)
        return place

    def _unclaimed(self, by_inode: dict, by_path: dict, place) -> list:
        """The saved marks that may be ``place``'s file, by its inode then by its path, none taken yet."""
        first, second = by_inode.get((place.device, place.inode)), by_path.get(place.path)
        return [saved for saved in (first, second if second is not first else None)
                if saved is not None and id(saved) not in self._claimed]

    def _place_records(self, place: RecordPlace) -> None:
        for saved in self._unclaimed(self._records_by_inode, self._records_by_path, place):
            problem = place.resume(saved)
            if problem is None:
                self._claimed.add(id(saved))
                self.records_read_on += bool(place.record)
                return
            if saved["path"] == place.path:
                self._problems.append((saved, place.path, problem))

    def add(self, path: str, handle) -> Place:
        """The place in the file at ``path`` just opened as ``handle``, at its start (``place_all``)."""
        fd = handle.fileno()
        place = Place(fd, file_path(fd, path) or os.path.realpath(path))
        place.lines = 0
        self.opened.append((place, handle))
        return place

    def _place(self, place: Place, how) -> Optional[int]:
        start, place.lines = how(place)
        self.read_on += bool(start)
        return start

    def resume(self, place: Place) -> tuple:
        """Move ``place`` to where a saved mark left its file (by inode, then by path, then by its bytes):
        (the offset read on from, or None; the file's lines before there)."""
        start, lines = self._known(place)
        return (start, lines) if start is not None else self._by_bytes(place)

    def _known(self, place: Place) -> tuple:
        for saved in self._unclaimed(self._by_inode, self._by_path, place):
            start, lines, problem = self._take(place, saved)
            if start is not None:
                return start, lines
            if saved["path"] == place.path:
                self._problems.append((saved, place.path, problem))
        return None, 0

    def _by_bytes(self, place: Place) -> tuple:
        """A saved mark not taken whose first bytes this file starts with (its other digest
        checked by ``Place.resume``): the file's first 4 KiB digested once per length of them."""
        if self._by_head is None:  # digest length -> digest -> the saved marks read that far
            self._by_head = {}
            for saved in self._saved:
                end = saved["offset"] + saved["unterminated"]
                if end:
                    self._by_head.setdefault(min(SAMPLE, end), {}).setdefault(saved["head"], []).append(saved)
        size, head = os.fstat(place.fd).st_size, None
        for length, by_digest in self._by_head.items():
            if length <= size:
                head = os.pread(place.fd, SAMPLE, 0) if head is None else head
                for saved in by_digest.get(blake2b(head[:length], digest_size=16).hexdigest(), ()):
                    if id(saved) not in self._claimed:
                        start, lines, _ = self._take(place, saved)
                        if start is not None:
                            return start, lines
        return None, 0

    def _take(self, place: Place, saved: dict) -> tuple:
        start, again, problem = place.resume(saved)
        if start is None:
            return None, 0, problem
        self._claimed.add(id(saved))
        self.again += again
        return start, saved["lines"] - again, None

    def problems(self) -> list:
        """One line per file under a saved path read from its start (but where its saved place went on
        in a file renamed by a rotation)."""
        return [problem for saved, _, problem in self._problems if id(saved) not in self._claimed]

    def notes(self) -> list:
        """One line for the files read on, and the ``problems``: in one line too when more than a few (a
        whole directory rotated)."""
        notes = self.problems()
        if len(notes) > NAMED:
            paths = [path for saved, path, _ in self._problems if id(saved) not in self._claimed]
            notes = [f"inputs: {len(paths)} files not the bytes the saved state read there (replaced, rotated, "
                     f"rewritten or cut shorter), read from their start: {', '.join(paths[:NAMED])} and "
                     f"{len(paths) - NAMED} more"]
        if self.alone:
            notes += [f"input {place.path}: read on from record {place.lines + 1} (after EventRecordID "
                      f"{place.record}), where the saved state left it" for place in self.records if place.record]
        elif self.read_on or self.records_read_on:
            read = [f"{count} of {total} {kind} files" for count, total, kind in (
                (self.read_on, len(self.opened), "NDJSON"), (self.records_read_on, len(self.records), "EVTX")) if total]
            notes.insert(0, f"inputs: {' and '.join(read)} read on where the saved state left them")
        return notes

    def marks(self) -> list:
        return [place.mark() for place, _ in self.opened] + [place.mark() for place in self.records]

    def close(self) -> None:
        for place, handle in self.opened:
            place.close()
            handle.close()


def regular(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False
