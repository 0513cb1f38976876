"""Bytes in, records out: block reading, per-line decisions, emit modes, diagnostics.

Input is read in large blocks, split into lines, and each line is decided on
its own: bad input is diagnosed on stderr and, in ``--emit all``, passed on
unchanged, so nothing is lost.  Output is buffered and flushed before every
read that could block: in a pipeline an alert must not wait for the next event.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections import Counter
from typing import Callable, Iterator, Optional

import ujson

from .engine import Engine

BLOCK_SIZE = 1 << 20
DEFAULT_MAX_LINE = 16 << 20


class OutputClosed(Exception):
    """The reader of our stdout went away (``| head -1``)."""


class Output:
    """A byte buffer in front of a file descriptor."""

    def __init__(self, fd: int, limit: int = 1 << 16):
        self.fd = fd
        self.limit = limit
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= self.limit:
            self.flush()

    def flush(self) -> None:
        view = memoryview(self.buffer)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except (BrokenPipeError, ConnectionResetError):
            raise OutputClosed() from None
        finally:
            view.release()
        self.buffer.clear()


class Diagnostics:
    """Counted, rate-limited one-line messages on stderr."""

    def __init__(self, stream=None, per_kind: int = 10, interval: float = 10.0, clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        self.per_kind = per_kind
        self.interval = interval
        self.clock = clock
        self.counts = Counter()
        self._last = {}

    def report(self, kind: str, line: int, message: str) -> None:
        self.counts[kind] += 1
        count = self.counts[kind]
        now = self.clock()
        if count > self.per_kind and now - self._last.get(kind, -self.interval) < self.interval:
            return
        self._last[kind] = now
        suffix = f" (occurrence {count}; further ones rate-limited)" if count >= self.per_kind else ""
        try:
            self.stream.write(f"pipeshell-filter: line {line}: {message}{suffix}\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass


def dumps(record: dict) -> bytes:
    """One JSON line; UTF-8, or ASCII escapes when a string holds a lone surrogate."""
    try:
        return ujson.dumps(record, ensure_ascii=False, escape_forward_slashes=False).encode("utf-8")
    except UnicodeEncodeError:
        return ujson.dumps(record, ensure_ascii=True, escape_forward_slashes=False).encode("ascii")


def enrich_line(raw: bytes, event: dict, sigma: dict) -> bytes:
    """The original line with ``"sigma": {...}`` spliced in before its closing brace.

    Splicing keeps every original byte (number formats, key order, escapes); an
    event that already has a ``sigma`` key is re-serialised with it replaced.
    """
    body = raw.rstrip()
    if "sigma" in event or not body.endswith(b"}"):
        return dumps({**event, "sigma": sigma})
    separator = b"," if event else b""
    return body[:-1] + separator + b'"sigma":' + dumps(sigma) + b"}"


def _classify_decode_error(line: bytes, error: Exception) -> tuple:
    message = str(error)
    if "depth" in message.lower():
        return "too_deep", "JSON nested too deeply"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return "invalid_utf8", f"invalid UTF-8 at byte {bad.start}"
    return "invalid_json", f"not valid JSON ({message})"


class LineReader:
    """Splits a file descriptor into lines, read in large blocks.

    Yields ``(line, complete)``: complete lines without their newline; a line
    longer than ``max_line`` comes out in pieces with ``complete`` False for all
    but the last, so memory stays bounded.  ``before_block`` runs before every
    read that may block; ``on_idle`` runs when ``idle`` seconds pass without input.
    """

    def __init__(self, fd: int, before_block: Callable[[], None], on_idle: Optional[Callable[[], None]] = None,
                 idle: Optional[float] = None, block_size: int = BLOCK_SIZE, max_line: int = DEFAULT_MAX_LINE):
        self.fd = fd
        self.before_block = before_block
        self.on_idle = on_idle
        self.idle = idle
        self.block_size = block_size
        self.max_line = max_line

    def _read(self) -> bytes:
        self.before_block()
        if self.on_idle is not None and self.idle is not None:
            while True:
                ready, _, _ = select.select([self.fd], [], [], self.idle)
                if ready:
                    break
                self.on_idle()
                self.before_block()
        return os.read(self.fd, self.block_size)

    def __iter__(self) -> Iterator[tuple]:
        carry = b""
        while True:
            block = self._read()
            if not block:
                break
            if carry:
                block = carry + block
            lines = block.split(b"\n")
            carry = lines.pop()
            for line in lines:
                yield line, True
            if len(carry) > self.max_line:
                yield carry, False  # a piece of an oversized line; its tail comes later
                carry = b""
        if carry:
            yield carry, True


class Filter:
    """Runs the engine over a stream of lines in one emit mode."""

    def __init__(self, engine: Engine, output: Output, diagnostics: Diagnostics, emit: str = "all",
                 idle: Optional[float] = None):
        if emit not in ("alerts", "matches", "all"):
            raise ValueError(f"unknown emit mode {emit!r}")
        self.engine = engine
        self.output = output
        self.diagnostics = diagnostics
        self.emit = emit
        self.idle = idle
        self.lines = 0
        self._in_oversized = False
        self._wall_idle = None  # idle seconds when live input lets the wall clock move the watermark

    def write_alerts(self, alerts: list) -> None:
        for record in alerts:
            self.output.write(dumps(record) + b"\n")

    def process_piece(self, line: bytes, complete: bool) -> None:
        """One line (or a piece of an oversized one) from the reader."""
        if self._in_oversized or not complete:
            if not self._in_oversized:
                self.lines += 1
                self._in_oversized = True
                self.diagnostics.report("too_long", self.lines, "line too long to inspect; passed on unchanged")
            if self.emit == "all":
                self.output.write(line + (b"\n" if complete else b""))
            if complete:
                self._in_oversized = False
            return
        self.lines += 1
        self.process_line(line, self.lines)

    def process_line(self, line: bytes, number: int) -> None:
        passthrough = self.emit == "all"
        if not line.strip():
            self.diagnostics.report("empty", number, "empty line")
            if passthrough:
                self.output.write(line + b"\n")
            return
        try:
            event = ujson.loads(line)
        except (ValueError, OverflowError) as error:
            kind, message = _classify_decode_error(line, error)
            self.diagnostics.report(kind, number, message)
            if passthrough:
                self.output.write(line + b"\n")
            return
        if not isinstance(event, dict):
            self.diagnostics.report("not_object", number, f"JSON {type(event).__name__}, not an object")
            if passthrough:
                self.output.write(line + b"\n")
            return
        before = self.engine.stats["no_time"]
        outcome = self.engine.process(event, number)
        if self.engine.stats["no_time"] != before:
            self.diagnostics.report("no_time", number, "matched event has no parsable time; left out of correlation")
        if outcome.sigma is not None and self.emit != "alerts":
            self.output.write(enrich_line(line, event, outcome.sigma) + b"\n")
        elif passthrough:
            self.output.write(line + b"\n")
        self.write_alerts(outcome.alerts)

    def on_idle(self) -> None:
        if self._wall_idle is not None:
            self.write_alerts(self.engine.idle(self._wall_idle))

    def finish(self) -> None:
        if self._in_oversized and self.emit == "all":
            self.output.write(b"\n")
            self._in_oversized = False
        self.write_alerts(self.engine.flush())
        self.output.flush()

    def run(self, fd: int, live: bool = True, max_line: int = DEFAULT_MAX_LINE) -> None:
        """Filter one input to its end.  ``live`` input (a pipe) lets the wall clock
        advance the watermark when no newer event arrives; a file never does."""
        self._wall_idle = self.idle if live and self.idle else None
        on_idle = self.on_idle if self._wall_idle is not None else None
        reader = LineReader(fd, self._before_block, on_idle, self._wall_idle, max_line=max_line)
        for line, complete in reader:
            self.process_piece(line, complete)

    def _before_block(self) -> None:
        self.on_idle()  # a busy stream with no new candidate events still lets alerts out
        self.output.flush()
