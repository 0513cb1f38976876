"""The files of a directory tree, as the filter reads rule and input directories.

Recursive, through symbolic links (each directory once, however many links
reach it: a link back up the tree is no loop), sorted, and without recursion in
Python: ``os.walk`` recursed, and a tree 1,200 directories deep overflowed it
(a traceback, where a bad path must be one line).  And a small file of the user's (a field map, a
placeholders or an exclusions file) read whole but bounded, each refusal one line (``read_bounded``).
"""

from __future__ import annotations

import os
from typing import List, Tuple


def files_under(top: str, suffixes: Tuple[str, ...]) -> List[str]:
    """The paths of the files under ``top`` whose names end in one of ``suffixes`` (any case),
    sorted.  An unreadable directory raises its OSError, for the caller to say what it means."""
    found, visited, waiting = [], set(), [top]
    while waiting:
        directory = waiting.pop()
        status = os.stat(directory)  # the directory itself, however reached (realpath costs the depth)
        if (status.st_dev, status.st_ino) in visited:
            continue
        visited.add((status.st_dev, status.st_ino))
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir():  # through a link too
                    waiting.append(entry.path)
                elif entry.name.lower().endswith(suffixes):
                    found.append(entry.path)
    return sorted(found)


MAX_FILE_BYTES = 16 << 20  # a field map, a placeholders or an exclusions file: as a rule file


class FileProblem(ValueError):
    """A small file of the user's that cannot be read whole; the message is one line."""


def read_bounded(path: str, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the file ``what`` names (``field map``), read at most ``limit`` of them: /dev/zero is
    a path too.  FileProblem: ``cannot read <what> <path>: <reason>``, or ``... is larger than N MiB``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise FileProblem(f"cannot read {what} {path}: {error.strerror}") from None
    if len(data) > limit:
        raise FileProblem(f"{what} {path} is larger than {limit >> 20} MiB")
    return data
