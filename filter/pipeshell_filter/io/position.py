"""Where a file input was read up to, saved with ``--state`` so that a restart reads on from there.

A regular file (``--input FILE``, or ``< FILE``) is the one input whose place the filter itself
keeps: a pipe's writer keeps its own (a shipper's offset), the bus its sequence.  Without it a
restart read the file from its first line again: every event passed on twice, and line numbers
past the file's end.  So a snapshot holds the file's path, device and inode, the byte offset after
the last whole line handed on, and digests of the file's first and last 4 KiB before that offset.
A restart reads on from that offset only when the same path names the same file and those bytes
are still there; a file replaced (rotated), rewritten or cut shorter is read from its start, and
the events it sends again are taken once, as any replay is.

A last line without its newline at the end of the file is processed (nothing read is lost), and
remembered as ``unterminated``: when a writer finishes it later, the next run reads the whole line
again rather than its rest alone.
"""

from __future__ import annotations

import os
import stat
from hashlib import blake2b
from typing import Optional

SAMPLE = 4096  # bytes digested at each end of what was read


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
        self.between_lines = True
        self._mark = None  # taken while the file is open, for the snapshot at the end

    def handed(self, offset: int, unterminated: int = 0) -> None:
        if self.fd is not None:  # once closed, the mark stays: a line handed on after is read again
            self.offset, self.unterminated, self.between_lines = offset, unterminated, True
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
        return self._mark

    def resume(self, saved: Optional[dict]) -> tuple:
        """Seek to where ``saved`` (a snapshot's mark) left this file, if it is the same file with
        the same bytes up to there.  Returns (the offset read on from, or None; the lines counted
        there to take back: 1 for an unterminated last line read again whole; why the file is read
        from its start instead, in one line, or None)."""
        if not saved or self.offset != 0 or saved["path"] != self.path:
            return None, 0, None
        where = f"input {self.path}"
        end = saved["offset"] + saved["unterminated"]
        size = os.fstat(self.fd).st_size
        if (saved["device"], saved["inode"]) != (self.device, self.inode):
            return None, 0, f"{where}: another file than the saved state's (replaced or rotated): read from its start"
        if size < end or saved["head"] != _digest(self.fd, 0, min(SAMPLE, end)) \
                or saved["tail"] != _digest(self.fd, max(0, end - SAMPLE), end):
            return None, 0, (f"{where}: not the bytes the saved state read (rewritten or cut shorter): "
                             "read from its start")
        start, again = end, 0
        if saved["unterminated"] and size > end:
            written = os.pread(self.fd, 2, end)  # the line's end written since: a newline, or CRLF's
            ending = 1 if written.startswith(b"\n") else 2 if written == b"\r\n" else 0
            if ending:
                start = end + ending
            else:
                start, again = saved["offset"], 1  # the last line read has grown since: read whole again
        os.lseek(self.fd, start, os.SEEK_SET)
        self.offset = start
        if start == end:  # nothing past it yet: the place stays as it was, unterminated line and all
            self.offset, self.unterminated = saved["offset"], saved["unterminated"]
        return start, again, None


def check_mark(saved) -> bool:
    """Whether a snapshot's ``input`` has the shape ``Place.mark`` writes."""
    return isinstance(saved, dict) and isinstance(saved.get("path"), str) and all(
        type(saved.get(key)) is int and saved[key] >= 0 for key in ("device", "inode", "offset", "unterminated")) \
        and all(isinstance(saved.get(key), str) for key in ("head", "tail"))


def regular(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False
