"""Prefiltering and matching a regular file in worker processes, chunk by chunk.

Scanning is CPU-bound and almost every line is ruled out by it, so on a file the
scan is what parallelism should spread.  Threads do not: on the bench corpus a
second scanning thread added about as much CPU (GIL hand-offs, line counting under
the GIL) as it took off the wall clock.  Processes scale: a file can be read at
any offset by anyone (``os.pread``), so forked workers each scan every W-th chunk
and send back, per block, only what the parent needs: how many lines and bytes
were ruled out, and where the candidate and suspect lines are.

Matching is stateless too, so in ``--stage all``'s plain modes the workers also
parse and match the candidates (every line, with a rule set that no scan can rule
out) and send the enriched lines and their Detections; the parent keeps what has
state, correlation and the output's order, as a ``--stage correlate`` would.

The parent takes the results in file order and re-reads just the blocks that hold
candidates (and, for ``--emit all``, the bytes it passes on).  Every result says
where it starts; the parent follows them only while they join up.  A worker that
stops early (the file shrank, a line longer than the inspection limit, a worker
killed) ends the parallel part there, and the parent reads on from that offset
as from any file: nothing is skipped and nothing is read twice.
"""

from __future__ import annotations

import io
import marshal
import os
import select
import signal
from collections import deque
from typing import Callable, Iterator, List, Optional, Tuple

CHUNK = 16 << 20  # a worker's unit of work: big enough that a chunk's set-up is noise
PARSE_CHUNK = 1 << 20  # ... when it parses every line: a few hundred milliseconds of work
MAX_WORKERS = 8
PIPE_SIZE = 1 << 20  # Linux's most for anyone: a chunk's records, frames' starts included (``judge``)

# Records a worker sends, in file order within each of its chunks (all offsets absolute):
RULED_OUT = 0  # (RULED_OUT, offset, bytes, lines[, judged]): a block of whole lines the prefilter rules
               # out; ``judged`` when there is a ``judge``: what it said of the block
MARKED = 1  # (MARKED, offset, bytes, lines, candidates, suspects): a block with lines to parse (spans
            # as ``Prefilter.scan`` gives them, from the block's start)
CHUNK_END = 2  # (CHUNK_END, offset): the worker's work on this chunk ends here
DETECTED = 3  # (DETECTED, offset, bytes, lines, marked): a block whose candidates the worker also parsed and
              # matched (``detect``): ``marked`` as ``detect`` gives it


