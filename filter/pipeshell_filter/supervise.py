"""``pipeshell-filter run``: collector | filter | shipper as one unit that lives and dies as one.

A shell pipe has no owner: when the filter dies the collector runs on, reads new lines into a
dead pipe and moves its stored position past them, and the shell does not return.  Here one
process starts the members as a pipe chain (each one's stdout the next one's stdin) and:

* **The filter starts before the collector**: the members before it start once it is ready
  (``tell_ready``), so a filter that fails as it starts loses nothing the collector would
  have read and stored its position past.
* **A member that ends on its own** (any status, or killed), not because the member before it
  ended, is a failure: one line on stderr naming it and how it ended, the chain is stopped,
  exit status 1.
* **SIGTERM, SIGINT or SIGHUP** stop the chain **from the front**: only the first member gets
  SIGTERM.  The members run with SIGINT and SIGHUP blocked (``_die_with``), so one sent to every
  process of the unit is the unit's alone.  Each later member sees end of input once the one before
  it is gone, so what the collector handed on drains through the filter (which saves its
  ``--state`` at end of input) and the shipper flushes last.  Exit status 0 when every member then
  ended cleanly.  SIGTSTP (Ctrl-Z) is said on stderr and stops nothing (``_install``).
* **A failure stops the chain the same way.**  Members downstream of the dead one already have
  end of input; those upstream of it end when the front is stopped.  A member sent SIGTERM in
  the middle of the chain would drop what is still in its pipe (the filter stops reading), so
  nobody but the front is signalled.
* ``grace`` seconds after the stop began, the first member still running gets SIGKILL (its
  whole process group), and so on down the chain every ``DRAIN`` seconds: the members after a
  killed one still see end of input, so the filter still saves its state.  A member whose reader
  has ended gets ``DRAIN`` seconds, not the rest of the grace (``_no_reader``).  A second stop
  signal sends SIGTERM to every member left, a third SIGKILL.
* **Nothing outlives the unit.**  Each member leads its own session, so a terminal's Ctrl-C
  reaches the supervisor alone (which then stops the chain in order) and a member's own
  children can be found: when a member ends, whatever is left of its process group is killed
  (it could hold the pipe open, and the next member would never see end of input).  On Linux the
  first member gets SIGTERM if the supervisor itself dies (``PR_SET_PDEATHSIG``), and the others
  end as in a stop, by end of input in order: a SIGTERM to every member at once would drop what
  is in the pipes after the collector stored its position past it.  Their stderr is then read by
  the supervisor's heir (``_start_heir``), so what they say as they end is kept and none of them
  meets a broken pipe on it.  A first member that ignores
  SIGTERM, or leaves a child holding its output open, then keeps the chain running, and a member
  that leaves its session (a daemon) escapes; systemd's cgroup does not let them escape.
* Exit status 0 also when the first member ends with status 0 and every later one follows,
  in order, with 0: a finished replay.
* **Each member's stderr line comes out on the unit's behind its role** (``collector: ``,
  ``filter: ``, ``shipper: ``), whole and byte for byte (``Logs``).
"""

from __future__ import annotations

import errno
import os
import re
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from typing import List, Optional, Sequence

from .values import one_line  # a member's command line in a report: one line

DEFAULT_GRACE = 30.0
SETTLE = 0.25  # seconds to wait for the ends one end brings about, before judging it
DRAIN = 5.0  # seconds each member gets after the one before it was killed at the end of the grace
PREFIX = "pipeshell-filter run"
# Set for the members: the filter then ends by SIGPIPE when its reader went away (a program's usual
# end there, which ``_input_ended`` reads), not with the quiet status 0 it gives under ``| head``.
SUPERVISED = "PIPESHELL_FILTER_SUPERVISED"
# Set for the filter member: the file descriptor on which it says it is ready (``tell_ready``).
READY_FD = "PIPESHELL_FILTER_READY_FD"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Blocked in the members: sent to every process of the unit, they are the unit's alone (``_die_with``).
UNIT_SIGNALS = (signal.SIGINT, signal.SIGHUP)
LINE_HELD = 1 << 20  # bytes of a member's unfinished stderr line held back (``Logs``); past that it is written
HELD_BEHIND = 8 << 20  # bytes of the others' lines held behind a line written in part; past that it is cut
CONTINUED = b"(continued) "  # after the role, in front of the rest of a line that was cut
OUT_HELD = 16 << 20  # bytes waiting for the unit's stderr to take them (``Logs``); past that, lines are dropped
LOGS_DRAIN = 1.0  # seconds to read what the members left in their stderr once the last one ended
_PR_SET_PDEATHSIG = 1
_NAME_LIMIT = 160  # characters of a member's command line in a report


class CommandError(ValueError):
    """A member's command line that cannot be run: empty, badly quoted, no such program."""


def parse_command(option: str, text: str) -> List[str]:
    """``text`` split as a shell splits words (no shell runs it); the program must exist now,
    so that a typo is a usage error before anything starts rather than a restart loop."""
    try:
        argv = shlex.split(text)
    except ValueError as error:
        raise CommandError(f"{option} {text!r}: {error}") from None
    if not argv:
        raise CommandError(f"{option} is empty")
    program = argv[0]
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise CommandError(f"{option}: {one_line(program)} is not an executable file")
    elif shutil.which(program) is None:
        raise CommandError(f"{option}: {one_line(program)} is not found on PATH")
    return argv


