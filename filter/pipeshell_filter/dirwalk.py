"""The files of a directory tree, as the filter reads rule and input directories.

Recursive, through symbolic links (each directory once, however many links
reach it: a link back up the tree is no loop), sorted, and without recursion in
Python: ``os.walk`` recursed, and a tree 1,200 directories deep overflowed it
(a traceback, where a bad path must be one line).  And a small file of the user's (a field map, a
placeholders or an exclusions file) read whole but bounded, each refusal one line (``read_bounded``).
"""

from __future__ import annotations

import errno
import os
from typing import List, Tuple


def files_under(top: str, suffixes: Tuple[str, ...]) -> List[str]:
    """The paths of the files under ``top`` whose names end in one of ``suffixes`` (any case),
    sorted.  An unreadable directory raises its OSError, for the caller to say what it means; one
    removed during the walk (not ``top``) holds no file.  A link to itself is taken as a file: by its name,
    passed over or left for its reader to refuse."""
    found, visited, waiting = [], set(), [top]
    while waiting:
        directory = waiting.pop()
        try:
            status = os.stat(directory)  # the directory itself, however reached (realpath costs the depth)
            if (status.st_dev, status.st_ino) in visited:
                continue
            visited.add((status.st_dev, status.st_ino))
            with os.scandir(directory) as entries:
                for entry in entries:
                    if _is_directory(entry):  # through a link too
                        waiting.append(entry.path)
                    elif entry.name.lower().endswith(suffixes):
                        found.append(entry.path)
        except FileNotFoundError:
            if directory == top:
                raise
    return sorted(found)


def _is_directory(entry: os.DirEntry) -> bool:
    """Whether an entry is a directory, through a link; False for a link to itself (or a loop of links):
    it is none.  Any other failure (a link into a directory not searchable) is the caller's to say."""
    try:
        return entry.is_dir()
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        return False


def file_identity(path: str):
    """The file itself, however it is named: a hard link, as a symbolic one, is the same file (an input
    read twice has its events counted twice by a correlation; a rule read twice is its own repeated id)."""
    try:
        status = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return status.st_dev, status.st_ino


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
