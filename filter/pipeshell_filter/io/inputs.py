"""Input files: NDJSON, EVTX (through the ``evtx`` package) and directories of them.

A ``.evtx`` file is read with the Rust EVTX parser's Python binding and each
record becomes one compact JSON line, exactly what ``evtx_dump -o jsonl`` would
pipe in (the Windows-XML-as-JSON shape).  Several inputs are merged by event
time: each file is taken in its own order and the files are interleaved by the
time of their events (a merge, not a sort, so memory stays small).  Each file's
lines are judged by the prefilter in batches as they are read, not one by one; a
pipe's batch also as soon as the pipe has nothing more to read (``PipeWatch``).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import select
import stat
import time
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Set, Tuple


from ..dirwalk import file_identity, files_under
from .evtx_chunks import holds_chunks, numbered_records
from .position import Placed, RecordPlace, RecordPlaced, regular
from .prefilter import CANDIDATE, SKIP, Prefilter
from .signals import STOP_LINE_WAIT, StoppedOpening

INPUT_SUFFIXES = (".evtx", ".ndjson", ".jsonl", ".json")


class InputError(ValueError):
    """An input path that cannot be read (a usage error, exit status 2)."""


STDIN = "/dev/stdin"


def expand(paths: List[str], given_as: str = "input", skipped: Optional[Callable[[str], None]] = None) \
        -> Tuple[List[str], Set[str]]:
    """Paths as given, with each directory replaced by its event files (sorted, recursive, through
    symbolic links); a file reached twice (a symbolic or hard link to another file of the tree) is
    read once.  Also the files only a directory named: one of them that is no EVTX file is skipped,
    not refused, and so is one that is no regular file (a FIFO, which would wait for a writer for
    ever), said through ``skipped``.  ``-`` is standard input, as for every Unix tool (given twice, or
    beside the file redirected to it, read once: two readers of one pipe split its lines).  ``given_as``:
    how an error names the paths, as the user gave them (``explain --events``: "cannot read --events
    PATH")."""
    paths = [STDIN if path == "-" else path for path in paths]
    files, seen, walked = [], set(), set()
    named = {file_identity(path) for path in paths if not os.path.isdir(path)}
    for path in paths:
        directory = os.path.isdir(path)
        found = _walk(path, given_as) if directory else [path]
        pipes = [name for name in found if directory and _is_fifo(name)]
        if pipes and len(pipes) == len(found):
            raise InputError(f"{given_as} directory {path} holds only named pipes, "
                             f"no {', '.join(INPUT_SUFFIXES)} files")
        for name in found:
            _check_readable(name, given_as)
            if name in pipes:
                if skipped is not None:
                    skipped(f"{given_as} {name}: not a regular file (a named pipe found in a directory is read "
                            "only when named)")
                continue
            if name.lower().endswith(".evtx") and not _is_regular(name):  # opened, a FIFO waits for a writer,
                raise InputError(f"cannot read {given_as} {name}: an EVTX file is read chunk by chunk at their "
                                 "places, so it must be a regular file")  # deaf to SIGTERM; no chunk has a place
            identity = file_identity(name)
            if identity not in seen:  # ``-`` twice, or with the file it is redirected from: read once
                seen.add(identity)
                files.append(name)
                if identity not in named:
                    walked.add(name)
    return files, walked


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:  # said as the file is checked (``_check_readable``)
        return False


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _walk(top: str, given_as: str) -> List[str]:
    try:
        found = files_under(top, INPUT_SUFFIXES)
    except OSError as error:
        raise InputError(f"cannot read {given_as} directory {error.filename}: {why(error)}") from None
    if not found:
        raise InputError(f"{given_as} directory {top} holds no {', '.join(INPUT_SUFFIXES)} files")
    return found


def why(error: OSError) -> str:
    """The system's own reason a path cannot be read, as the filter's one-line errors say it
    (``no such file or directory``), whichever check or read met it."""
    return (error.strerror or str(error)).lower()


def _check_readable(path: str, given_as: str) -> None:
    if path != STDIN:
        try:
            status = os.stat(path)
        except OSError as error:  # the system's own reason: missing, or a directory on the way not searchable
            raise InputError(f"cannot read {given_as} {path}: {why(error)}") from None
        mode = status.st_mode  # a device may be read for ever (/dev/zero), but /dev/null: empty, as ``< /dev/null``
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) and not is_live(status)):
            raise InputError(f"cannot read {given_as} {path}: not a file, a directory, a named pipe or /dev/null")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {given_as} {path}: permission denied")
    if path != STDIN and stat.S_ISREG(status.st_mode):
        try:
            with open(path, "rb") as handle:
                packed = compression(handle.read(HEAD))
        except OSError:
            return
        if packed is not None:
            raise InputError(f"cannot read {given_as} {path}: {packed}-compressed; decompress it into the filter "
                             f"({DECOMPRESS[packed]} {path} | pipeshell-filter ...)")


