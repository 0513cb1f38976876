"""Worker processes prefiltering a regular file (``parallel``) never change what the filter does.

Every test compares a run with workers against the same run read sequentially
(``workers=0``): the output bytes, the line count and the diagnostics.  Chunks are
made tiny so that a few hundred bytes are spread over many chunks and workers.
"""

import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eventgen import SERVER, flat_event
import resolvers
from pipeshell_filter.io import parallel
from pipeshell_filter.io import prefilter as pf
from pipeshell_filter.io import rule_index as ri
from pipeshell_filter.io import stream as stream_module
from pipeshell_filter.cli import build_prefilter
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.fields import FieldResolver
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import BUILTIN_RULE, load_rule, parse_rule
from pipeshell_filter.io.stream import Diagnostics, Filter, Output
from test_prefilter import RULE_SET, streams

PLAN = compile_plan(load_rule(BUILTIN_RULE, builtin=True))
ENGINES = pf.available_engines()
MAX_LINE = 4096
pytestmark = pytest.mark.skipif(not parallel.available(), reason="no os.fork / os.pread here")


def run(data: bytes, emit: str, engine: str, workers: int, block_size: int = 1 << 20, chunk: int = 256,
        start: int = 0, stop=None, before=None, non_json: str = "pass", fluentbit_time: bool = False):
    """Filter ``data`` from offset ``start`` of a file; returns (output, lines, diagnostics counts).
    ``before(path, fd)`` runs after the file is written, before the filter starts."""
    with tempfile.NamedTemporaryFile() as source, tempfile.TemporaryFile() as sink:
        source.write(data)
        source.flush()
        source.seek(start)
        if before is not None:
            before(source.name, source.fileno())
        diagnostics = Diagnostics(io.StringIO())
        stream_filter = Filter(Engine([PLAN], FieldResolver(resolvers.PROFILES), 0), Output(sink.fileno()),
                               diagnostics, emit, prefilter=pf.Prefilter(PLAN.prefilter_literals(pf.needle), engine),
                               clock=lambda: 0, workers=workers, non_json=non_json, fluentbit_time=fluentbit_time)
        stream_filter.parallel_min = 0
        stream_filter.parallel_chunk = chunk
        stream_filter.run(source.fileno(), live=False, block_size=block_size, max_line=MAX_LINE, stop=stop)
        stream_filter.finish()
        sink.seek(0)
        return sink.read(), stream_filter.lines, dict(diagnostics.counts)