FLUENT_BIT_PROGRAMS = ("fluent-bit", "td-agent-bit")
DRY_RUN_TIMEOUT = 30.0  # seconds; a check that takes longer is given up, and the start will tell
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
_LOG_PREFIX = re.compile(r"^(\[[^]]*\] )?\[\s*error\] ")


def check_configuration(option: str, argv: Sequence[str], timeout: float = DRY_RUN_TIMEOUT) -> None:
    """A Fluent Bit member's configuration checked by Fluent Bit itself (``--dry-run``) before
    anything starts.  A YAML error, an unknown plugin or property, a missing file: Fluent Bit exits
    1 at once, the unit exited 1, and systemd restarted it every few seconds for ever; now it is one
    line and a usage error (exit 2).  Values a plugin refuses only when it starts (a missing ``db``
    directory) pass this check: the member then fails at its start, exit 1, like any failure."""
    name = os.path.basename(argv[0]).lower()
    if (name[:-4] if name.endswith(".exe") else name) not in FLUENT_BIT_PROGRAMS:
        return
    try:
        result = subprocess.run([argv[0], "--dry-run", *argv[1:]], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return  # no verdict: the start itself will tell
    if result.returncode <= 0:  # accepted, or the check itself crashed: no verdict on the file
        return
    errors = [_LOG_PREFIX.sub("", line).strip() for line in
              _COLOURS.sub("", result.stdout.decode("utf-8", "replace")).splitlines() if _LOG_PREFIX.match(line)]
    if errors:
        command = one_line(shlex.join(argv))
        raise CommandError(f"{option}: {command} refuses its configuration ({name} --dry-run): {errors[0]}")


class Member:
    """One process of the chain: its command, and once it ended its wait status."""

    def __init__(self, argv: Sequence[str], name: Optional[str] = None, role: Optional[str] = None):
        self.argv = list(argv)
        self.role = role  # in front of each line it writes on stderr (``Logs``); else "member N"
        name = one_line(name if name is not None else shlex.join(self.argv))
        self.name = name if len(name) <= _NAME_LIMIT else name[:_NAME_LIMIT - 3] + "..."
        self.number = 0  # 1-based position, set by the supervisor
        self.process: Optional[subprocess.Popen] = None
        self.status: Optional[int] = None  # os.waitpid status
        self.terminated = False  # the supervisor sent it SIGTERM
        self.killed = False  # the supervisor sent it SIGKILL
        self.by_end_of_input: Optional[bool] = None  # ended cleanly because the member before it ended

    @property
    def running(self) -> bool:
        return self.process is not None and self.status is None

    @property
    def ended(self) -> bool:
        """Exited, or never started (its start failed): either way its pipe ends are closed."""
        return not self.running

    def clean(self) -> bool:
        """Exit status 0; or, after the SIGTERM the supervisor sent, death by it or status 143
        (what ``tail``, ``sleep`` or a shell do on a stop request)."""
        if self.status is None:
            return False
        if os.WIFEXITED(self.status):
            return os.WEXITSTATUS(self.status) == 0 or (self.terminated and os.WEXITSTATUS(self.status) == 143)
        return os.WIFSIGNALED(self.status) and os.WTERMSIG(self.status) == signal.SIGTERM and self.terminated

    def how(self) -> str:
        if self.status is None:
            return "did not start"
        if os.WIFSIGNALED(self.status):
            number = os.WTERMSIG(self.status)
            try:
                return f"killed by {signal.Signals(number).name}"
            except ValueError:
                return f"killed by signal {number}"
        return f"exited with status {os.WEXITSTATUS(self.status)}"

    def label(self) -> str:
        return f"member {self.number} ({self.name})"


def filter_member(options: Sequence[str]) -> Member:
    """The filter: this same program with ``options``, run by this interpreter (whatever name the
    unit was started by), named in reports as the user would type it."""
    return Member([sys.executable, "-m", "pipeshell_filter", *options], shlex.join(["pipeshell-filter", *options]),
                  "filter")


def _start_heir(logs: Sequence[tuple]) -> Optional[tuple]:
    """A process that reads the members' stderr (``logs``: read end and role) if the supervisor
    dies; ``(pid, fd)``: one byte written on ``fd`` sends it away, the supervisor having read them
    itself.  Without it, a kill -9 of the supervisor left those pipes without a reader while the
    members drained: the next line a member wrote on stderr killed it (SIGPIPE, or a Python
    program's BrokenPipeError) before it had finished, and what they said was lost.

    It waits in a session of its own (a ``kill -9`` of the unit's process group leaves it, as it
    leaves the members), ignoring the stop signals and job control: it ends when the members'
    pipes end.  The supervisor starts no thread, so the fork (as ``_die_with``) is safe."""
    life_read, life_write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(life_read)
        os.close(life_write)
        return None
    if pid:
        os.close(life_read)
        return pid, life_write
    try:
        _be_heir(life_read, logs)
    finally:
        os._exit(0)


def _be_heir(life: int, logs: Sequence[tuple]) -> None:
    os.setsid()
    signal.set_wakeup_fd(-1)
    for number in STOP_SIGNALS + (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(number, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    keep = sorted({2, life} | {fd for fd, _ in logs})  # no end of the chain's pipes, nor of the logs' write ends
    for low, high in zip([2] + keep, keep + [os.sysconf("SC_OPEN_MAX")]):
        os.closerange(low + 1, high)
    if os.read(life, 1):  # the supervisor ended and read the pipes to their ends
        return
    heir = Logs()
    for fd, role in logs:
        heir.add(fd, role)
    heir.note("the supervisor died: the chain stops from its front by itself; what its members still write follows")
    while heir.fds():
        found, writable, _ = select.select(heir.fds(), heir.waiting(), [])
        for fd in found:
            heir.read(fd)
        if writable:
            heir.flush()
    heir.close()


def _has_ended(member: Member) -> bool:
    """The member's process has ended; left to be reaped (``Supervisor._collect``)."""
    try:
        return os.waitid(os.P_PID, member.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def tell_ready() -> None:
    """The filter, in ``run``'s chain: its rules, state and bus are in place and it is about to
    read, so the members before it may start now (``Supervisor._start``).  Nothing outside a chain."""
    fd = os.environ.pop(READY_FD, None)  # not for its own children
    if fd is None:
        return
    try:
        os.write(int(fd), b"1")
        os.close(int(fd))
    except (ValueError, OSError):
        pass


class _Source:
    """One member's stderr pipe, or (``fd`` None) the supervisor's own reports; what is not written yet."""

    def __init__(self, fd: Optional[int], prefix: str):
        self.fd = fd
        self.prefix = prefix.encode("utf-8", "backslashreplace") + b": "
        self.pending = bytearray()
        self.ended = False  # its pipe reached its end: an unfinished last line gets its newline
        self.continued = False  # its line was cut (``Logs._cut``): the rest is marked ``CONTINUED``


class _Output:
    """The unit's stderr, written without ever blocking (``send`` raises ``BlockingIOError``), and
    without making it non-blocking for the others that share it: the shell's terminal, or the last
    member's stdout under ``2>&1``, whose writes would then fail.  A pipe or a terminal is opened
    anew (a description of our own), a socket (systemd's journal) is sent to with ``MSG_DONTWAIT``;
    a file, or what cannot be reopened, is written as it is."""

    def __init__(self, fd: int):
        self.fd = fd  # to wait on
        self._socket: Optional[socket.socket] = None
        self._own: Optional[int] = None
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISSOCK(mode):
                self._socket = socket.socket(fileno=os.dup(fd))
            elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
                self._own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            pass

    def send(self, data) -> int:
        if self._socket is not None:
            return self._socket.send(data, socket.MSG_DONTWAIT)
        return os.write(self.fd if self._own is None else self._own, data)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._own is not None:
            os.close(self._own)
        self._socket = self._own = None


class Logs:
    """The members' stderr, each line written to the unit's own with the member's role in front
    (``filter: ``): in the unit's journal the three wrote alike.  A line is written whole, its bytes
    as they came (not decoded: invalid UTF-8 stays as it is), and an unfinished last line gets its
    newline when its member ends.  A line longer than ``LINE_HELD`` is written as it comes, and the
    other lines wait for its end, up to ``HELD_BEHIND`` bytes: past that it is cut, and its rest comes
    as a line of its own marked ``CONTINUED``.  So lines of a few MB come out whole, and what is held
    is bounded: a member that wrote a long line without its end held every other line back, in
    memory and out of the log, for as long as it ran.

    Writing never blocks the supervision (``_Output``): what the unit's stderr does not take at once
    waits, up to ``OUT_HELD`` bytes, for the loop to see it writable (``waiting``, ``flush``); past
    that, lines are dropped, and one line says how many bytes once it takes them again.  A stderr
    nobody read (``2>`` a pipe whose reader stopped, a stalled journal) blocked the supervisor on
    its first line too many: it stopped reading the members (who then blocked on theirs), stopping
    them, and answering signals."""

    def __init__(self, out: int = 2):
        self.output = _Output(out)
        self.sources = [_Source(None, PREFIX)]
        self.owner: Optional[_Source] = None  # the source whose line is written in part
        self.line_held = LINE_HELD
        self.held_behind = HELD_BEHIND
        self.out_held = OUT_HELD
        self.unsent = bytearray()  # taken for the unit's stderr, not written yet
        self.open = False  # what was taken ends in the middle of a line
        self.dropped = 0  # bytes dropped since the last line that said so
        self.gone = False  # the unit's stderr is closed, or nobody will ever read it

    def add(self, fd: int, role: str) -> None:
        os.set_blocking(fd, False)
        self.sources.append(_Source(fd, role))

    def fds(self) -> List[int]:
        return [source.fd for source in self.sources if source.fd is not None]

    def waiting(self) -> List[int]:
        """What to wait on for writing: the unit's stderr while it has not taken everything."""
        return [self.output.fd] if self.unsent and not self.gone else []

    def flush(self) -> None:
        """As much as the unit's stderr takes now."""
        while self.unsent and not self.gone:
            try:
                written = self.output.send(self.unsent)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError:  # closed, or nobody reads it: the lines go nowhere, as a member's own would
                self.gone = True
                self.unsent.clear()
                return
            del self.unsent[:written]

    def note(self, message: str) -> None:
        """One line of the supervisor's own, after what the members wrote before it."""
        readable, _, _ = select.select(self.fds(), [], [], 0)
        for fd in readable:
            self.read(fd)
        self.sources[0].pending += message.encode("utf-8", "backslashreplace") + b"\n"
        self._write()

    def read(self, fd: int) -> None:
        """What the member wrote on ``fd`` (readable), written out as far as its lines are whole."""
        source = next(source for source in self.sources if source.fd == fd)
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            source.pending += data
        else:
            self._end(source)
        self._write()

    def close(self, wait: float = 1.0) -> None:
        """Every pipe closed (a member's child that left its session may hold one open), every
        unfinished line written, and what the unit's stderr has not taken given to it for as long
        as it takes some within ``wait`` seconds each time."""
        for source in self.sources[1:]:
            self._end(source)
        self._write()
        if self.dropped:
            self._say_dropped()
        while True:
            self.flush()
            if not self.waiting():
                break
            left = len(self.unsent)
            select.select([], self.waiting(), [], wait)
            self.flush()
            if len(self.unsent) == left:
                break
        self.output.close()

    @staticmethod
    def _end(source: _Source) -> None:
        if source.fd is not None:
            os.close(source.fd)
            source.fd = None
        source.ended = True

    def _write(self) -> None:
        """The line written in part first; then, unless it is still unfinished, each one's whole lines;
        it is cut when more than ``held_behind`` bytes wait for its end."""
        while True:
            if self.owner is not None:
                self._write_from(self.owner)
            for source in self.sources:
                if self.owner is not None:
                    break
                self._write_from(source)
            if self.owner is None or sum(len(source.pending) for source in self.sources) <= self.held_behind:
                return
            self._cut()

    def _cut(self) -> None:
        """The line written in part ends here; the rest of it will come as a line of its own."""
        self._put(b"\n", continues=True)
        self._let_go()

    def _let_go(self) -> None:
        if self.owner is not None:
            self.owner.continued = True
            self.owner = None

    def _write_from(self, source: _Source) -> None:
        data = source.pending
        if self.owner is source:  # the rest of its line has no prefix
            end = data.find(b"\n") + 1
            if not end:
                rest = bytes(data) + (b"\n" if source.ended else b"")
                data.clear()
                self.owner = None if source.ended else source
                self._put(rest, continues=True)
                return
            rest = bytes(data[:end])
            del data[:end]
            self.owner = None
            self._put(rest, continues=True)
        cut = data.rfind(b"\n") + 1
        lines = [line + b"\n" for line in data[:cut].split(b"\n")[:-1]]
        del data[:cut]
        if data and (source.ended or len(data) > self.line_held):
            lines.append(bytes(data) + (b"\n" if source.ended else b""))
            data.clear()
            self.owner = None if source.ended else source
        if lines and source.continued:
            lines[0] = CONTINUED + lines[0]
            source.continued = False
        self._put(b"".join(source.prefix + line for line in lines))

    def _put(self, data: bytes, continues: bool = False) -> None:
        """``data`` for the unit's stderr: lines that start with their prefix, or (``continues``) the
        rest of the line written in part.  Dropped when more than ``out_held`` bytes would wait, and
        then until half of them are taken (one line about the drop, not one between each two lines
        that would fit): the line written in part is then let go (its rest comes as a line of its own)."""
        if not data or self.gone:
            return
        if len(self.unsent) + len(data) > self.out_held or self.dropped and len(self.unsent) > self.out_held // 2:
            self.dropped += len(data)
            self._let_go()
            return
        if not continues and self.dropped:  # and, if it ended in the middle of a line, its newline
            self._say_dropped()
        self.unsent += data
        self.open = not data.endswith(b"\n")
        self.flush()

    def _say_dropped(self) -> None:
        self.unsent += (b"\n" if self.open else b"") + self.sources[0].prefix + \
            f"{self.dropped} bytes of log lines dropped: the unit's stderr was not read".encode() + b"\n"
        self.dropped = 0
        self.open = False


def _signal_group(pid: int, number: int) -> None:
    """``number`` to the process group ``pid`` leads; none left (or not ours) is fine."""
    try:
        os.killpg(pid, number)
    except (ProcessLookupError, PermissionError):
        pass


_CANNOT_RUN = frozenset((errno.ENOENT, errno.ENOEXEC, errno.EACCES, errno.ENOTDIR, errno.ELOOP, errno.EISDIR,
                         errno.ENAMETOOLONG))


def _die_with(parent: int, front: bool):
    """A ``preexec_fn``: the member does not start at all if the supervisor has already died; the
    ``front`` member gets SIGTERM when it dies (Linux), the later ones get end of input then.

    SIGINT and SIGHUP are blocked in the member (``UNIT_SIGNALS``), and ignored, as in a background
    job under ``nohup``: it has no terminal of its own, so they can only come from a signal to
    every process of the unit (``systemctl kill -s INT``), and the unit's own one stops the chain
    in order.  Blocked, since ignored is not enough: Fluent Bit sets its own handlers and stops on
    SIGINT as on SIGTERM, the shipper before the filter had drained (the lines after it lost), and
    a SIGHUP just after the unit's SIGTERM replaced that SIGTERM in the collector, which ran on
    until the grace was over.  The filter stopped reading on either, and the lines in its pipe,
    whose position the collector had stored, were lost."""
    prctl = None
    if front and sys.platform.startswith("linux"):
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
            prctl.restype = ctypes.c_int
            prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4  # as the kernel reads them
        except (OSError, AttributeError):
            prctl = None

    def preexec() -> None:
        for number in UNIT_SIGNALS:  # both kept across exec; the filter leaves an ignored signal so
            signal.signal(number, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, UNIT_SIGNALS)
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)  # ignored by the supervisor (``_install``)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class Supervisor:
    """Runs ``members`` as a pipe chain until every one of them has ended; ``run()`` is the unit's
    exit status.  ``usage_member``: the member whose exit status 2 means a usage error it has
    already reported (the filter): the unit then exits 2 too, which systemd's
    ``RestartPreventExitStatus=2`` can tell from a crash."""

    def __init__(self, members: Sequence[Member], grace: float = DEFAULT_GRACE,
                 usage_member: Optional[Member] = None):
        if not members:
            raise ValueError("a chain needs at least one member")
        self.members = list(members)
        for number, member in enumerate(self.members, 1):
            member.number = number
        self.grace = grace
        self.usage_member = usage_member
        self.cause: Optional[Member] = None  # the member whose end was a failure
        self.failed = False  # a failure without a member to blame (an escalation, an unclean stop)
        self.level = 0  # 0 running; 1 stopping from the front; 2 SIGTERM to all; 3 SIGKILL to all
        self._asked = 0  # stop signals from outside
        self.deadline: Optional[float] = None
        self._front_killed = False
        self._orphan: Optional[Member] = None  # the first member left, once its reader ended (``_no_reader``)
        self._orphan_cut = False  # and the grace was cut short for it
        self._requests: List[int] = []
        self._suspends = 0  # SIGTSTP received, not said yet
        self._wake = None
        self.first = 0  # the first member started: the front, which a stop signals
        self._ready = None  # the read end of the pipe on which the filter says it is ready (``_start``)
        self._held = None  # the filter's input, when the members before it never started
        self.logs = Logs()
        self._log_pipes: List[Optional[tuple]] = []  # each member's stderr pipe, until it started (``_start``)
        self._heir: Optional[tuple] = None  # (pid, fd) of the process that reads them if the supervisor dies

    # -- signals -------------------------------------------------------------------------------

    def _on_stop(self, number, frame) -> None:
        self._requests.append(number)  # handled by the loop: nothing else is safe here

    def _on_suspend(self, number, frame) -> None:
        self._suspends += 1

    def _say_held_on(self) -> None:
        if self._suspends:
            self._suspends = 0
            self.logs.note("SIGTSTP (Ctrl-Z) ignored: the chain runs on; SIGTERM or Ctrl-C stops it")

    @staticmethod
    def _on_child(number, frame) -> None:
        pass  # the wakeup fd is what matters

    def _install(self):
        """Owns the stop signals and SIGTSTP (not those ignored at start: a background job's SIGINT)
        and SIGCHLD, all waking the loop through a pipe; ignores SIGTTOU; returns what to restore.

        Job control does not stop the unit: the members are in sessions of their own, so a
        terminal's Ctrl-Z (SIGTSTP) stopped the supervisor alone, and the chain ran on with nobody
        to stop it in order when a member died.  Ctrl-Z is now said on stderr and the unit runs on.
        SIGTTOU, which stops a background job that writes to its terminal (``stty tostop``), is
        ignored: the supervisor writes the members' stderr (``Logs``), and stopped it would leave
        them to block on it."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        self._wake = (read_end, write_end)
        previous = [(number, signal.getsignal(number))
                    for number in STOP_SIGNALS + (signal.SIGTSTP, signal.SIGTTOU, signal.SIGCHLD)]
        for number, handler in previous:
            if number == signal.SIGCHLD:
                signal.signal(number, self._on_child)
            elif number == signal.SIGTTOU:
                signal.signal(number, signal.SIG_IGN)
            elif handler is not signal.SIG_IGN:
                signal.signal(number, self._on_suspend if number == signal.SIGTSTP else self._on_stop)
        return previous, signal.set_wakeup_fd(write_end)

    def _restore(self, saved) -> None:
        previous, wakeup = saved
        signal.set_wakeup_fd(wakeup)
        for number, handler in previous:
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        for fd in self._wake:
            os.close(fd)
        self._wake = None

    # -- the chain -----------------------------------------------------------------------------

    def _start(self) -> None:
        """Each member in its own session, its stdout the next one's stdin; the first reads the
        unit's stdin, the last writes the unit's stdout.  The supervisor keeps no pipe end, so a
        member's end of input is exactly the end of the member before it.

        The filter (``usage_member``) and the members after it start first, and those before it
        (the collector) only once the filter says it is ready (``tell_ready``): a filter that
        failed as it started (a rule that does not load, a state file it refuses, a bus it cannot
        reach) lost every line the collector had read meanwhile, its position stored past them.
        If the filter ends first, or a stop is asked meanwhile, the members before it never start."""
        count = len(self.members)
        self._log_pipes = [os.pipe() for _ in range(count)]
        self._heir = _start_heir([(pipe[0], member.role or f"member {member.number}")
                                  for pipe, member in zip(self._log_pipes, self.members)])
        pipes = [os.pipe() for _ in range(count - 1)]
        unused = {fd for pipe in pipes for fd in pipe}
        gate = self.members.index(self.usage_member) if self.usage_member in self.members[1:] else 0
        try:
            for index in list(range(gate, count)) + list(range(gate)):
                if index == 0 and gate and not self._await_ready():
                    # The members before the filter never start.  Its input stays open: its end of
                    # input would make the end of a member after it look like one in order; it ends
                    # by the stop that follows (``first``: it is the front now).
                    self.first, self._held = gate, pipes[gate - 1][1]
                    unused.discard(self._held)
                    break
                if not self._start_member(index, pipes, unused, ready=index == gate and gate > 0):
                    break
        finally:
            for fd in unused:  # what no member took: its reader sees end of input, its writer a closed pipe
                os.close(fd)
            for pipe in self._log_pipes:  # those of the members that never started
                if pipe is not None:
                    os.close(pipe[0])
                    os.close(pipe[1])
            self._log_pipes = []
        if self.cause is not None:
            self._stop(1)

    def _start_member(self, index: int, pipes: list, unused: set, ready: bool) -> bool:
        """Start member ``index`` on its pipes; False (``cause`` set) when it cannot start."""
        member = self.members[index]
        stdin = pipes[index - 1][0] if index else None
        stdout = pipes[index][1] if index < len(pipes) else None
        env = dict(os.environ, **{SUPERVISED: "1"})
        ready_pipe = os.pipe() if ready else None
        if ready_pipe is not None:
            env[READY_FD] = str(ready_pipe[1])
        (log_read, log_write), self._log_pipes[index] = self._log_pipes[index], None
        try:
            member.process = subprocess.Popen(member.argv, stdin=stdin, stdout=stdout, stderr=log_write,
                                              start_new_session=True,
                                              preexec_fn=_die_with(os.getpid(), member is self.members[0]),
                                              env=env, pass_fds=ready_pipe[1:] if ready_pipe else ())
        except (OSError, subprocess.SubprocessError) as error:
            os.close(log_read)
            reason = getattr(error, "strerror", None) or str(error)
            self.logs.note(f"{member.label()} cannot start: {reason}; stopping the chain")
            self.cause = member
            # a program that cannot be run (no interpreter, not a program, no permission) will not
            # run at the next start either: a usage error (exit 2), which systemd does not restart
            self.unrunnable = getattr(error, "errno", None) in _CANNOT_RUN
            if ready_pipe is not None:
                os.close(ready_pipe[0])
            return False
        finally:
            os.close(log_write)
            if ready_pipe is not None:
                os.close(ready_pipe[1])  # the filter holds it: its end, ready or not, is seen
        self.logs.add(log_read, member.role or f"member {member.number}")
        if ready_pipe is not None:
            self._ready = ready_pipe[0]
        for fd in (stdin, stdout):
            if fd is not None:
                os.close(fd)
                unused.discard(fd)
        return True

    def _await_ready(self) -> bool:
        """Whether the filter said it is ready before it, or a member after it, ended, and before
        a stop was asked (those are then the loop's to handle)."""
        ready, self._ready = self._ready, None
        try:
            while not self._requests:
                found, writable, _ = select.select([ready, self._wake[0]] + self.logs.fds(), self.logs.waiting(),
                                                   [], 1.0)
                if writable:
                    self.logs.flush()
                if ready in found:
                    return os.read(ready, 1) == b"1"  # nothing: the filter ended first
                self._read_logs(found)
                self._drain_wake()
                self._say_held_on()
                if any(member.running and _has_ended(member) for member in self.members):
                    return False
            return False
        finally:
            os.close(ready)

    def _signal(self, member: Member, number: int) -> None:
        if not member.running:
            return
        if number == signal.SIGKILL:
            member.killed = True
            _signal_group(member.process.pid, number)
        else:
            member.terminated = member.terminated or number == signal.SIGTERM
            try:
                member.process.send_signal(number)
            except ProcessLookupError:
                pass

    def _stop(self, level: int) -> None:
        """Raise the stop to ``level``: 1 SIGTERM to the first member only, 2 SIGTERM to every
        member left, 3 SIGKILL to every member left."""
        if level <= self.level:
            return
        if self.deadline is None:
            self.deadline = time.monotonic() + self.grace
        if self.level < 1:
            self._signal(self.members[self.first], signal.SIGTERM)
        if level >= 2 > self.level:
            for member in self.members:
                if not member.terminated:
                    self._signal(member, signal.SIGTERM)
        if level >= 3:
            for member in self.members:
                if member.running:
                    self.failed = True
                    self._signal(member, signal.SIGKILL)
        self.level = level

    def _input_ended(self, member: Member) -> bool:
        """The member before it has ended (the first member's input, the unit's stdin, may end
        at any time), and not by SIGPIPE: that one met a closed pipe, so ``member`` ended first."""
        if member.number == 1:
            return True
        before = self.members[member.number - 2]
        return before.ended and not (before.status is not None and os.WIFSIGNALED(before.status)
                                     and os.WTERMSIG(before.status) == signal.SIGPIPE)

    def _collect(self) -> List[Member]:
        """The members that ended since the last look, reaped, in chain order.

        Polled downstream first: a member seen ended then has every member upstream of it that
        ended before it seen ended too, so "ended before the members upstream of it" is never
        an artefact of the polling order.  Each is looked at as a zombie first: its pid, and so
        its process group id, cannot be reused yet, so what is left in its group is killed
        safely (it could hold the pipe open) before the pid is released."""
        found = []
        for member in reversed(self.members):
            if not member.running:
                continue
            pid = member.process.pid
            if not _has_ended(member):
                continue
            _signal_group(pid, signal.SIGKILL)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = 255 << 8
            member.status = status
            member.process.returncode = os.waitstatus_to_exitcode(status)
            found.append(member)
        for member in found:  # judged now: later ends must not make an early one look in order
            member.by_end_of_input = member.clean() and self._input_ended(member)
        return found[::-1]

    def _cause_among(self, ended: List[Member]) -> Optional[Member]:
        """Which of the members that ended together ended first, on its own.  One end brings
        others: the members downstream see end of input and exit cleanly, the one upstream
        meets a closed pipe (killed by SIGPIPE, or an exit of its own).  So the cause is the
        first, in chain order, that neither ended by end of input nor follows a member
        downstream of it that did not, unless its end cannot be a closed pipe's (``_own_end``):
        the member after it may have failed on its end of input; None when all ended by end of input."""
        candidates = [member for member in ended if not member.by_end_of_input]
        for member in candidates:
            below = self.members[member.number] if member.number < len(self.members) else None
            if below is None or below.running or below.by_end_of_input or self._own_end(member):
                return member
        return candidates[0] if candidates else None

    def _own_end(self, member: Member) -> bool:
        """Killed by a signal a closed pipe does not send, or the filter's exit with a status (its usage
        error, 2, among them): in the chain a closed output ends it by SIGPIPE (``SUPERVISED``)."""
        status = member.status
        if os.WIFSIGNALED(status):
            return os.WTERMSIG(status) != signal.SIGPIPE
        return member is self.usage_member

    def _settle(self, ended: List[Member]) -> List[Member]:
        """The ends that come just after ``ended``, collected for up to ``SETTLE`` seconds, so
        that the report names the member that ended first and a clean end is not taken for one
        out of order: a member's output closes before its process has ended (Python closes
        stdout while it finalises), so the next member may end on that end of input first.
        A clean end counts as by end of input when the member before it ends meanwhile, as when
        both are seen ended at once (``_input_ended``): however that one ended, its output closed
        first."""
        found = []
        deadline = time.monotonic() + SETTLE
        while True:
            found += self._collect()
            for member in sorted(ended + found, key=lambda member: member.number):
                before = self.members[member.number - 2] if member.number > 1 else None
                if not member.by_end_of_input and member.clean() and before is not None and before.ended:
                    member.by_end_of_input = self._input_ended(member)
            if all(member.by_end_of_input for member in ended + found) or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        found.sort(key=lambda member: member.number)
        return found

    def _reap(self) -> None:
        ended = self._collect()
        if not ended:
            return
        if self.level == 0:
            if not all(member.clean() for member in ended):
                # A failure whatever came first: the front is stopped at once, since whatever the
                # collector reads from now on can only be lost, and it stores its position past it.
                self._stop(1)
            ended = sorted(ended + self._settle(ended), key=lambda member: member.number)
            if all(member.by_end_of_input for member in ended):
                return  # end of input reached them through the chain: a finished replay so far
            self._stop(1)
            self.cause = self._cause_among(ended) or ended[0]
            self.logs.note(f"{self.cause.label()} {self.cause.how()}; stopping the chain")
            return
        if self.cause is None:  # a stop that was asked for: each member must end cleanly, in order
            # settled as at level 0: the member killed upstream closes its output before it is seen
            # ended, so the next one can end on that end of input first (a load made it look early)
            ended = sorted(ended + self._settle(ended), key=lambda member: member.number)
            for member in ended:
                if not member.by_end_of_input and not member.killed and not (member.terminated and member.clean()):
                    self.failed = True
                    early = "" if all(other.ended for other in self.members[:member.number - 1]) else \
                        " before the members upstream of it"
                    self.logs.note(f"{member.label()} {member.how()}{early} while the chain stopped")

    def _handle_requests(self) -> None:
        self._say_held_on()
        while self._requests:
            number = self._requests.pop(0)
            self._asked += 1
            if self.level >= 3:
                continue
            if self._asked == 1 and self.level >= 1:  # already stopping in order (a member failed): the
                continue  # first stop asked from outside asks for that; the second one escalates
            if self.level >= 1:
                name = signal.Signals(number).name
                self.logs.note(f"{name} again: {'SIGTERM' if self.level == 1 else 'SIGKILL'} to every member")
            self._stop(self.level + 1)

    def _wait(self) -> None:
        timeout = 1.0  # a safety net: SIGCHLD wakes the loop through the pipe
        if self.deadline is not None and self.level < 3:
            timeout = max(0.0, min(timeout, self.deadline - time.monotonic()))
        try:
            found, writable, _ = select.select([self._wake[0]] + self.logs.fds(), self.logs.waiting(), [], timeout)
        except InterruptedError:
            found = writable = []
        if writable:
            self.logs.flush()
        self._read_logs(found)
        self._drain_wake()

    def _read_logs(self, found: List[int]) -> None:
        for fd in found:
            if fd in self.logs.fds():
                self.logs.read(fd)

    def _drain_logs(self) -> None:
        """What the members wrote on stderr until their ends, read until the pipes' ends (for up to
        ``LOGS_DRAIN`` seconds: a member's child that left its session may hold one open)."""
        deadline = time.monotonic() + LOGS_DRAIN
        while self.logs.fds() and time.monotonic() < deadline:
            try:
                found, writable, _ = select.select(self.logs.fds(), self.logs.waiting(), [],
                                                   max(0.0, deadline - time.monotonic()))
            except InterruptedError:
                continue
            if writable:
                self.logs.flush()
            self._read_logs(found)

    def _drain_wake(self) -> None:
        """Empty the wake-up pipe (signals and SIGCHLD write to it): the loop has looked."""
        try:
            while os.read(self._wake[0], 512):
                pass
        except BlockingIOError:
            pass

    def _loop(self) -> None:
        self._start()
        while True:
            self._reap()
            self._handle_requests()
            if not any(member.running for member in self.members):
                self._drain_logs()
                return
            self._no_reader()
            if self.deadline is not None and self.level < 3 and time.monotonic() >= self.deadline:
                self._kill_front()
            self._wait()

    def _no_reader(self) -> None:
        """The first member still running, in a stop, whose reader (the member after it) has ended:
        nothing it writes can arrive, so it gets ``DRAIN`` seconds from then, not the rest of the
        grace.  Fluent Bit never learns that its reader is gone: its file output opens /dev/stdout
        read-write (5.1.1), so it reads its own pipe, never meets a broken pipe, and its shutdown
        blocks on the full pipe past its own grace.  A filter that died at start with the collector
        holding more than a pipe's worth made the unit wait the whole ``--grace`` (30 s)."""
        if not 1 <= self.level < 3:
            return
        member = next((member for member in self.members if member.running), None)
        if member is None or member is self._orphan or member.number == len(self.members) or \
                self.members[member.number].running:
            return
        self._orphan = member
        deadline = time.monotonic() + min(DRAIN, self.grace)
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline
            self._orphan_cut = True

    def _kill_front(self) -> None:
        """The grace is over: SIGKILL to the first member still running only.  The ones after it
        then see end of input (the filter saves its state, the shipper flushes) and get
        ``DRAIN`` seconds more each before the same happens to them."""
        member = next(member for member in self.members if member.running)
        waited = f"{self.grace:g} s after the stop began" if not self._front_killed else \
            f"{min(DRAIN, self.grace):g} s after the member before it"
        if member is self._orphan and self._orphan_cut and not self._front_killed:
            waited = f"{min(DRAIN, self.grace):g} s after its reader, member {member.number + 1}, ended"
        self.logs.note(f"{member.label()} still running {waited}: SIGKILL")
        self._front_killed = True
        self.failed = True
        self._signal(member, signal.SIGKILL)
        self.deadline = time.monotonic() + min(DRAIN, self.grace)

    def run(self) -> int:
        """Start the chain, supervise it until every member has ended; the exit status."""
        saved = self._install()
        try:
            self._loop()
        except Exception as error:  # a bug here must not leave the chain running, nor a traceback
            self.logs.note(f"internal error: {type(error).__name__}: {error}; killing the chain")
            self.failed = True
        finally:
            for member in self.members:
                if member.running:
                    _signal_group(member.process.pid, signal.SIGKILL)
                    try:
                        member.status = os.waitpid(member.process.pid, 0)[1]
                        member.process.returncode = os.waitstatus_to_exitcode(member.status)
                    except ChildProcessError:
                        pass
            if self._held is not None:
                os.close(self._held)
            self.logs.close()
            self._dismiss_heir()
            self._restore(saved)
        if self.cause is not None:
            usage = self.cause is self.usage_member and self.cause.status is not None and \
                os.WIFEXITED(self.cause.status) and os.WEXITSTATUS(self.cause.status) == 2
            return 2 if usage or self.unrunnable else 1
        return 1 if self.failed else 0

    def _dismiss_heir(self) -> None:
        """The members' stderr was read to its end here: the heir has nothing to take over."""
        if self._heir is None:
            return
        pid, fd = self._heir
        self._heir = None
        try:
            os.write(fd, b".")
        except OSError:
            pass
        os.close(fd)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    unrunnable = False  # a member could not be started, and never will be (``_start``)


def supervise(members: Sequence[Member], grace: float = DEFAULT_GRACE, usage_member: Optional[Member] = None) -> int:
    return Supervisor(members, grace, usage_member).run()