# The first bytes of each compressed stream a log archive may be: its lines read one by one are no events,
# each said and counted as invalid JSON, and ``--emit all`` handed the compressed bytes on as lines.
GZIP, BZIP2, XZ, ZSTD = b"\x1f\x8b\x08", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"
BZIP2_BLOCKS = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")  # first block, or end of stream
HEAD = 10  # bytes ``compression`` looks at
DECOMPRESS = {"gzip": "zcat", "bzip2": "bzcat", "xz": "xzcat", "zstd": "zstdcat"}


def compression(head: bytes) -> Optional[str]:
    """The compression a file starting with ``head`` (its first ten bytes) is in, or None: the magic
    numbers of gzip (RFC 1952, deflate), bzip2 (with a level and its first block's or end's magic), xz
    and zstd, none of which an NDJSON or text line starts with."""
    if head.startswith(GZIP):
        return "gzip"
    if head.startswith(BZIP2) and head[3:4] in b"123456789" and len(head) > 4 and head[4:10] in BZIP2_BLOCKS:
        return "bzip2"
    if head.startswith(XZ):
        return "xz"
    if head.startswith(ZSTD):
        return "zstd"
    return None


def is_live(status: os.stat_result) -> bool:
    """Input that may wait for more (a pipe, a socket, a terminal), by its ``os.stat``: not a regular
    file, nor ``/dev/null``, which ends at once, empty (``< /dev/null``: a job given no input)."""
    if stat.S_ISREG(status.st_mode):
        return False
    if stat.S_ISCHR(status.st_mode):
        try:
            return status.st_rdev != os.stat(os.devnull).st_rdev
        except OSError:
            return True
    return True