@st.composite
def files(draw):
    """The prefilter property's streams, with lines far over the inspection limit mixed in
    (over ``MAX_LINE`` + a block, so that every way of reading cuts them into pieces)."""
    data = draw(streams())
    lines = data.split(b"\n")
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(lines)))
        filler = draw(st.sampled_from([b"x", b"{", SERVER.encode()]))
        lines.insert(at, b'{"long":"' + filler * (MAX_LINE // len(filler) + 700) + b'"}')
    return b"\n".join(lines)


@given(files(), st.sampled_from(["alerts", "matches", "all"]), st.sampled_from(ENGINES), st.integers(1, 3),
       st.integers(16, 600), st.integers(64, 2048), st.one_of(st.just(0), st.integers(0, 1 << 16)))
@example(b'{"a":1}\n' * 3 + b"{" + b"x" * 9000 + b"}\n" + b'{"b":2}', "all", ENGINES[0], 2, 64, 100, 0)
def test_workers_never_change_the_output(data, emit, engine, workers, block_size, chunk, offset):
    start = offset % (len(data) + 1)  # the file may be read from anywhere, mid-line too
    expected = run(data, emit, engine, 0, block_size, chunk, start)
    assert run(data, emit, engine, workers, block_size, chunk, start) == expected


@given(files(), st.sampled_from(["alerts", "all"]), st.sampled_from([("wrap", False), ("pass", True), ("wrap", True)]),
       st.integers(1, 3), st.integers(16, 600), st.integers(64, 2048))
@settings(max_examples=50)  # forks workers twice per example
def test_workers_never_change_the_fluent_bit_output(data, emit, mode, workers, block_size, chunk):
    """In the Fluent Bit modes the workers also vouch for what they rule out (``Filter.judged``)."""
    expected = run(data, emit, ENGINES[0], 0, block_size, chunk, 0, None, None, *mode)
    assert run(data, emit, ENGINES[0], workers, block_size, chunk, 0, None, None, *mode) == expected


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.sampled_from(["alerts", "all"]), st.integers(1, 3),
       st.integers(256, 4096))
def test_lines_over_the_limit_but_under_a_block_are_long_lines_with_workers_too(kinds, emit, workers, chunk):
    """--max-line-bytes under the read block: a worker that reads such a line whole stops before it
    and the filter reads on, so the output is one process's: the line passed on uninspected."""
    events = [json.dumps(flat_event(i, "ws04", "server" if kind == 1 else "benign", 4104)).encode() for i, kind in
              enumerate(kinds)]
    lines = [event[:-1] + b', "pad": "' + b"x" * 5000 + b'"}' if kind >= 2 else event
             for event, kind in zip(events, kinds)]
    data = b"\n".join(lines) + b"\n"
    expected = run(data, emit, ENGINES[0], 0, 1 << 16, chunk)
    assert expected[2].get("too_long", 0) == sum(kind >= 2 for kind in kinds)
    assert run(data, emit, ENGINES[0], workers, 1 << 16, chunk) == expected


def test_workers_vouch_for_clean_blocks_in_the_fluent_bit_modes(monkeypatch):
    """What a worker vouches for, the parent writes as it is or framed, without looking at its lines."""
    data = b"".join(json.dumps(flat_event(i, "ws04", "benign", 4104)).encode() + b"\n" for i in range(400))
    monkeypatch.setattr(Filter, "_pass_framed", lambda *args: pytest.fail("the parent looked at a clean block"))
    for mode in (("wrap", False), ("pass", True), ("wrap", True)):
        output, lines, _ = run(data, "all", ENGINES[0], 2, 4096, 8192, 0, None, None, *mode)
        assert lines == 400 and output.count(b"\n") == 400
        assert output == data if mode == ("wrap", False) else output.startswith(b"[1622725200.000000000,{")


# A rule set with a rule that holds no usable literal (an EventID alone): no block prefilter, so the
# detecting workers parse every line; without it, they parse the candidates of the scan.
LITERAL_FREE = {"title": "any 800", "id": "eid-800", "detection": {"e": {"EventID": 800}, "condition": "e"}}


def run_rules(data: bytes, emit: str, workers: int, block_size: int, chunk: int, rules: list) -> tuple:
    """``run`` for a rule set: the index names the rules a line can match."""
    plans = [compile_plan(parse_rule(yaml.safe_dump(rule), f"{rule['id']}.yml")) for rule in rules] + [PLAN]
    scanner, index = build_prefilter(plans, ENGINES[0])
    assert (scanner is None) == (LITERAL_FREE in rules) and index is not None
    with tempfile.NamedTemporaryFile() as source, tempfile.TemporaryFile() as sink:
        source.write(data)
        source.flush()
        source.seek(0)
        diagnostics = Diagnostics(io.StringIO())
        stream_filter = Filter(Engine(plans, FieldResolver(resolvers.PROFILES), 0), Output(sink.fileno()),
                               diagnostics, emit, prefilter=scanner, index=index, clock=lambda: 0, workers=workers)
        stream_filter.parallel_min = 0
        stream_filter.parallel_chunk = chunk
        stream_filter.run(source.fileno(), live=False, block_size=block_size, max_line=MAX_LINE)
        stream_filter.finish()
        sink.seek(0)
        return sink.read(), stream_filter.lines, dict(diagnostics.counts), dict(stream_filter.engine.stats), \
            rule_counts(stream_filter.engine)


@given(files(), st.sampled_from(["alerts", "matches", "all"]), st.integers(1, 3), st.integers(16, 600),
       st.integers(64, 2048), st.booleans())
@settings(max_examples=60)  # forks workers twice per example
def test_workers_that_match_a_rule_set_never_change_the_output(data, emit, workers, block_size, chunk, literal_free):
    """The workers parse and match; the parent correlates and writes, in file order: the same
    output, line count, diagnostics and counts (matched, alerts) as one process."""
    rules = RULE_SET + [LITERAL_FREE] if literal_free else RULE_SET
    expected = run_rules(data, emit, 0, block_size, chunk, rules)
    assert run_rules(data, emit, workers, block_size, chunk, rules) == expected


@given(files(), st.sampled_from(["alerts", "all"]), st.integers(2, 3), st.integers(64, 2048), st.booleans())
@settings(max_examples=25)  # forks workers per example
def test_workers_that_share_route_plans_never_change_the_output(data, emit, workers, chunk, literal_free):
    """Route plans made after a few lines (so that the corpus's routes get them) and shared by the
    workers through the run's directory, which is gone afterwards: the same output as one process
    that plans nothing."""
    rules = RULE_SET + [LITERAL_FREE] if literal_free else RULE_SET
    expected = run_rules(data, emit, 0, 256, chunk, rules)
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as scratch:
        patch.setattr(ri.RuleIndex, "ROUTE_AFTER", 3)
        patch.setattr(ri.RuleIndex, "POLL", 1)
        patch.setattr(tempfile, "tempdir", scratch)
        assert run_rules(data, emit, workers, 256, chunk, rules) == expected
        assert os.listdir(scratch) == []


def test_the_plans_left_by_a_killed_run_are_removed_by_the_next(tmp_path, monkeypatch):
    """A run killed before it removed its shared-plans directory: the next run with workers
    removes it, and leaves those of runs still alive."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f"{ri.PLANS_PREFIX}{gone}-abc"
    alive = tmp_path / f"{ri.PLANS_PREFIX}{os.getpid()}-def"
    for directory in (stale, alive):
        directory.mkdir()
        (directory / "plan").write_bytes(b"x" * 100)
    data = b"".join(json.dumps(flat_event(1622725200 + i, f"h{i % 3}", "benign")).encode() + b"\n"
                    for i in range(200))
    run_rules(data, "all", 2, 256, 1024, RULE_SET)
    assert not stale.exists() and alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name]


def rule_counts(engine: Engine) -> list:
    """Each rule's Detections, alerts, fires and suppressed (``Engine.rule_counts``): the parent's, with what
    the workers matched."""
    return [(rule.id, *counts) for rule, *counts in engine.rule_counts()]


def run_piped(data: bytes, emit: str, workers: int, block_size: int, rules: list, pause=None) -> tuple:
    """``run_rules`` fed by a pipe.  The whole input is in the pipe before the filter starts, so
    every read finds a full block, as from a fast writer, and the output does not depend on when
    input paused (a pause settles the watermark).  ``pause(write, output)``, when given, writes
    the input itself from another thread instead (``output()``: what the filter wrote so far)."""
    plans = [compile_plan(parse_rule(yaml.safe_dump(rule), f"{rule['id']}.yml")) for rule in rules] + [PLAN]
    scanner, index = build_prefilter(plans, ENGINES[0])
    read_end, write_end = os.pipe()
    parallel.widen_pipe(read_end, parallel.PIPE_SIZE)
    pipe = os.fdopen(write_end, "wb", buffering=0)
    with tempfile.NamedTemporaryFile() as sink:
        if pause is None:
            assert len(data) <= parallel.PIPE_SIZE
            pipe.write(data)
            pipe.close()
            writer = None
        else:
            def write():
                with pipe:
                    pause(pipe.write, lambda: open(sink.name, "rb").read())
            writer = threading.Thread(target=write)
            writer.start()
        try:
            diagnostics = Diagnostics(io.StringIO())
            stream_filter = Filter(Engine(plans, FieldResolver(resolvers.PROFILES), 0), Output(sink.fileno()),
                                   diagnostics, emit, prefilter=scanner, index=index, clock=lambda: 0,
                                   workers=workers)
            stream_filter.run(read_end, live=True, block_size=block_size, max_line=MAX_LINE)
            stream_filter.finish()
            sink.seek(0)
            return sink.read(), stream_filter.lines, dict(diagnostics.counts), dict(stream_filter.engine.stats), \
                rule_counts(stream_filter.engine)
        finally:
            if writer is not None:
                writer.join()
            os.close(read_end)


@given(files(), st.sampled_from(["alerts", "matches", "all"]), st.integers(1, 3), st.integers(64, 2048))
@settings(max_examples=40)  # forks workers per example
def test_workers_that_match_a_pipe_never_change_the_output(data, emit, workers, block_size):
    """A pipe's blocks, matched by workers as they come (``parallel.BlockWorkers``), give the output
    of one process: the same bytes, line count, diagnostics and counts, lines far over the
    inspection limit included (their pieces wait for every block handed out before them)."""
    rules = RULE_SET + [LITERAL_FREE]
    expected = run_piped(data, emit, 0, block_size, rules)
    assert run_piped(data, emit, workers, block_size, rules) == expected


# Fluent Bit winevtlog events with their data by position only (no Event_Data_As_Map): a rule set with
# a rule on their named fields says so of each (no_event_data_map), whether the event matched or not.
UNMAPPED_RULES = [
    {"title": "certutil", "id": "certutil", "logsource": {"product": "windows", "category": "process_creation"},
     "detection": {"s": {"EventID": 1, "Image|endswith": "\\certutil.exe"}, "condition": "s"}},
    {"title": "on ws1", "id": "on-ws1", "detection": {"s": {"EventID": 1, "Computer": "ws1"}, "condition": "s"}},
]


def _winevtlog(number: int, host: str, mapped: bool) -> bytes:
    event = {"ProviderName": "Microsoft-Windows-Sysmon", "EventID": 1, "Computer": host, "EventRecordID": number,
             "TimeCreated": "2026-12-03 10:00:%02d +0000" % (number % 60),
             "Channel": "Microsoft-Windows-Sysmon/Operational",
             "StringInserts": ["-", "2026", "{x}", 42, "C:\\Windows\\certutil.exe", "certutil -urlcache"]}
    if mapped:
        event["EventData"] = {"Image": "C:\\Windows\\certutil.exe", "CommandLine": "certutil -urlcache"}
    return json.dumps(event).encode() + b"\n"


@given(st.lists(st.tuples(st.sampled_from(["ws1", "ws2"]), st.booleans()), min_size=1, max_size=60),
       st.sampled_from(["alerts", "all"]), st.integers(1, 3), st.integers(64, 2048), st.booleans())
@settings(max_examples=25)  # forks workers per example
def test_workers_say_what_one_process_says_of_events_without_their_data_map(events, emit, workers, size, piped):
    """A detecting worker matched such a line and the parent, which says it, never saw it when nothing
    matched: with workers (a rule set on a pipe by default) nothing was ever said of them."""
    data = b"".join(_winevtlog(number, host, mapped) for number, (host, mapped) in enumerate(events))
    rules = UNMAPPED_RULES + [LITERAL_FREE]
    expected = run_piped(data, emit, 0, size, rules) if piped else run_rules(data, emit, 0, size, size, rules)
    assert expected[2].get("no_event_data_map", 0) == sum(not mapped for _, mapped in events)
    got = run_piped(data, emit, workers, size, rules) if piped else run_rules(data, emit, workers, size, size, rules)
    assert got == expected


def test_block_workers_give_results_in_order_and_share_the_bytes():
    """Blocks go to the least loaded worker (a reader's blocks alternate big and small), and
    results come back in the order the blocks were handed out, whatever the worker."""
    workers = parallel.BlockWorkers(2, lambda block, end, candidates, suspects: [(0, 0, end, block[:3])])
    workers.start()
    try:
        blocks = [b"a\n" * 500, b"b\n", b"c\n" * 400, b"d\n" * 3, b"e\n" * 2]
        for block in blocks:
            workers.hand(block)
        assert [worker for worker, _ in workers.pending] == [0, 1, 1, 1, 1]
        assert [workers.take() for _ in blocks] == [(block, block.count(b"\n"), [(0, 0, len(block), block[:3])])
                                                    for block in blocks]
    finally:
        workers.close()


def test_blocks_held_by_pipe_workers_are_written_before_the_filter_waits_for_input():
    """When the input pauses, what the workers hold is taken and written before the reader waits:
    an alert does not wait for the next line."""
    first = _events(6)  # one block, whose last line alone alerts (a single-event rule)
    seen = []

    def pause(write, output):
        write(first)
        deadline = time.monotonic() + 20
        while b'"kind":"alert"' not in output() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.append(output())
        write(_events(3))

    out, lines, *_ = run_piped(b"", "alerts", 2, 1 << 16, RULE_SET + [LITERAL_FREE], pause)
    assert b'"kind":"alert"' in seen[0] and lines == 9
    assert out.startswith(seen[0])


def test_a_pipe_worker_that_dies_leaves_its_block_and_the_rest_to_the_filter(monkeypatch):
    real = parallel.BlockWorkers._serve
    served = [0]

    def dying(self, read_end, write_end):
        if served[0] == 0:  # the first worker forked dies on its second block
            original = self.detect
            blocks = [0]

            def detect(*args):
                blocks[0] += 1
                if blocks[0] == 2:
                    os._exit(3)
                return original(*args)
            self.detect = detect
        served[0] += 1
        real(self, read_end, write_end)

    data = _events(300)
    rules = RULE_SET + [LITERAL_FREE]
    expected = run_piped(data, "all", 0, 1024, rules)
    monkeypatch.setattr(parallel.BlockWorkers, "_serve", dying)
    assert run_piped(data, "all", 2, 1024, rules) == expected
    assert expected[3]["matched"] > 100


def test_workers_match_the_lines_and_the_parent_only_correlates(monkeypatch):
    """Candidates are parsed and matched in the workers: the parent's engine matches nothing itself."""
    matched_here = []
    real = Engine.match

    def recording(self, *args):
        matched_here.append(os.getpid())
        return real(self, *args)

    data = _events(300)
    expected = run_rules(data, "all", 0, 1024, 4096, RULE_SET + [LITERAL_FREE])
    assert expected[3]["matched"] > 100 and expected[0].count(b'"kind":"alert"') >= 1
    assert sum(detections for _, detections, *_ in expected[4]) >= expected[3]["matched"]  # counted by the parent
    monkeypatch.setattr(Engine, "match", recording)
    assert run_rules(data, "all", 2, 1024, 4096, RULE_SET + [LITERAL_FREE]) == expected
    assert run_piped(data, "all", 2, 1024, RULE_SET + [LITERAL_FREE]) == expected
    assert matched_here == []  # the forked workers' calls were recorded in their own copies


def test_frames_that_no_longer_fit_their_block_leave_it_to_be_read_again():
    """A worker's frames are for the block as it read it; rewritten since (another line count),
    the parent reads the block afresh."""
    data = b"".join(json.dumps(flat_event(i, "ws04", "benign", 4104)).encode() + b"\n" for i in range(3))
    expected, _, _ = run(data, "all", ENGINES[0], 0, fluentbit_time=True)
    with tempfile.NamedTemporaryFile() as source, tempfile.TemporaryFile() as sink:
        source.write(data)
        source.flush()
        stream_filter = Filter(Engine([PLAN], FieldResolver(resolvers.PROFILES), 0), Output(sink.fileno()),
                               Diagnostics(io.StringIO()), "all",
                               prefilter=pf.Prefilter(PLAN.prefilter_literals(pf.needle)),
                               clock=lambda: 0, fluentbit_time=True)
        assert stream_module.frame(data[:-1].split(b"\n"), [b"[1.000000000,"]) is None
        assert stream_filter._take_block(source.fileno(), parallel.RULED_OUT, 0, [len(data), 1, [b"[1.000000000,"]])
        stream_filter.finish()
        sink.seek(0)
        assert sink.read() == expected and stream_filter.lines == 3


def test_workers_do_the_scanning(monkeypatch):
    # the parallel path is taken (and not silently skipped) when a file is big enough
    seen = []
    real = parallel.scan_chunk

    def recording(fd, first, bounds, *rest):
        seen.append(os.getpid())
        return real(fd, first, bounds, *rest)

    monkeypatch.setattr(parallel, "scan_chunk", recording)
    data = b"".join(b'{"n":%d}\n' % n for n in range(200))
    out, lines, _ = run(data, "all", ENGINES[0], 2, chunk=128)
    assert (out, lines) == (data, 200)
    assert seen == []  # the chunks were scanned in the forked workers, not here

    stream_filter = Filter(Engine([PLAN], FieldResolver(resolvers.PROFILES), 0),
                           Output(os.open(os.devnull, os.O_WRONLY)), Diagnostics(io.StringIO()), "alerts",
                           prefilter=pf.Prefilter([b"x"]), workers=2)
    assert stream_filter.parallel_min == 2 * parallel.CHUNK  # small files are not worth a fork


def _events(count: int) -> bytes:
    kinds = ["benign"] * 5 + ["server", "client"]
    return b"".join(b'%s\n' % __import__("json").dumps(flat_event(n, f"h{n % 4}", kinds[n % 7])).encode()
                    for n in range(count))


def test_a_worker_that_dies_leaves_its_chunk_to_the_parent(monkeypatch):
    real = parallel.scan_chunk

    def dying(fd, first, bounds, scan, count, block, max_line, send, *rest):
        if bounds[0] >= 2048:  # the third chunk on: dies after one record
            real(fd, first, bounds, scan, count, 64, max_line, lambda record: (send(record), os._exit(3)), *rest)
        real(fd, first, bounds, scan, count, block, max_line, send, *rest)

    data = _events(60)
    expected = run(data, "matches", ENGINES[0], 0, chunk=1024)
    monkeypatch.setattr(parallel, "scan_chunk", dying)
    assert run(data, "matches", ENGINES[0], 2, chunk=1024) == expected
    assert expected[0].count(b'"kind":"alert"') >= 1  # the comparison covers alerts


def test_a_file_that_shrinks_while_workers_scan_it_is_read_as_it_is_now(monkeypatch):
    data = _events(60)
    cut = 1500  # inside the first chunk, mid-line
    real = parallel.scan_chunk

    def shrinking(fd, first, bounds, *rest):
        if bounds[0] == 0:
            os.ftruncate(fd, cut)  # before the first chunk is read; later chunks may have been read already
        return real(fd, first, bounds, *rest)

    expected = run(data[:cut], "all", ENGINES[0], 0, chunk=1024)
    monkeypatch.setattr(parallel, "scan_chunk", shrinking)
    for _ in range(3):
        assert run(data, "all", ENGINES[0], 2, chunk=1024) == expected


def test_a_file_shorter_than_its_size_said_is_read_to_its_end(monkeypatch):
    data = _events(30)
    real_fstat = os.fstat

    class Bigger:
        def __init__(self, result):
            self.st_size = result.st_size + 5000
            self.st_mode = result.st_mode

    expected = run(data, "all", ENGINES[0], 0, chunk=512)
    monkeypatch.setattr(stream_module.os, "fstat", lambda fd: Bigger(real_fstat(fd)))
    assert run(data, "all", ENGINES[0], 2, chunk=512) == expected


class StopAfter:
    """A stop request that comes after ``checks`` looks at it."""

    def __init__(self, checks: int):
        self.checks = checks

    @property
    def requested(self) -> bool:
        self.checks -= 1
        return self.checks < 0


@given(st.integers(0, 40), st.integers(1, 3))
def test_a_stop_ends_the_input_at_a_line_boundary_with_nothing_lost_before_it(checks, workers):
    data = b"".join(b'{"n":%d,"pad":"%s"}\n' % (n, b"p" * (n * 7 % 90)) for n in range(300))  # passed on as is
    out, lines, _ = run(data, "all", ENGINES[0], workers, block_size=256, chunk=700, stop=StopAfter(checks))
    assert data.startswith(out) and (out == b"" or out.endswith(b"\n"))
    assert lines == out.count(b"\n")


def test_workers_are_ended_and_reaped(monkeypatch):
    pids = []

    class Recording(parallel.Workers):
        def __exit__(self, *exc):
            pids.extend(self._pids)
            super().__exit__(*exc)

    monkeypatch.setattr(parallel, "Workers", Recording)
    stop = StopAfter(2)  # leaves workers with results nobody reads
    run(_events(200), "alerts", ENGINES[0], 2, block_size=128, chunk=512, stop=stop)
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_scan_chunk_stops_short_at_a_line_over_the_limit(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b'{"a":1}\n' + b"y" * 300 + b'\n{"b":2}\n')
    sent = []
    with open(path, "rb") as handle:
        parallel.scan_chunk(handle.fileno(), 0, (0, 400), lambda *a: ([], []), stream_module._newlines,
                            16, 100, sent.append)
    assert sent == [(parallel.RULED_OUT, 0, 8, 1), (parallel.CHUNK_END, 8)]


@pytest.mark.parametrize("cpus, expected", [(1, 0), (2, 2), (6, 6), (64, parallel.MAX_WORKERS)])
def test_default_workers_follow_the_cpus_this_process_may_use(monkeypatch, cpus, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert parallel.default_workers() == expected


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "pipeshell_filter", *args], stdin=stdin, capture_output=True)


def test_cli_workers_give_the_same_output_on_a_big_file(tmp_path):
    rng = random.Random(5)
    path = tmp_path / "big.ndjson"
    body = _events(70)
    filler = b'{"EventID":1,"Computer":"ws","Image":"C:\\\\Windows\\\\x.exe","pad":"%s"}\n' % (b"p" * 1500)
    with open(path, "wb") as handle:
        for _ in range(3):  # over PARALLEL_MIN: incidents at the start, middle and end
            handle.write(body)
            handle.write(filler * ((12 << 20) // len(filler) + rng.randint(0, 9)))
        handle.write(body)
    results = []
    for workers in ("0", "2"):
        with open(path, "rb") as stdin:
            done = _cli("--emit", "matches", "--idle", "0", "--workers", workers, stdin=stdin)
        assert done.returncode == 0, done.stderr
        results.append((done.stdout, done.stderr))
    assert results[0] == results[1]
    assert results[0][0].count(b'"kind":"alert"') >= 3


def test_cli_refuses_a_negative_worker_count():
    done = _cli("--workers", "-1", stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert done.stderr.decode().strip().count("\n") == 0 and "--workers" in done.stderr.decode()


def test_no_processes_to_be_had_means_the_file_is_read_as_usual(monkeypatch):
    data = _events(40)
    expected = run(data, "matches", ENGINES[0], 0, chunk=512)
    forks = []

    def failing_fork():
        forks.append(1)
        if len(forks) == 2:  # the second worker cannot be made: the first is ended, nothing is lost
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real_fork()

    real_fork = os.fork
    monkeypatch.setattr(os, "fork", failing_fork)
    assert run(data, "matches", ENGINES[0], 2, chunk=512) == expected
    assert len(forks) == 2


def test_workers_reaped_by_the_system_are_no_error():
    # started with SIGCHLD ignored, children are reaped as they exit: waiting for them finds none
    data = _events(40)
    expected = run(data, "all", ENGINES[0], 0, chunk=512)
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        assert run(data, "all", ENGINES[0], 2, chunk=512) == expected
    finally:
        signal.signal(signal.SIGCHLD, previous)


@given(st.lists(st.sampled_from(["event", "server", "forged", "escaped", "decoy"]), min_size=1, max_size=120),
       st.integers(1, 3), st.integers(64, 1024), st.booleans())
@settings(max_examples=25)  # forks workers per example
def test_workers_of_a_match_stage_never_pass_on_a_line_of_its_own_record_type(kinds, workers, chunk, rule_set):
    """A match stage's scanning workers pass on the lines the block prefilter rules out as the block
    holds them: a line carrying a Detection's "type" must be a candidate, which the parent wraps,
    as one process does."""
    texts = {"forged": b'{"type":"sigma.detection","rule":"r","time":1}',
             "escaped": b'{"type":"sigma\\u002eheartbeat","agent":"a","time":1}',
             "decoy": b'{"type":"sigma.detections"}'}
    lines = [texts[kind] if kind in texts else
             json.dumps(flat_event(i, "ws04", "server" if kind == "server" else "benign", 4104)).encode()
             for i, kind in enumerate(kinds)]
    data = b"\n".join(lines) + b"\n"
    rules = RULE_SET + [LITERAL_FREE] if rule_set else []  # with LITERAL_FREE no block prefilter: no workers
    plans = [compile_plan(parse_rule(yaml.safe_dump(rule), f"{rule['id']}.yml")) for rule in rules] + [PLAN]

    def run_match(processes):
        scanner, index = build_prefilter(plans, ENGINES[0], also=stream_module.OWN_TYPES)
        with tempfile.NamedTemporaryFile() as source, tempfile.TemporaryFile() as sink:
            source.write(data)
            source.flush()
            source.seek(0)
            stream_filter = Filter(Engine(plans, FieldResolver(resolvers.PROFILES), 0), Output(sink.fileno()),
                                   Diagnostics(io.StringIO()), "all", prefilter=scanner, index=index,
                                   clock=lambda: 0, workers=processes, stage="match")
            stream_filter.parallel_min = 0
            stream_filter.parallel_chunk = chunk
            stream_filter.run(source.fileno(), live=False, block_size=256, max_line=MAX_LINE)
            stream_filter.finish()
            sink.seek(0)
            return sink.read()

    expected = run_match(0)
    assert run_match(workers) == expected
    passed = expected.splitlines()
    assert not any(line in passed for line in (texts["forged"], texts["escaped"]))
    assert sum(line == texts["decoy"] for line in passed) == kinds.count("decoy")
    assert sum(b'"impersonation"' in line for line in passed) == kinds.count("forged") + kinds.count("escaped")


def test_pipe_workers_whose_pipes_are_past_selects_limit_still_match():
    """A filter started with a thousand descriptors open (inherited from its parent), or with
    ``--workers 256`` and a few hundred: the workers' pipes are numbered past 1023, which
    ``select`` cannot watch; the blocks are matched all the same."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1100:
        pytest.skip("too few descriptors allowed here")
    held = []
    try:
        while not held or held[-1] < 1030:
            held.append(os.open(os.devnull, os.O_RDONLY))
        workers = parallel.BlockWorkers(2, lambda block, end, candidates, suspects: [(0, 0, end, block[:2])])
        workers.start()
        try:
            blocks = [b"a\n" * 3, b"b\n", b"c\n" * 2]
            for block in blocks:
                workers.hand(block)
            assert [workers.take() for _ in blocks] == [(block, block.count(b"\n"), [(0, 0, len(block), block[:2])])
                                                        for block in blocks]
        finally:
            workers.close()
    finally:
        for fd in held:
            os.close(fd)


def run_match_stage(data: bytes, workers: int, block_size: int, chunk: int) -> tuple:
    """``run`` as a match stage with heartbeats (every 30 s of event time): its output and line count."""
    scanner, index = build_prefilter([PLAN], ENGINES[0], also=stream_module.OWN_TYPES)
    with tempfile.NamedTemporaryFile() as source, tempfile.TemporaryFile() as sink:
        source.write(data)
        source.flush()
        source.seek(0)
        stream_filter = Filter(Engine([PLAN], FieldResolver(resolvers.PROFILES), 0), Output(sink.fileno()),
                               Diagnostics(io.StringIO()), "all", prefilter=scanner, index=index, clock=lambda: 0,
                               workers=workers, stage="match")
        stream_filter.send_heartbeats("agent", 30, 300 * 10 ** 9)
        stream_filter.parallel_min = 0
        stream_filter.parallel_chunk = chunk
        stream_filter.run(source.fileno(), live=False, block_size=block_size, max_line=MAX_LINE)
        stream_filter.finish()
        sink.seek(0)
        return sink.read(), stream_filter.lines


@given(st.integers(0, 10 ** 6), st.integers(1, 3), st.integers(1 << 12, 1 << 16), st.integers(1 << 12, 1 << 17))
@settings(max_examples=15, deadline=None)  # forks workers per example
def test_workers_of_a_match_stage_send_the_heartbeats_one_process_sends(seed, workers, block_size, chunk):
    """The event times of the lines the prefilter rules out are sampled (one line every 64 KiB of input)
    for the agent's heartbeats: the same lines whatever blocks the file is read in, so a match stage
    with workers sends the same heartbeats at the same places as one process."""
    rng = random.Random(seed)
    seconds, lines = 0, []
    while sum(map(len, lines)) < 800_000:
        seconds += rng.randint(0, 4)
        kind = "server" if rng.random() < 0.01 else "benign"
        event = flat_event(seconds, rng.choice(["ws1", "ws2", "ws3"]), kind)
        event["pad"] = "p" * rng.randint(0, 3000)
        lines.append(json.dumps(event).encode() + b"\n")
    data = b"".join(lines)
    expected = run_match_stage(data, 0, block_size, chunk)
    assert expected[0].count(b'"sigma.heartbeat"') > 10
    assert run_match_stage(data, workers, block_size, chunk) == expected
