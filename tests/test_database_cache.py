"""Compiled Hyperscan databases kept across runs (``io.database_cache``): a database loaded from
the cache answers as the one compiled; a file that is not whole, or a directory others may write
to, is never read; the cache stays bounded; and a filter run gives the same output with it or
without it, cold or warm."""

import os
import signal
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st
from sigmahq import SIGMAHQ

from pipeshell_filter.io import database_cache

hyperscan = pytest.importorskip("hyperscan")

HERE = os.path.dirname(os.path.abspath(__file__))

CASELESS = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH


@pytest.fixture
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("PIPESHELL_FILTER_CACHE", str(directory))
    monkeypatch.setattr(database_cache, "MIN_EXPRESSIONS", 1)
    return directory


class Compiles:
    """Counts the databases compiled (not loaded) by ``database_cache``."""

    def __init__(self, monkeypatch):
        self.count = 0
        real = hyperscan.Database

        def counting(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(database_cache.hyperscan, "Database", counting)


def found(database, data: bytes) -> set:
    hits = set()
    database.scan(data, match_event_handler=lambda pattern, *_: hits.add(pattern), scratch=hyperscan.Scratch(database))
    return hits


def build(literals):
    return database_cache.compiled(literals, list(range(len(literals))), [CASELESS] * len(literals), literal=True)


LITERALS = st.lists(st.binary(min_size=1, max_size=6).filter(lambda b: b"\0" not in b), min_size=1, max_size=30,
                    unique_by=bytes.lower)  # a needle is JSON text: never a NUL byte


@settings(max_examples=40)
@given(literals=LITERALS, lines=st.lists(st.binary(max_size=40), max_size=10))
def test_a_database_from_the_cache_answers_as_the_one_compiled(tmp_path_factory, literals, lines):
    directory = tmp_path_factory.mktemp("cache")
    os.environ["PIPESHELL_FILTER_CACHE"] = str(directory)
    database_cache.MIN_EXPRESSIONS, before = 1, database_cache.MIN_EXPRESSIONS
    try:
        first, second = build(literals), build(literals)
        assert len(os.listdir(directory)) == 1
        text = b"\n".join(lines + literals[:2])
        assert found(first, text) == found(second, text) == {
            i for i, literal in enumerate(literals) if literal.lower() in text.lower()}
    finally:
        database_cache.MIN_EXPRESSIONS = before
        del os.environ["PIPESHELL_FILTER_CACHE"]


def test_the_second_build_is_loaded_not_compiled(cache, monkeypatch):
    compiles = Compiles(monkeypatch)
    build([b"mimikatz", b"rundll32"])
    build([b"mimikatz", b"rundll32"])
    assert compiles.count == 1
    build([b"mimikatz", b"certutil"])  # other literals: another database
    assert compiles.count == 2 and len(list(cache.iterdir())) == 2


def test_a_file_that_is_not_whole_is_compiled_again_and_refiled(cache, monkeypatch):
    compiles = Compiles(monkeypatch)
    build([b"mimikatz"])
    [path] = cache.iterdir()
    data = path.read_bytes()
    for damaged in (data[:len(data) // 2], data[:-1] + bytes([data[-1] ^ 1]), b""):
        path.write_bytes(damaged)
        assert found(build([b"mimikatz"]), b"run MIMIKATZ now") == {0}
    assert compiles.count == 4 and path.read_bytes() == data


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any mode")
def test_a_read_only_cache_costs_nothing_but_the_compile(cache, monkeypatch):
    cache.mkdir(mode=0o500)
    assert found(build([b"mimikatz"]), b"mimikatz") == {0}
    assert list(cache.iterdir()) == []


def test_a_directory_others_may_write_to_is_never_used(cache, monkeypatch):
    cache.mkdir()
    os.chmod(cache, 0o777)
    compiles = Compiles(monkeypatch)
    build([b"mimikatz"])
    build([b"mimikatz"])
    assert compiles.count == 2 and list(cache.iterdir()) == []
    assert database_cache.cache_directory() is None


def test_an_empty_setting_turns_the_cache_off(monkeypatch):
    monkeypatch.setenv("PIPESHELL_FILTER_CACHE", "")
    assert database_cache.cache_directory() is None


def test_without_a_home_there_is_no_cache(monkeypatch):
    monkeypatch.delenv("PIPESHELL_FILTER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    assert database_cache.cache_directory() is None


def test_small_databases_are_not_filed(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPESHELL_FILTER_CACHE", str(tmp_path / "cache"))
    build([b"mimikatz"] * 1)
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_the_cache_keeps_the_most_recently_used(cache, monkeypatch):
    monkeypatch.setattr(database_cache, "MAX_FILES", 3)
    sets = [[b"first"], [b"second"], [b"third"], [b"fourth"]]
    for number, literals in enumerate(sets):
        build(literals)
        for path in cache.iterdir():  # mtimes a second apart: the order is not left to the clock's grain
            if path.stat().st_mtime_ns > 10 ** 9 * 1000:
                os.utime(path, (1000 + number, 1000 + number))
    compiles = Compiles(monkeypatch)
    build([b"second"]), build([b"third"]), build([b"fourth"])
    assert compiles.count == 0  # the first went
    build([b"first"])
    assert compiles.count == 1 and len(list(cache.iterdir())) == 3


def test_a_filter_run_gives_the_same_output_cold_warm_and_without_the_cache(tmp_path):
    rules = os.path.join(SIGMAHQ, "rules", "windows", "process_creation")  # SIGMAHQ_DIR, as the other tests
    if not os.path.isdir(rules):
        pytest.skip("the shared SigmaHQ checkout is absent")
    events = tmp_path / "events.ndjson"
    subprocess.run([sys.executable, os.path.join(HERE, "..", "bench", "corpus.py"), "--events", "3000", "--seed", "3",
                    "-o", str(events)], check=True, capture_output=True)
    outputs = []
    for setting in (str(tmp_path / "cache"), str(tmp_path / "cache"), ""):
        with open(events, "rb") as stdin:
            run = subprocess.run([sys.executable, "-m", "pipeshell_filter", "--rule", rules, "--quiet", "--idle", "0",
                                  "--workers", "0", "--emit", "matches"], stdin=stdin, capture_output=True,
                                 env={**os.environ, "PIPESHELL_FILTER_CACHE": setting}, timeout=300)
        assert run.returncode == 0, run.stderr[-500:]
        outputs.append(run.stdout)
    assert outputs[0] == outputs[1] == outputs[2] and outputs[0].count(b"\n") >= 3
    assert sum(name.endswith(database_cache.SUFFIX) for name in os.listdir(tmp_path / "cache")) >= 2


def test_a_valid_file_of_other_rules_under_this_name_is_not_loaded(cache, monkeypatch):
    """A file is the database of the inputs its name digests: another rule set's file copied or
    synced over it (whole, its own digest right) loaded the other rules' database, which then
    missed these rules' literals without a word."""
    build([b"mimikatz"])
    [theirs] = cache.iterdir()
    build([b"rundll32"])
    [ours] = [path for path in cache.iterdir() if path != theirs]
    ours.write_bytes(theirs.read_bytes())
    compiles = Compiles(monkeypatch)
    assert found(build([b"rundll32"]), b"rundll32 here") == {0}
    assert compiles.count == 1


class Alarm(Exception):
    """A read that waits for ever (a FIFO's writer) made a failure, not a stuck test run."""


def _alarm(signum, frame):
    raise Alarm()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_what_is_no_regular_file_where_a_database_should_be_is_compiled_again(cache, monkeypatch, kind):
    """A FIFO there: the start-up waited for a writer that never came."""
    build([b"mimikatz"])
    [path] = cache.iterdir()
    path.unlink()
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    if kind == "fifo":  # a writer that never writes: a blocking read of it never ends
        writer = os.open(path, os.O_RDWR)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)  # a guard, not a timing: a read that waited ends the test as a failure
    try:
        assert found(build([b"mimikatz"]), b"mimikatz") == {0}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if kind == "fifo":
            os.close(writer)


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of another user: only root can make one")
def test_a_file_of_another_user_in_the_cache_is_not_loaded(cache, monkeypatch):
    """Planted while the directory was open to others, or linked there: not this user's database."""
    build([b"mimikatz"])
    [path] = cache.iterdir()
    os.chown(path, 4242, 4242)
    compiles = Compiles(monkeypatch)
    build([b"mimikatz"])
    assert compiles.count == 1


def test_an_entry_that_cannot_be_removed_leaves_the_cache_bounded(cache, monkeypatch):
    """A directory named as a database (or as a partial file) made every eviction give up: the
    cache then grew with each rule set, unbounded."""
    monkeypatch.setattr(database_cache, "MAX_FILES", 3)
    build([b"first"])
    for name in ("0000.hsdb", "0000.hsdb.1.partial"):
        (cache / name).mkdir()
        os.utime(cache / name, (1000, 1000))
    for number in range(6):
        build([b"literal %d" % number])
    assert sum(path.is_file() and path.name.endswith(database_cache.SUFFIX) for path in cache.iterdir()) == 3


def test_a_file_at_a_partial_name_is_never_written_through(cache, tmp_path):
    """The partial file was named by process id: runs in two containers sharing a cache truncated each
    other's, and whatever stood at that name (a link left there) was written through.  Each run's
    partial file is new and its own."""
    cache.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"keep me")
    path, key = str(cache / ("ab" * 20 + database_cache.SUFFIX)), "ab" * 20
    os.symlink(elsewhere, f"{path}.{os.getpid()}.partial")
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=[b"second"], ids=[0], flags=[CASELESS], literal=True)
    database_cache._write(path, key, hyperscan.dumpb(database))
    assert elsewhere.read_bytes() == b"keep me"
    assert found(database_cache._read(path, key), b"a second look") == {0}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="open descriptors counted in /proc")
def test_a_directory_where_a_database_should_be_leaves_no_descriptor_open(cache):
    """``fdopen`` refuses a directory and leaves the descriptor it was given open: each look-up
    of that name (at each start, each frequent route) kept one more."""
    build([b"mimikatz"])
    [path] = cache.iterdir()
    path.unlink()
    path.mkdir()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        assert found(build([b"mimikatz"]), b"mimikatz") == {0}
    assert len(os.listdir("/proc/self/fd")) == before


def test_databases_dated_ahead_of_the_clock_do_not_hold_the_cache(cache, monkeypatch):
    """Files dated in the future (filed while the clock was ahead, or copied with their times from a
    host whose clock was) sorted as the most recently used: each database filed after them was the
    oldest, evicted as soon as written, and every run compiled it again."""
    monkeypatch.setattr(database_cache, "MAX_FILES", 3)
    for number in range(3):
        build([b"ahead %d" % number])
    for path in cache.iterdir():
        os.utime(path, (10 ** 10, 10 ** 10))  # the year 2286
    build([b"mimikatz"])
    compiles = Compiles(monkeypatch)
    assert found(build([b"mimikatz"]), b"mimikatz") == {0}
    assert compiles.count == 0