def allow_open(count: int) -> None:
    """Merged inputs are all open at once: lift the soft open-file limit (often 1024) as far
    as needed within the hard one, or say plainly that they are too many."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = count + 64  # stdio, the stop pipe, the interpreter's own
    if soft == resource.RLIM_INFINITY or need <= soft:
        return
    if hard != resource.RLIM_INFINITY and need > hard:
        raise InputError(f"{count} input files cannot be open at once (the open-file limit is {hard}); "
                         "merge fewer, or raise the limit (ulimit -n)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def is_evtx(path: str) -> bool:
    if path.lower().endswith(".evtx"):
        return True
    if not os.path.isfile(path):  # a pipe (/dev/stdin): sniffing would eat its first bytes
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == b"ElfFile\0"
    except OSError:
        return False


class Recovered(str):
    """An EVTX file's problem that lost no record (its header damaged, its chunks read): said, and counted
    apart from the problems that lost records (``evtx_problems``)."""


def evtx_problems(diagnostics) -> Callable[[str, str], None]:
    """The ``report`` of EVTX files' problems to a run's diagnostics: records lost (``bad_evtx``, an EVTX
    problem the summary line counts as skipped), or none (``evtx_recovered``, a notice)."""
    return lambda where, message: diagnostics.report(
        "evtx_recovered" if isinstance(message, Recovered) else "bad_evtx", where, message)


def evtx_lines(path: str, report: Callable[[str, str], None], named: bool = True, stop=None) -> Iterator[bytes]:
    """The records of an EVTX file as JSON lines (``numbered_evtx_lines``, from the first)."""
    for _, line in numbered_evtx_lines(path, report, named, stop):
        yield line


def numbered_evtx_lines(path: str, report: Callable[[str, str], None], named: bool = True, stop=None,
                        after: int = 0) -> Iterator[tuple]:
    """The records of an EVTX file as ``(EventRecordID, JSON line)``, parsed chunk by chunk in a child
    process that is killed when the parser is stuck (``evtx_chunks``); every record lost is reported.
    A file whose header is unreadable is a usage error when ``named``, else reported and skipped; one whose
    header alone is damaged (it holds chunks) is reported and its chunks read.
    ``stop`` (a ``signals.StopRequest``) requested: the file ends at once, even inside a chunk.
    ``after``: the records up to that id are left out (read by an earlier run)."""
    try:
        from evtx import PyEvtxParser
    except ImportError:
        raise InputError(f"{path}: reading .evtx needs the 'evtx' package (pip install evtx)") from None
    try:  # the file header, read here: a file that is no EVTX is a usage error.  Opened by Python: given
        with open(path, "rb") as handle:  # the path, the parser could not open a name that is no UTF-8
            PyEvtxParser(handle)
    except (OSError, RuntimeError, ValueError) as error:
        why = error.strerror.lower() if isinstance(error, OSError) and error.strerror else _first_line(error)
        if not isinstance(error, OSError) and holds_chunks(path):  # no record is in the header
            report(path, Recovered(f"the EVTX file header is damaged ({why}); its chunks are read on their own"))
        elif named:
            raise InputError(f"cannot read EVTX file {path}: {why}") from None
        else:
            report(path, f"not a readable EVTX file ({why}); file skipped")
            return
    try:
        yield from numbered_records(path, report, stop=stop, after=after)
    except OSError as error:  # the file went away or became unreadable while being read
        report(path, f"EVTX file no longer readable ({error.strerror or error}); rest of the file skipped")


class LongLine:
    """A line longer than the inspection limit: kept in a temporary file, never whole in memory
    (merged inputs hold a line while the others catch up, and a line may be a gigabyte)."""

    CHUNK = 1 << 20

    def __init__(self, start: bytes, handle):
        import tempfile

        self.file = tempfile.TemporaryFile()
        self.file.write(start)
        self.size = len(start)
        self.ended = False  # by its newline, not the file's end
        while True:  # the rest of the line, up to and without its newline
            chunk = handle.readline(self.CHUNK)
            if not chunk:
                break
            self.ended = chunk.endswith(b"\n")
            self.file.write(chunk[:-1] if self.ended else chunk)
            self.size += len(chunk) - self.ended
            if self.ended:
                break

    def __len__(self) -> int:
        return self.size

    def pieces(self) -> Iterator[bytes]:
        """The line in pieces of at most CHUNK bytes; the file is gone afterwards."""
        with self.file:
            self.file.seek(0)
            while True:
                piece = self.file.read(self.CHUNK)
                if not piece:
                    return
                yield piece


def open_input(path: str, stop=None):
    """``open(path, "rb")``, which the stop (a ``signals.StopRequest``) ends while it waits (a FIFO no
    writer opens: ``StoppedOpening``); an error is an InputError naming the path."""
    try:
        with stop.opening() if stop is not None else contextlib.nullcontext():
            return open(path, "rb")
    except OSError as error:
        raise InputError(f"cannot read input {path}: {why(error)}") from None


def ndjson_lines(path: str, max_line: int = 16 << 20, stop=None, watch: Optional["PipeWatch"] = None) -> Iterator:
    """The lines of an NDJSON file (without newlines); one over ``max_line`` bytes as a LongLine.
    ``watch``: told of the pipe read, if the file is one (``PipeWatch``)."""
    with open_input(path, stop) as handle:
        source = handle
        if stop is not None and not regular(handle.fileno()):
            source = PipeLines(handle.fileno(), stop, watch.before_block if watch is not None else None)
            if watch is not None:
                watch.pipe = source
        for line, _ended in _lines_of(source, max_line):
            yield line


class PipeLines:
    """A pipe (a FIFO, ``-``) read among files merged, for lines as a file's ``readline`` gives them,
    but a stop requested while it waits for its writer is its end: a blocking read waited on through
    the stop, its flag set, for as long as the writer kept the pipe open and silent."""

    BLOCK = 1 << 16
    AHEAD = 1 << 20  # ``ready`` reads no further ahead than this for the end of a line

    def __init__(self, fd: int, stop, before_block: Optional[Callable[[], None]] = None):
        self.fd, self.stop = fd, stop
        self.before_block = before_block  # run when the pipe has nothing yet: what was read goes out first
        self.buffer = bytearray()
        self.searched = 0  # the buffer holds no newline before this
        self.ended = False

    def ready(self) -> bool:
        """Whether a whole line (or the end) is there without waiting: what the pipe holds now is read
        ahead, never blocking.  False may also mean a line longer than ``AHEAD`` still coming."""
        while True:
            if self.ended or self.stop.requested or self.buffer.find(b"\n", self.searched) >= 0:
                return True
            self.searched = len(self.buffer)
            if self.searched >= self.AHEAD or not readable_now(self.fd):
                return False
            data = os.read(self.fd, self.BLOCK)
            self.ended = not data
            self.buffer += data

    def readline(self, limit: int) -> bytes:
        """Up to and with the next newline, at most ``limit`` bytes; what is left at the end; b"" after it."""
        while True:
            newline = self.buffer.find(b"\n", 0, limit)
            if newline >= 0 or len(self.buffer) >= limit or self.ended:
                cut = newline + 1 if newline >= 0 else min(limit, len(self.buffer))
                line = bytes(self.buffer[:cut])
                del self.buffer[:cut]
                self.searched = 0
                return line
            if not self._wait():
                self.ended = True
                if self.buffer:
                    self._rest_of_line(limit)
                continue
            data = os.read(self.fd, self.BLOCK)
            self.ended = not data
            self.buffer += data

    def _rest_of_line(self, limit: int) -> None:
        """Stopped with part of a line read: its rest, if it comes within ``STOP_LINE_WAIT``, up to its
        newline and no further (no next line begun and cut in turn), as a lone pipe's; else it goes on as read."""
        deadline = time.monotonic() + STOP_LINE_WAIT
        watch = select.poll()
        watch.register(self.fd, select.POLLIN)
        while len(self.buffer) < limit:
            left = deadline - time.monotonic()
            if left <= 0 or not watch.poll(left * 1000):
                return
            got, ended = line_rest_now(self.fd, limit - len(self.buffer))
            self.buffer += got
            if ended or got.endswith(b"\n"):
                return

    def _wait(self) -> bool:
        """Until the pipe can be read (bytes, or its end): False when the stop comes first.  ``poll``, not
        ``select``: merged with a thousand files, the pipe's descriptor may be past select's limit."""
        if self.before_block is not None and not self.stop.requested and not readable_now(self.fd):
            self.before_block()
        watch = select.poll()
        for fd in (self.fd, self.stop.fd):
            watch.register(fd, select.POLLIN)
        while not self.stop.requested:
            ready = {fd for fd, _ in watch.poll()}
            if self.stop.fd in ready:
                self.stop.drain()  # woken by another signal than ours: wait on, unless ours came too
            elif self.fd in ready:
                return not self.stop.requested
        return False


