"""Signals: SIGTERM, SIGHUP and Ctrl-C end the input as end of input does, never mid-record.

``Terminated`` is the way out at once (during start-up, or a second signal);
``StopRequest`` owns the signals while the stream runs and only sets a flag.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time


# Seconds a stop waits for the rest of a line that a pipe has handed on only in part.
STOP_LINE_WAIT = 1.0


class Terminated(BaseException):
    """SIGTERM during start-up, or a second one while the stream runs (``StopRequest``):
    exit 0 at once.

    A BaseException, so that no ``except Exception`` on the way (a rule error
    handler) mistakes it for a failure of its own."""


class StoppedOpening(Exception):
    """The stop came while an input was being opened (a FIFO waiting for its writer): nothing was
    read, so the run ends as at end of input."""


class _Writing:
    """Whether an output record is being written: a second signal then lets it finish (a torn
    record would break the reader's last line) and ends the run right after; a third does not wait."""

    depth = 0
    exit_pending = False


WRITING = _Writing()


class _Start:
    """Whether ``on_sigterm`` ran since the last look: what it raised may never have arrived, a C
    extension's import can drop it (ujson's init drops what its ``import decimal`` raises), and SIGTERM
    is ignored by then.  The stop is then lost: the run went on, and took SIGTERM for ignored at start."""

    stopped = False


START = _Start()


def on_sigterm(signum, frame):
    START.stopped = True
    for number in START_SIGNALS:  # one is enough: the shutdown it starts runs to its end
        if signal.getsignal(number) is on_sigterm:
            signal.signal(number, signal.SIG_IGN)
    raise Terminated()


START_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def stop_at_start() -> None:
    """SIGTERM and SIGHUP during start-up end the run at once, status 0: nothing is read yet.  Left
    to its default, a SIGHUP killed the filter (status 129), one waiting for its state file's lock
    for one.  A SIGHUP ignored at start (``nohup``, a ``run`` member) stays ignored.  A stop whose
    exit was dropped on the way (``START``) is raised again here."""
    stopped, START.stopped = START.stopped, False
    if stopped:
        raise Terminated()
    signal.signal(signal.SIGTERM, on_sigterm)
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, on_sigterm)


class StopRequest:
    """A request to end the run early, as at end of input (SIGTERM from a pipeline's
    supervisor, Ctrl-C).  The signal handler only sets ``requested``; the reader looks
    at it between reads, and ``fd`` becomes readable so that a wait for input ends too.
    An exception raised from the handler instead could land anywhere: between a read
    and keeping its bytes, inside a write (a torn output line), inside a state update.
    SIGHUP (a terminal or a session that went away) is one such request: killed by it, the
    filter lost its pending alerts and the state since its last snapshot.
    A second signal is that exception (``Terminated``): the way out when the
    first cannot end the run, e.g. a consumer that stopped reading our output
    (one within ``REPEAT`` of the first is that first stop, delivered twice);
    one that comes while a record is being written ends the run once that record
    is whole (``WRITING``), and a third ends it at once.

    Used as a context manager, it owns the signals not ignored at start (a background
    job ignores Ctrl-C): ``signal.set_wakeup_fd`` writes to the pipe behind ``fd``, and
    the previous handlers come back on exit."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
    # Seconds after the first signal in which another is the same stop, not a second one: coreutils' timeout
    # signals the process and then its own process group, the process in it (a person's second press is later).
    REPEAT = 0.25

    def __init__(self):
        self.requested = False
        self._first = float("-inf")  # when the first signal came (time.monotonic)
        self.fd = self._wake = None
        self._previous = None
        self._opening = False  # inside ``opening``: the handler raises StoppedOpening

    @contextlib.contextmanager
    def opening(self):
        """An input being opened, which may block for good (a FIFO no writer opens: ``open`` only
        returns when one does, and retries after each signal).  Nothing is read yet, so the stop may
        end it with an exception (``StoppedOpening``), as it ends a wait for input.  Marked before the
        stop is looked at: a signal between the two would find neither, and the open would wait."""
        self._opening = True
        try:
            if self.requested:
                raise StoppedOpening()
            yield
        finally:
            self._opening = False

    def set(self, *_signal_args) -> None:
        if self.requested:
            if time.monotonic() - self._first < self.REPEAT:
                return
            if WRITING.depth and not WRITING.exit_pending:
                WRITING.exit_pending = True  # the record being written is finished first
                return
            raise Terminated()
        self.requested = True
        self._first = time.monotonic()
        if self._opening:
            self._opening = False
            raise StoppedOpening()

    def drain(self) -> None:
        """Empty the wakeup pipe: another signal than ours may have written to it."""
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def __enter__(self) -> "StopRequest":
        self.fd, self._wake = os.pipe()
        try:
            for fd in (self.fd, self._wake):
                os.set_blocking(fd, False)
            handlers = [(number, signal.getsignal(number)) for number in self.SIGNALS]
            self._previous = ([(number, handler) for number, handler in handlers if handler is not signal.SIG_IGN],
                              signal.set_wakeup_fd(self._wake))
            for number, _ in self._previous[0]:
                signal.signal(number, self.set)
            if START.stopped:  # a stop at start whose exit was dropped: the run ends before it reads
                START.stopped = False
                self.requested, self._first = True, time.monotonic()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            handlers, wakeup = self._previous
            signal.set_wakeup_fd(wakeup)
            for number, handler in handlers:
                signal.signal(number, handler)
            self._previous = None
        os.close(self.fd)
        os.close(self._wake)
