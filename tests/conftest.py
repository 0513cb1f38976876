"""Shared test setup: hypothesis profiles and helpers to build events.

HYPOTHESIS_PROFILE=ci (what .ci/run uses) bounds the run for 2-core CI machines;
``thorough`` is for a long local soak.
"""

import atexit
import os
import shutil
import signal
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("thorough", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The filters the tests run keep their compiled Hyperscan databases in a directory of this run
# (``io.database_cache``), not in the user's ~/.cache; pytest-xdist's workers inherit it.
if "PIPESHELL_FILTER_CACHE" not in os.environ:
    os.environ["PIPESHELL_FILTER_CACHE"] = tempfile.mkdtemp(prefix="pipeshell-filter-cache-")
    atexit.register(shutil.rmtree, os.environ["PIPESHELL_FILTER_CACHE"], True)


@pytest.fixture(scope="session")
def sigmahq_run():
    """One filter run over every SigmaHQ regression .evtx with the whole public rule set loaded
    (``sigmahq.run_rule_set``), shared by the tests that read it: the files are processed once."""
    import sigmahq

    if not sigmahq.available():
        pytest.skip("the shared SigmaHQ checkout is absent")
    return sigmahq.run_rule_set()


@pytest.fixture
def stop_signals_not_ignored():
    """SIGINT and SIGHUP as Python sets them at start, for a test that sends them.  A shell starts a
    background job (``pytest ... &``) with SIGINT ignored, and ``nohup`` starts its command with SIGHUP
    ignored; this process and the children it starts keep them ignored, and so do the filter and
    ``pipeshell-filter run`` (POSIX: a background job's SIGINT is not its own, a nohup'd command's
    hang-up neither), so such a test waited for ever.  A child started meanwhile gets the default."""
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGHUP: signal.SIG_DFL}
    ignored = [number for number in defaults if signal.getsignal(number) is signal.SIG_IGN]
    for number in ignored:
        signal.signal(number, defaults[number])
    yield
    for number in ignored:
        signal.signal(number, signal.SIG_IGN)