def readable_now(fd: int) -> bool:
    """Bytes (or the end) in ``fd`` now: a read would not wait.  ``poll``, not ``select``: a descriptor
    may be past select's limit (a pipe merged with a thousand files)."""
    watch = select.poll()
    watch.register(fd, select.POLLIN)
    return bool(watch.poll(0))


def line_rest_now(fd: int, limit: int) -> tuple:
    """``(bytes, ended)``: of what a pipe's writer has put in it so far, without waiting, the rest of the line
    being read, up to and with its newline and no further (byte by byte: at a stop, no next line is begun
    and cut in turn), at most ``limit`` bytes; ``ended``: the pipe's end was met."""
    got = bytearray()
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        while len(got) < limit:
            byte = os.read(fd, 1)
            if not byte:
                return bytes(got), True
            got += byte
            if byte == b"\n":
                break
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, blocking)
    return bytes(got), False


class PipeWatch:
    """What the merge knows of a pipe among merged inputs, once it is opened: whether its next line is
    there (``judged`` judges the batch it holds before waiting for more), and what runs before the pipe
    waits (``before_block``: the filter settles and writes what it has, as for a lone pipe)."""

    def __init__(self, before_block: Optional[Callable[[], None]] = None):
        self.before_block = before_block
        self.pipe: Optional[PipeLines] = None

    def ready(self) -> bool:
        """No pipe (a regular file, or a pipe not opened yet): True, it never waits for a writer."""
        return self.pipe is None or self.pipe.ready()


