"""A TCP relay between one client and a ``nats-server`` that can hold the client's traffic for a while,
starting at the first chunk that holds some bytes: the server slow, or the link gone, for a moment,
exactly when that client acknowledges or publishes (the fleet-bus outage tests)."""

from __future__ import annotations

import socket
import threading
from typing import Optional


class HoldingRelay:
    """Listens on a loopback port and relays each connection to ``port``.  ``hold_on(pattern, seconds)``:
    the next client-to-server chunk that contains ``pattern`` and everything after it waits ``seconds``, or
    until ``release()``."""

    def __init__(self, port: int):
        self.target = port
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._pattern: Optional[bytes] = None
        self._seconds = 0.0
        self.held = threading.Event()  # set once a hold began
        self._released = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def hold_on(self, pattern: bytes, seconds: float) -> None:
        self._released.clear()
        self._seconds, self._pattern = seconds, pattern

    def release(self) -> None:
        """The hold ends now: what it kept goes on to the server."""
        self._released.set()

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
                    self._released.wait(self._seconds)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _shut(source, sink)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


class DroppingRelay(HoldingRelay):
    """A ``HoldingRelay`` that can also lose some of the client's requests: ``drop(*parts)``, and every
    later publish whose subject contains one of ``parts`` never reaches the server (the server answers
    everything else: a key-value bucket without a leader, say).  The client's bytes are cut into whole
    protocol operations for that; a chunk is passed on only once its operations are complete."""

    def __init__(self, port: int):
        self._dropped: tuple = ()
        self.drops = 0  # publishes lost so far
        super().__init__(port)

    def drop(self, *parts: bytes) -> None:
        self._dropped = parts

    def _pump(self, source, sink, outbound: bool) -> None:
        if not outbound:
            return super()._pump(source, sink, outbound)
        pending = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                pending += data
                passed, pending = self._sift(pending)
                if passed:
                    sink.sendall(passed)
        except OSError:
            pass
        finally:
            _shut(source, sink)

    def _sift(self, data: bytes) -> tuple:
        """The complete operations at the start of ``data`` less the dropped publishes, and the rest."""
        passed, at = [], 0
        while True:
            end = data.find(b"\r\n", at)
            if end < 0:
                break
            words = data[at:end].split()
            size = 0
            if words and words[0].upper() in (b"PUB", b"HPUB"):
                size = int(words[-1]) + 2  # the payload (headers included) and its line end
            if end + 2 + size > len(data):
                break
            operation = data[at:end + 2 + size]
            if size and any(part in words[1] for part in self._dropped):
                self.drops += 1
            else:
                passed.append(operation)
            at = end + 2 + size
        return b"".join(passed), data[at:]


def _shut(*ends) -> None:
    """Both directions of each socket shut, whichever of them is gone already: the pump's other half ends."""
    for end in ends:
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
