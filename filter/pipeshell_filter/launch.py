"""Console-script entry point: what has to happen before the heavy imports.

* A SIGTERM from the pipeline during start-up is a clean exit, so the handler
  is set before anything else is imported.
* Start-up (imports, the rule, the plan, the scan database) creates many
  long-lived objects and no garbage cycles, so the cyclic garbage collector is
  paused until the stream starts: its passes would only walk the same live
  objects again.  ``streaming()`` then freezes what start-up made, so that later
  collections skip it, and resumes collection.
"""

from __future__ import annotations

import gc
import signal
import sys


class Terminated(Exception):
    """SIGTERM arrived: flush what is pending and exit 0, as at end of input."""


def on_sigterm(signum, frame):
    raise Terminated()


def streaming() -> None:
    """Start-up is over; what it made lives for the whole run."""
    if not gc.isenabled():  # paused by main() below, not by someone importing the package
        gc.freeze()
        gc.enable()


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    gc.disable()
    try:
        from .cli import main as cli_main
    except Terminated:
        sys.exit(0)
    cli_main()