def _lines_of(handle, max_line: int) -> Iterator[tuple]:
    """``(line, ended)`` for each line of an open file, without its newline; ``ended``: a newline ended
    it.  A last line without one is the file's end for this run, though its writer may add to it
    meanwhile: the rest would be no line of its own (``position``: the next run reads it whole)."""
    while True:
        raw = handle.readline(max_line + 1)
        if not raw:
            return
        if raw.endswith(b"\n"):
            yield raw[:-1], True
            continue
        line = raw if len(raw) <= max_line else LongLine(raw, handle)
        ended = line.__class__ is LongLine and line.ended
        yield line, ended
        if not ended:
            return


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def placed_lines(path: str, opened: tuple, max_line: int = 16 << 20) -> Iterator[tuple]:
    """``(label, line)`` for an NDJSON file opened by ``position.FilePlaces``: each label a ``Placed``,
    which moves the file's place past its line once the line is processed."""
    handle, place, number = opened
    offset = place.offset
    lines = _lines_of(handle, max_line)
    if place.continued:  # read on from the end of a last line the saved run handed on without its newline
        first = next(lines, None)
        line = first[0] if first is not None else b""
        end = offset + place.continued
        probe = (line + b"\n" if first is not None and first[1] else line) if line.__class__ is bytes else b"-"
        past, head = place.continue_line(probe)
        if past:
            offset = end + past
            place.handed(offset, 0, number)
        elif head:  # written on since: the whole line again, under its number (a long one from where it was)
            number -= 1
            if line.__class__ is bytes:
                first = head + line, first[1]
            else:
                offset = end
        else:
            offset = end
        lines = itertools.chain([first] if first is not None and not past else [], lines)
    for number, (line, ended) in enumerate(lines, number + 1):
        if ended:
            offset += len(line) + 1
            yield Placed(path, number, place, offset), line
        else:  # the last line read, without its newline: remembered as such (``Place.unterminated``)
            yield Placed(path, number, place, offset, len(line)), line


def labelled_lines(path: str, report, max_line: int = 16 << 20, named: bool = True, stop=None,
                   opened: Optional[tuple] = None, watch: Optional[PipeWatch] = None) -> Iterator[tuple]:
    """``(label, line)`` for one file; the label names the file and the line or record.  ``named``:
    the file was named, not found in a directory (see ``evtx_lines``); ``opened``: an NDJSON file's
    handle, place and line count, or an EVTX file's place, from ``position.FilePlaces`` (``--state``);
    ``watch``: told of the pipe, if the file is one read among merged files (``ndjson_lines``)."""
    if opened is not None and opened[1].__class__ is RecordPlace:
        place = opened[1]
        for number, (record_id, line) in enumerate(numbered_evtx_lines(path, report, named, stop, place.record),
                                                   place.lines + 1):
            yield RecordPlaced(path, number, place, record_id), line
    elif opened is not None:
        yield from placed_lines(path, opened, max_line)
    elif is_evtx(path):
        for number, line in enumerate(evtx_lines(path, report, named, stop), 1):
            yield f"{path} record {number}", line
    else:
        for number, line in enumerate(ndjson_lines(path, max_line, stop, watch), 1):
            yield f"{path} line {number}", line


