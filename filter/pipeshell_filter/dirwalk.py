"""The files of a directory tree, as the filter reads rule and input directories.

Recursive, through symbolic links (each directory once, however many links
reach it: a link back up the tree is no loop), sorted, and without recursion in
Python: ``os.walk`` recursed, and a tree 1,200 directories deep overflowed it
(a traceback, where a bad path must be one line).
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