def default_workers() -> int:
    """The CPUs this process may run on; a single CPU gains nothing from workers."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_WORKERS) if cpus > 1 else 0


def available() -> bool:
    return hasattr(os, "fork") and hasattr(os, "pread")


def widen_pipe(fd: int, size: int) -> None:
    """Let a pipe on ``fd`` hold at least ``size`` bytes (Linux; 64 KiB by default), so a fast
    writer is not held back and each read can return a large block.  Not a pipe, or not
    allowed: nothing changes."""
    try:
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < size:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError):
        pass


def chunk_bounds(start: int, size: int, chunk: int) -> List[Tuple[int, int]]:
    """``[start, size)`` in pieces of about ``chunk`` bytes.  Nominal bounds: a worker moves
    each to the next line start itself (``line_start``), so neighbours agree on it."""
    cuts = list(range(start, size, chunk)) + [size]
    return list(zip(cuts, cuts[1:]))


def line_start(fd: int, offset: int, first: int, limit: int) -> Optional[int]:
    """The first line start at or after ``offset`` (``first`` is one), or the end of the file
    when no line starts after it; None when no newline comes within ``limit`` bytes."""
    if offset <= first:
        return first
    at = offset - 1
    while at < offset - 1 + limit:
        data = os.pread(fd, 1 << 16, at)
        if not data:
            return at
        newline = data.find(b"\n")
        if newline >= 0:
            return at + newline + 1
        at += len(data)
    return None


def first_long_line(data: bytes, start: int, end: int, limit: int) -> Optional[int]:
    """Where the first line of ``data[start:end]`` (whole lines) longer than ``limit`` starts; None
    when there is none.  Quick when there is none: a line of ``2 * window - 1`` bytes or more holds a
    whole aligned window, so a newline in each window clears them all; else line by line."""
    window = (limit + 2) // 2
    if end - start <= limit or all(data.find(b"\n", at, at + window) >= 0
                                   for at in range(start, end - window + 1, window)):
        return None
    at = start
    while at < end:
        newline = data.find(b"\n", at, end)
        if newline < 0:
            newline = end
        if newline - at > limit:
            return at
        at = newline + 1
    return None


def scan_chunk(fd: int, first: int, bounds: Tuple[int, int], scan: Optional[Callable], count: Callable,
               block: int, max_line: int, send: Callable, judge: Optional[Callable] = None,
               detect: Optional[Callable] = None) -> None:
    """The lines that start inside ``bounds``, a record per block read; ends early (a ``CHUNK_END``
    short of the chunk) at a line longer than ``max_line`` or where the file ends sooner than
    it did when the chunks were laid out.  ``judge(block, lines)``, when given, is asked about each
    ruled-out block (the Fluent Bit modes: what the block becomes, ``Filter.judged``).
    ``detect(block, end, candidates, suspects)``, when given, parses and matches the candidates
    here (every line when there is no ``scan``, as with a rule set some rule of which holds no
    literal) and says what the parent is to do with each marked line (``Filter.detected``)."""
    begin = line_start(fd, bounds[0], first, max_line)
    end = line_start(fd, bounds[1], first, max_line) if begin is not None else None
    if begin is None or end is None:
        send((CHUNK_END, bounds[0] if begin is None else begin))  # the parent reads on from here
        return
    position, size = begin, block
    while position < end:
        data = os.pread(fd, min(size, end - position), position)
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) == size and size <= max_line:  # a line longer than a block: read more at once
                size = min(size * 4, max_line + 1)
                continue
            break  # the file shrank, or the line is too long to inspect
        long_at = first_long_line(data, 0, cut + 1, max_line) if max_line <= cut else None
        if long_at == 0:
            break  # a line too long to inspect, whole in this read: the parent reads on from it
        if long_at is not None:
            cut = long_at - 1  # the lines before it, then the parent reads on from it
        candidates, suspects = scan(data, 0, cut + 1) if scan is not None else (None, [])
        lines = count(data, 0, cut + 1)
        if detect is not None and (candidates is None or candidates or suspects):
            send((DETECTED, position, cut + 1, lines, detect(data, cut + 1, candidates, suspects)))
        elif candidates or suspects:
            send((MARKED, position, cut + 1, lines, candidates, suspects))
        elif judge is not None:
            send((RULED_OUT, position, cut + 1, lines, judge(data[:cut + 1] if cut + 1 < len(data) else data, lines)))
        else:
            send((RULED_OUT, position, cut + 1, lines))
        position += cut + 1
        size = block
        if long_at is not None:
            break
    send((CHUNK_END, position))


class Workers:
    """Worker processes scanning the chunks of ``[start, size)`` of a regular file.

    ``start()`` forks them (OSError when it cannot: the process limit, memory);
    ``records()`` yields every worker's records in file order, chunk after chunk, up
    to the first chunk a worker ended short of (or died in).  Leaving the ``with``
    block ends the workers, done or not.
    """

    def __init__(self, fd: int, start: int, size: int, workers: int, scan: Callable, count: Callable,
                 block: int, max_line: int, chunk: int = CHUNK, judge: Optional[Callable] = None,
                 detect: Optional[Callable] = None):
        self.fd = fd
        self.first = start  # where reading starts: a line start whatever the byte before it
        self.chunks = chunk_bounds(start, size, chunk)
        self.processes = max(1, min(workers, len(self.chunks)))
        self._work = (scan, count, block, max_line, judge, detect)
        self._pids: List[int] = []
        self._pipes: List[io.BufferedReader] = []

    def start(self) -> None:
        try:
            for index in range(self.processes):
                read_end, write_end = os.pipe()
                widen_pipe(read_end, PIPE_SIZE)  # a worker runs ahead of the parent by this much
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the child, which leaves by os._exit
                    os.close(read_end)
                    self._work_in_child(index, write_end)
                os.close(write_end)
                self._pids.append(pid)
                self._pipes.append(io.open(read_end, "rb", buffering=1 << 16))
        except BaseException:
            self.__exit__()
            raise

    def __enter__(self) -> "Workers":
        return self

    def _work_in_child(self, index: int, write_end: int) -> None:  # pragma: no cover - child
        status = 1
        try:
            for pipe in self._pipes:
                pipe.close()
            _become_worker((self.fd, write_end))
            with io.open(write_end, "wb", buffering=1 << 16) as out:
                scan, count, block, max_line, judge, detect = self._work
                for bounds in self.chunks[index::self.processes]:
                    scan_chunk(self.fd, self.first, bounds, scan, count, block, max_line,
                               lambda record: marshal.dump(record, out), judge, detect)
                    out.flush()
            status = 0
        finally:
            os._exit(status)

    def records(self) -> Iterator[tuple]:
        """Ends after the chunk whose worker stopped short of it, or died in it."""
        for index, bounds in enumerate(self.chunks):
            pipe = self._pipes[index % self.processes]
            while True:
                try:
                    record = marshal.load(pipe)
                except (EOFError, ValueError, TypeError):  # the worker died mid-way
                    return
                yield record
                if record[0] == CHUNK_END:
                    break
            if record[1] < bounds[1] and index + 1 < len(self.chunks):
                return  # the next chunk's worker saw the file as it was; the parent reads on instead

    def __exit__(self, *exc) -> None:
        for pipe in self._pipes:
            pipe.close()
        for pid in self._pids:
            try:
                os.kill(pid, signal.SIGKILL)  # idle, or blocked writing results nobody reads
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:  # reaped already (SIGCHLD ignored by whoever started us)
                pass
        self._pipes, self._pids = [], []


def _become_worker(keep: tuple) -> None:  # pragma: no cover - runs in a forked child
    """A forked worker's set-up: its signals, and none of the parent's descriptors but ``keep``
    and stderr.  A pipe's write end a worker held would keep its reader (the filter itself, for
    its input) from ever seeing its end, and a stdout it held would keep the shipper from the
    filter's end after the filter ended; stdin and stdout, unless kept, become /dev/null."""
    signal.set_wakeup_fd(-1)  # the parent's stop pipe is the parent's
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which ends us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a hang-up too (it reaches the whole process group)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    low = 3
    for fd in sorted(fd for fd in set(keep) if fd >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
    nowhere = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        if fd not in keep:
            os.dup2(nowhere, fd)
    os.close(nowhere)


class BlockWorkers:
    """Worker processes matching the blocks a parent reads itself (a pipe, which only it can read).

    ``hand(block)`` gives a block of whole lines to the least loaded worker; ``take()`` returns
    ``(block, lines, marked)`` for the oldest block handed out (``marked`` as ``detect(block, end,
    None, [])`` gives it: ``Filter.detected``), or ``(block, None, None)`` when its worker died,
    for the parent to read the block itself.  A worker holds up to ``DEPTH`` blocks, so it has the
    next one at hand when it finishes one.  The parent never blocks on one pipe: it writes blocks
    and reads results as each pipe allows (``_pump``), so a worker waiting to write a large
    result and a parent waiting to write the next block cannot wait on each other.
    ``close()`` ends the workers; the blocks not taken stay in ``pending``.
    """

    DEPTH = 2

    def __init__(self, workers: int, detect: Callable):
        self.processes = workers
        self.detect = detect
        self.pending = deque()  # (worker, block) handed out, oldest first
        self._load = [0] * workers  # bytes handed to each worker and not taken yet
        self._pids: List[int] = []
        self._inputs: List[int] = []  # the parent's ends, non-blocking
        self._outputs: List[int] = []
        self._unsent: List[bytearray] = []  # per worker: blocks written in part or not yet
        self._received: List[bytearray] = []  # per worker: results read in part
        self._dead = set()

    def start(self) -> None:
        try:
            for _ in range(self.processes):
                down, up = os.pipe(), os.pipe()
                for read_end in (down[0], up[0]):
                    widen_pipe(read_end, PIPE_SIZE)
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the child, which leaves by os._exit
                    self._serve(down[0], up[1])
                os.close(down[0])
                os.close(up[1])
                self._pids.append(pid)
                for fd in (down[1], up[0]):
                    os.set_blocking(fd, False)
                self._inputs.append(down[1])
                self._outputs.append(up[0])
                self._unsent.append(bytearray())
                self._received.append(bytearray())
        except BaseException:
            self.close()
            raise

    def _serve(self, read_end: int, write_end: int) -> None:  # pragma: no cover - child
        status = 1
        try:
            _become_worker((read_end, write_end))
            with io.open(read_end, "rb", buffering=1 << 16) as blocks, io.open(write_end, "wb") as out:
                while True:
                    try:
                        block = marshal.load(blocks)
                    except EOFError:  # the parent closed our input, or died
                        break
                    result = marshal.dumps((block.count(b"\n"), self.detect(block, len(block), None, [])))
                    out.write(len(result).to_bytes(8, "little") + result)
                    out.flush()
            status = 0
        finally:
            os._exit(status)

    @property
    def full(self) -> bool:
        """Every worker holds ``DEPTH`` blocks: ``take()`` before the next ``hand()``."""
        return len(self.pending) >= self.DEPTH * len(self._pids)

    def hand(self, block: bytes) -> None:
        """To the worker with the fewest bytes in hand: a reader's blocks differ in size (a line
        that straddled two reads comes alone), so taking turns would load one worker only."""
        worker = min(range(len(self._pids)), key=self._load.__getitem__)
        self._load[worker] += len(block)
        self.pending.append((worker, block))
        if worker not in self._dead:
            self._unsent[worker] += marshal.dumps(block)
        self._pump(wait=False)

    def take(self) -> tuple:
        worker, block = self.pending.popleft()
        self._load[worker] -= len(block)
        while True:
            received = self._received[worker]
            if len(received) >= 8:
                size = int.from_bytes(received[:8], "little")
                if len(received) >= 8 + size:
                    lines, marked = marshal.loads(received[8:8 + size])
                    del received[:8 + size]
                    return block, lines, marked
            if worker in self._dead:  # it died with the block
                return block, None, None
            self._pump(wait=True)

    def _pump(self, wait: bool) -> None:
        """Read what the workers wrote and write what they wait for, as far as the pipes allow;
        ``wait``: until one of them is ready."""
        live = [at for at in range(len(self._pids)) if at not in self._dead]
        if not live:
            return
        watch = select.poll()  # not ``select``: a pipe's descriptor may be past its limit of 1023
        for at in live:
            watch.register(self._outputs[at], select.POLLIN)
            if self._unsent[at]:
                watch.register(self._inputs[at], select.POLLOUT)
        ready = dict(watch.poll(None if wait else 0))  # each end's descriptor: what it is ready for
        for at in live:
            if self._outputs[at] in ready:
                try:
                    data = os.read(self._outputs[at], 1 << 20)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    self._dead.add(at)
                elif data:
                    self._received[at] += data
            if self._inputs[at] in ready and at not in self._dead:
                try:
                    del self._unsent[at][:os.write(self._inputs[at], self._unsent[at])]
                except BlockingIOError:
                    pass
                except OSError:  # the worker is gone: its output's end says so too
                    self._unsent[at].clear()

    def close(self) -> None:
        for fd in self._inputs + self._outputs:
            os.close(fd)
        for pid in self._pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._pids, self._inputs, self._outputs = [], [], []