def judged(labelled: Iterable[tuple], prefilter: Optional[Prefilter], batch_bytes: int = 1 << 20,
           ready: Optional[Callable[[], bool]] = None) -> Iterator[tuple]:
    """``(label, line)`` -> ``(label, line, verdict)``, the prefilter judging about
    ``batch_bytes`` of lines at a time (every line a candidate without a prefilter).  ``ready``: whether
    the next line is there without waiting (a pipe's, ``PipeWatch``); when not, the batch is judged and
    handed on now, not once full: a slow pipe's lines are not held back for the lines still to come."""
    if prefilter is None:
        for label, line in labelled:
            yield label, line, CANDIDATE
        return
    batch, size = [], 0
    for item in labelled:
        batch.append(item)
        size += len(item[1]) + 1
        if size >= batch_bytes or ready is not None and not ready():
            yield from _judge(batch, prefilter)
            batch, size = [], 0
    yield from _judge(batch, prefilter)


def _judge(batch: List[tuple], prefilter: Prefilter) -> Iterator[tuple]:
    lines = [line for _, line in batch if not isinstance(line, LongLine)]  # a long line is not inspected
    verdicts = iter(prefilter.judge(lines))
    for label, line in batch:
        yield label, line, SKIP if isinstance(line, LongLine) else next(verdicts)


def merged(streams: List[Iterable[tuple]], event_time: Callable[[bytes], Optional[int]],
           live: Sequence[bool] = (), stop=None) -> Iterator[tuple]:
    """``(label, line, verdict)`` from each file's stream, interleaved by event time.

    A line without a readable time keeps its place after the previous line of
    its own file (it takes that line's time as its sort key).

    Once ``stop`` (a ``signals.StopRequest``) is requested, the files are read no further, but what the
    ``live`` streams (pipes) hold is merged on to its end: a pipe's lines read ahead (the one waiting in
    the merge, the prefilter's batch, ``PipeLines``' buffer) cannot be read again, unlike a file's, which a
    next run reads from its saved place (``--state``).  A pipe ends at the stop (``PipeLines``), and a
    pipe not yet opened (``StoppedOpening``) has nothing read: the merge ends without waiting.

    The merge waits for each stream's next line; a pipe's stream hands on what it read as soon as the pipe
    would wait (``judged``'s ``ready``), so a silent pipe holds back only the lines that may come after its next.
    """
    def keyed(index: int, stream: Iterable[tuple]):
        last = float("-inf")
        for seq, (label, line, verdict) in enumerate(stream):
            t = event_time(line)
            if t is not None and t > last:
                last = t
            yield (last, index, seq), label, line, verdict

    def following(iterator) -> Optional[tuple]:
        try:
            return next(iterator), iterator  # the key (last, index, seq) is unique: the iterators are never compared
        except StopIteration:
            return None
        except StoppedOpening:  # a pipe that had no writer yet when the stop came
            if stop is None or not stop.requested:
                raise
            return None

    heap = [entry for entry in map(following, (keyed(i, s) for i, s in enumerate(streams))) if entry is not None]
    heapq.heapify(heap)
    stopped = False
    while heap:
        if not stopped and stop is not None and stop.requested:
            stopped = True
            heap = [entry for entry in heap if entry[0][0][1] < len(live) and live[entry[0][0][1]]]
            heapq.heapify(heap)
            continue
        (_, label, line, verdict), iterator = heap[0]
        yield label, line, verdict
        entry = following(iterator)
        if entry is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, entry)
