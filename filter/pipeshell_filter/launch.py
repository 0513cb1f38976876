"""Console-script entry point: what has to happen before the heavy imports.

* A SIGTERM (or SIGHUP) from the pipeline during start-up is a clean exit (nothing
  has been read yet), so the handler is set before anything else is imported.
  Once the stream runs, ``io.signals.StopRequest`` owns the signal.
* Start-up (imports, the rule, the plan, the scan database) creates many
  long-lived objects and little garbage, so the cyclic garbage collector is
  paused until the stream starts (``startup``): its passes would only walk the
  same live objects again.
* Started with stderr closed (``2>&-``), Python has no ``sys.stderr``: the
  first diagnostic would end the run.  Descriptor 2 is then opened on
  /dev/null, so diagnostics go nowhere and the stream goes on (and no file the
  filter opens later takes descriptor 2 for another's writes).
"""

from __future__ import annotations

import os
import sys

from . import startup
from .io.signals import Terminated, stop_at_start


def _stderr_somewhere() -> None:
    if sys.stderr is None:
        try:
            os.fstat(2)
        except OSError:
            descriptor = os.open(os.devnull, os.O_WRONLY)
            if descriptor != 2:
                os.dup2(descriptor, 2)
                os.close(descriptor)
        sys.stderr = open(2, "w", closefd=False)


def main() -> None:
    stop_at_start()
    _stderr_somewhere()
    startup.pause()
    try:
        from .cli import main as cli_main

        cli_main()
    except Terminated:  # during the imports; later ones are handled by the CLI
        sys.exit(0)
    except KeyboardInterrupt:  # a Ctrl-C during the imports: as the CLI's own (``typer.Abort``), no traceback
        sys.exit(130)
    finally:
        startup.resume()
