"""The cyclic garbage collector's pause during start-up (``launch`` starts it, the CLI ends it).

Start-up (imports, rules, plans, the scan database) creates many long-lived
objects and little garbage, so collecting during it would only walk the same
live objects again.  ``streaming()`` freezes what start-up made (later
collections skip it) and resumes collection.
"""

from __future__ import annotations

import gc

_paused = False  # only a pause that ``pause()`` started is ended here


def pause() -> None:
    global _paused
    gc.disable()
    _paused = True


def streaming() -> None:
    """Start-up is over; what it made lives for the whole run."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def resume() -> None:
    """The run ended before the stream started (an error, --help, explain)."""
    global _paused
    if _paused:
        _paused = False
        gc.enable()
