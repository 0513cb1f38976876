"""Console-script entry point: what has to happen before the heavy imports.

* A SIGTERM from the pipeline during start-up is a clean exit (nothing has
  been read yet), so the handler is set before anything else is imported.
  Once the stream runs, ``io.signals.StopRequest`` owns the signal.
* Start-up (imports, the rule, the plan, the scan database) creates many
  long-lived objects and little garbage, so the cyclic garbage collector is
  paused until the stream starts (``startup``): its passes would only walk the
  same live objects again.
"""

from __future__ import annotations

import signal
import sys

from . import startup
from .io.signals import Terminated, on_sigterm


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    startup.pause()
    try:
        from .cli import main as cli_main

        cli_main()
    except Terminated:  # during the imports; later ones are handled by the CLI
        sys.exit(0)
    finally:
        startup.resume()
