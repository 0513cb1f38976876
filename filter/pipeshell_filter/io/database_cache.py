"""Hyperscan databases kept across runs, so that a restart does not compile them again.

With SigmaHQ's Windows rules loaded, the rule index's shared database (20,000 literals) takes
about a second to compile at start-up, and each frequent route's own (``rule_index._Route``,
up to 9,000 literals) a few tenths more while the first events stream; loaded from a file, each
takes a few milliseconds.  A pipeline restarts its filter often (a collector's ``exec`` input, a
unit restarted, a host booted), with the same rules.

A database is filed under a digest of everything its compilation read (the expressions, their
ids and flags, the mode, the Hyperscan release): a file is only ever the database those inputs
give.  Each file holds a digest of its content keyed by its name, checked before Hyperscan reads
it (another rule set's file copied over it is not whole), only a regular file of this user's is
read (never a FIFO, which would wait for ever), and the directory is used only when it is this
user's and nobody else may write to it: a database put there by someone else could make rules
miss.  Anything unusable (no home, a read-only disk, a database for another CPU) means compiling,
as without the cache.

The directory is ``$PIPESHELL_FILTER_CACHE``, else ``$XDG_CACHE_HOME/pipeshell-filter``, else
``~/.cache/pipeshell-filter``; ``PIPESHELL_FILTER_CACHE=`` (empty) turns the cache off.  It holds
at most ``MAX_FILES`` databases (a few megabytes each), the least recently used going first.
"""

from __future__ import annotations

import marshal
import os
import stat
import tempfile
import time
from typing import List, Optional

try:  # CPython's own BLAKE2, without loading OpenSSL (as ``records``)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import blake2b

try:
    import hyperscan
    from importlib.metadata import version as _version
    _RELEASE = _version("hyperscan")
except Exception:  # pragma: no cover - no wheel: nothing is compiled, nothing to keep
    hyperscan = _RELEASE = None

MIN_EXPRESSIONS = 256  # fewer compile in a few milliseconds: not worth a file
MAX_FILES = 64
SUFFIX = ".hsdb"
_DIGEST = 32


def compiled(expressions: List[bytes], ids: List[int], flags: List[int], literal: bool = False):
    """A block-mode database of these expressions (``hyperscan.Database.compile``'s arguments),
    from the cache when it holds it, else compiled (and then kept there).  Raises
    ``hyperscan.error`` as compiling does."""
    directory = cache_directory() if len(expressions) >= MIN_EXPRESSIONS else None
    path = None
    if directory is not None:
        key = blake2b(marshal.dumps((_RELEASE, hyperscan.HS_MODE_BLOCK, literal, list(expressions), list(ids),
                                     list(flags))), digest_size=20).hexdigest()
        path = os.path.join(directory, key + SUFFIX)
        found = _read(path, key)
        if found is not None:
            return found
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=expressions, ids=ids, flags=flags, literal=literal)
    if path is not None:
        _write(path, key, hyperscan.dumpb(database))
    return database


def cache_directory() -> Optional[str]:
    """The cache's directory, made if missing; None when off or not safe to use."""
    chosen = os.environ.get("PIPESHELL_FILTER_CACHE")
    if chosen is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        if not os.path.isabs(base):  # no home (``~`` left as it is), or a relative XDG path: the spec ignores it
            return None
        chosen = os.path.join(base, "pipeshell-filter")
    if not chosen:
        return None
    try:
        os.makedirs(chosen, mode=0o700, exist_ok=True)
        found = os.stat(chosen, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o022:
        return None
    return chosen


def _seal(key: str, payload: bytes) -> bytes:
    """The digest a file holds: of its payload, keyed by the name it is filed under."""
    return blake2b(payload, digest_size=_DIGEST, key=key.encode("ascii")).digest()


def _read(path: str, key: str):
    """The database filed at ``path`` under ``key``; None when there is none, it is not whole, or
    it is no regular file of this user's."""
    try:  # O_NONBLOCK: a FIFO there is opened without waiting for a writer, then refused
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:  # closed here whatever happens: ``fdopen`` refused a directory and left its descriptor open
        found = os.fstat(descriptor)
        if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid():
            return None
        with os.fdopen(descriptor, "rb", closefd=False) as source:
            data = source.read()
    except OSError:
        return None
    finally:
        os.close(descriptor)
    digest, payload = data[:_DIGEST], data[_DIGEST:]
    if len(digest) != _DIGEST or _seal(key, payload) != digest:
        return None
    try:
        database = hyperscan.loadb(payload, hyperscan.HS_MODE_BLOCK)
    except hyperscan.error:  # another CPU's, another library's: compiled again, and refiled
        return None
    try:
        os.utime(path)  # recently used: kept longest
    except OSError:
        pass
    return database


def _write(path: str, key: str, payload: bytes) -> None:
    """File a database (whole or not at all), then drop the least recently used beyond ``MAX_FILES``."""
    partial = None
    try:
        # a new file of this run's alone (a name by process id was shared by runs in two containers
        # with one cache, each truncating what the other wrote)
        descriptor, partial = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".partial",
                                               dir=os.path.dirname(path))
        with open(descriptor, "wb") as out:
            out.write(_seal(key, payload) + payload)
        os.replace(partial, path)
    except OSError:  # a full or read-only disk: the database was compiled, nothing is lost
        try:
            if partial is not None:
                os.unlink(partial)
        except OSError:
            pass
        return
    _evict(os.path.dirname(path))


def _evict(directory: str) -> None:
    """Beyond ``MAX_FILES`` databases, the least recently used go; so do the partial files of
    runs killed while writing (an hour old).  Each entry on its own: one that cannot be removed
    (a directory by such a name) made every eviction give up, and the cache grew unbounded.  Files
    dated in the future (the clock set back) counted as the most recent: each one filed after them
    was evicted at once."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    now, filed = time.time(), []
    for name in names:
        if not name.endswith((SUFFIX, ".partial")):
            continue
        path = os.path.join(directory, name)
        try:
            found = os.stat(path, follow_symlinks=False)
        except OSError:  # another run evicting at the same time
            continue
        if not stat.S_ISREG(found.st_mode):
            continue
        if name.endswith(SUFFIX):  # dated over an hour ahead of the clock: no use seen, it goes first
            filed.append((found.st_mtime if found.st_mtime < now + 3600 else 0, path))
        elif found.st_mtime < now - 3600:
            _remove(path)
    filed.sort()
    for _, path in filed[:max(0, len(filed) - MAX_FILES)]:
        _remove(path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:  # gone already (another run evicting), or not ours to remove
        pass
