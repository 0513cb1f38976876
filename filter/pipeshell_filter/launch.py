"""Console-script entry point: what has to happen before the heavy imports.

* A SIGTERM from the pipeline during start-up is a clean exit (nothing has
  been read yet), so the handler is set before anything else is imported.
  Once the stream runs, ``stream.StopRequest`` owns the signal.
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

_paused_gc = False  # set by main(): only then does streaming() touch the collector


class Terminated(BaseException):
    """SIGTERM during start-up, or a second one while the stream runs (``stream.StopRequest``):
    exit 0 at once.

    A BaseException, so that no ``except Exception`` on the way (a rule error
    handler) mistakes it for a failure of its own."""


def on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: the shutdown it starts runs to its end
    raise Terminated()


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
