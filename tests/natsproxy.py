"""A TCP relay between one client and a ``nats-server`` that can hold the client's traffic for a while,
starting at the first chunk that holds some bytes: the server slow, or the link gone, for a moment,
exactly when that client acknowledges or publishes (the fleet-bus outage tests)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Optional


class HoldingRelay:
    """Listens on a loopback port and relays each connection to ``port``.  ``hold_on(pattern, seconds)``:
    the next client-to-server chunk that contains ``pattern`` and everything after it waits ``seconds``."""

    def __init__(self, port: int):
        self.target = port
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._pattern: Optional[bytes] = None
        self._seconds = 0.0
        self.held = threading.Event()  # set once a hold began
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def hold_on(self, pattern: bytes, seconds: float) -> None:
        self._seconds, self._pattern = seconds, pattern

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                continue
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source, sink, outbound: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if outbound and self._pattern is not None and self._pattern in data:
                    self._pattern = None
                    self.held.set()
                    time.sleep(self._seconds)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()
