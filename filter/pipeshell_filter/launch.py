"""Console-script entry point: what has to happen before the heavy imports.

* A SIGTERM from the pipeline during start-up is a clean exit (nothing has
  been read yet), so the handler is set before anything else is imported.
  Once the stream runs, ``io.signals.StopRequest`` owns the signal.
* Start-up (imports, the rule, the plan, the scan database) creates many
  long-lived objects and little garbage, so the cyclic garbage collector is
  paused until the stream starts: its passes would only walk the same live
  objects again.  ``streaming()`` then freezes what start-up made (later
  collections skip it; the few hundred KB of import-time garbage among it stay)
  and resumes collection.
"""

from __future__ import annotations

import gc
import signal
import sys

from .io.signals import Terminated, on_sigterm

_paused_gc = False  # set by main(): only then does streaming() touch the collector


def streaming() -> None:
    """Start-up is over; what it made lives for the whole run."""
    global _paused_gc
    if _paused_gc:
        _paused_gc = False
        gc.freeze()
        gc.enable()


def main() -> None:
    global _paused_gc
    signal.signal(signal.SIGTERM, on_sigterm)
    gc.disable()
    _paused_gc = True
    try:
        from .cli import main as cli_main

        cli_main()
    except Terminated:  # during the imports; later ones are handled by the CLI
        sys.exit(0)
    finally:
        if _paused_gc:  # the run ended before the stream started (an error, --help, explain)
            _paused_gc = False
            gc.enable()
