"""The fleet bus: Detection and heartbeat records from ``--stage match`` processes to ``--stage correlate``
processes over NATS JetStream.

A synchronous facade.  The filter is a blocking read loop, nats-py is an asyncio client: one daemon
thread runs an event loop with the connection on it, and every public method hands that loop a coroutine
and waits for its result with a bound, so a caller never sees asyncio and the thread never keeps the
interpreter alive.

Delivery is at least once, and every repeat is made harmless:

* a publish is retried until the server's PubAck comes back (timeouts, a server restarting, a dropped
  connection), for as long as it takes.  Each carries a ``Nats-Msg-Id``; the stream's duplicate window
  drops a second copy, so a retry whose first attempt did arrive stores nothing new, and an alert made
  again by a correlator replaying from its snapshot (same deterministic id) is not delivered twice;
* a correlator acknowledges a message only once the correlation state that includes it is on disk.  The
  durable pull consumer acknowledges cumulatively (AckPolicy.ALL), so one ack per saved state suffices;
* on restart the correlator passes the stream sequence after the last one its saved state includes
  (``start_seq``); the durable consumer is then made anew from exactly there, and the replay comes in
  stream order at once instead of as ack-timeout redeliveries mixed in behind newer messages.

The consumer also keeps the order and the no-gap promise while the connection comes and goes.  A message
delivered just as a connection dropped never arrives; with cumulative acks a later ack would silently
cover it.  Every delivery carries the consumer's delivery sequence, which goes up by exactly one each
time (redeliveries included), so a jump shows a lost delivery, as does a server whose consumer state a
crash rolled back: the consumer is then made anew from its ack floor and what the caller has already
been given is skipped (redeliveries after ack_wait are skipped the same way).  One process reads a
durable at a time: a second reader of the same durable looks like lost deliveries to the first.

nats-py is optional (``pip install 'pipeshell-filter[nats]'``): it is imported on first use, so the
filter runs without it when no bus is configured.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import logging
import re
import ssl
import threading
import time
import urllib.parse
from typing import Any, Callable, List, Optional, Sequence, Tuple

import attrs

INSTALL_HINT = "the NATS bus needs nats-py: pip install 'pipeshell-filter[nats]'"
MSG_ID_HEADER = "Nats-Msg-Id"

# One attempt of a request (a publish, an ack, a JetStream API call) waits this long for its answer
# before it is sent again.  A request sent just before the server went away is answered by nobody, so
# this also bounds how late a retry comes once the server is back.
ATTEMPT_TIMEOUT = 2.0
# Publishes waiting for their PubAck look this often whether the connection they went on was lost.
LINK_CHECK = 0.05
# Between retries: from the first to the last, doubling.
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 0.5
# Setting up (ensure_stream, consumer) waits at most this long for a server that stopped answering.
SETUP_TIMEOUT = 30.0
# The client's own reconnect rhythm, and how soon it notices a silent (half-open) connection.
RECONNECT_WAIT = 0.5
PING_INTERVAL = 10
# A consumer idle this long checks that its durable still exists (deleted by an operator, lost with a
# server's store): pull requests to a missing consumer only time out.
IDLE_CHECK = 10.0
# The JetStream API errors with a code that waiting can cure: the system, a stream or a consumer not
# available for now (incomplete results, no leader, not assigned, a raft hiccup, offline).  Every other
# coded refusal is final: a stream gone or full, a configuration refused, limits reached.
JETSTREAM_BUSY = (10004, 10007, 10008, 10009, 10041, 10118, 10119)
# A server unreachable this long is said (``Bus.report``), then again every so often while it stays so.
UNREACHABLE_FIRST = 10.0
UNREACHABLE_EVERY = 60.0
# close() and the thread it stops are bounded by these.
CLOSE_TIMEOUT = 3.0
# Once the process is asked to stop (``Bus.stopping``), a publish or an ack waits at most this long more
# for a server that does not answer, then fails (BusError): a SIGTERM is not held up for ever.
STOP_GRACE = 10.0
JOIN_TIMEOUT = 3.0
# At most this many redeliveries are kept to acknowledge through after a reset (``Consumer._ack``).
STAND_IN_CAP = 4096
# publish_many keeps at most this many publishes waiting for their PubAck (below nats-py's own limit,
# 4000 by default, at which its publish_async would wait).
PUBLISH_WINDOW = 2000


class BusError(Exception):
    """One-line message for the user (no traceback is ever shown)."""


class _Final(BusError):
    """A BusError that no retry cures: the bus was closed, the stream is gone."""


def _nats():
    """nats-py, imported on first use: the filter itself must import and run without it."""
    import nats
    import nats.errors
    import nats.js.api
    import nats.js.errors

    return nats


def check_servers(url: str) -> List[str]:
    """The server URLs of ``--nats`` (comma-separated), each checked: ValueError with the reason for
    one that no connection could come of (a bad scheme, host or port), which nats-py told only after
    a wait, and misleadingly.  ``host:port`` alone means nats://."""
    parts = [part.strip() for part in url.split(",")]
    if not any(parts):
        raise ValueError("no NATS server URL given")
    servers = []
    for part in parts:
        if not part:
            raise ValueError("an empty URL in the list")
        text = part if "://" in part else f"nats://{part}"
        shown = _redact(text)
        try:
            found = urllib.parse.urlsplit(text)
            port = found.port
        except ValueError as error:  # an unclosed [, a port that is no number or out of range
            raise ValueError(f"{shown}: {error}") from None
        if found.scheme.lower() not in ("nats", "tls"):
            raise ValueError(f"{shown}: the scheme must be nats:// or tls://, not {found.scheme}://")
        if not found.hostname:
            raise ValueError(f"{shown}: no host")
        if any(c.isspace() or ord(c) < 32 for c in found.hostname):  # no host name has one: a DNS failure, exit 1
            raise ValueError(f"{shown}: a host name holds no space or control character")
        if port == 0:
            raise ValueError(f"{shown}: port 0")
        if found.path not in ("", "/") or found.query or found.fragment:
            raise ValueError(f"{shown}: a server URL has no path, query or fragment")
        servers.append(text)
    return servers


def _redact(url: str) -> str:
    return re.sub(r"(//)[^/,]*@", r"\1***@", url)  # to the last @ of the credentials, as URLs are parsed


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _cause(exc: BaseException) -> str:
    """What went wrong, in a few words for a one-line message."""
    description = getattr(exc, "description", None)
    if description and description != "None":
        return _one_line(description)
    if hasattr(exc, "err_code"):  # a JetStream API error without a description
        code = getattr(exc, "code", None)
        return "JetStream unavailable" if code in (None, 503) else f"JetStream API error {code}"
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    text = _one_line(str(exc))
    if text.startswith("nats: "):
        text = text[len("nats: "):]
    return text or type(exc).__name__


@attrs.frozen
class Message:
    """One record from the bus, with its stream sequence (what a correlator saves, to restart after)."""

    subject: str
    data: bytes
    seq: int
    # The nats-py message, to acknowledge it; and which incarnation of the durable delivered it.
    _raw: object = attrs.field(eq=False, repr=False)
    _gen: int = attrs.field(default=0, eq=False, repr=False)


class Bus:
    """A connection to a NATS server (or cluster: comma-separated URLs) with JetStream.

    Connects in the constructor (BusError after ``connect_timeout``); from then on it reconnects for
    ever, so a restarting server is ridden out by publish, fetch and ack, which wait and retry."""

    def __init__(self, url: str, *, name: str = "pipeshell-filter", connect_timeout: float = 10.0,
                 setup_timeout: float = SETUP_TIMEOUT, unreachable_first: float = UNREACHABLE_FIRST,
                 unreachable_every: float = UNREACHABLE_EVERY):
        try:
            self._mod = _nats()
        except ImportError:
            raise BusError(INSTALL_HINT) from None
        self.url = _redact(url)  # for messages: a password in the URL is not shown
        self.name = name
        self.connect_timeout = max(0.1, float(connect_timeout))
        self.setup_timeout = max(0.1, float(setup_timeout))
        try:
            self._servers = check_servers(url)
        except ValueError as error:
            raise BusError(str(error)) from None
        self._closed = False
        self._close_lock = threading.Lock()
        self._inflight: set = set()
        self._last_error: Optional[BaseException] = None
        self._generation = 0  # goes up each time a new client replaces one that closed for good
        self._streamless: dict = {}  # subject -> when the API first said no stream takes it (``_check_stream_of``)
        # (monotonic, what it said) of the server's last permissions violation (``_refused_since``)
        self._denied: Optional[Tuple[float, str]] = None
        self.stopping: Callable[[], bool] = lambda: False  # the process was asked to stop (``STOP_GRACE``)
        # One line for the user, from the calling thread, while a call waits for a server that stays
        # unreachable (``UNREACHABLE_FIRST``, then every ``UNREACHABLE_EVERY``) and once it is back.
        self.report: Callable[[str], None] = lambda message: None
        self.unreachable_first, self.unreachable_every = unreachable_first, unreachable_every
        self._down_since: Optional[Tuple[float, float]] = None  # (monotonic, wall) the connection went
        # (monotonic, wall) of the first request that went unanswered on a connection still up (a hung or
        # overloaded server: the connection stays up until the client's pings fail, 20-30 s on)
        self._silent_since: Optional[Tuple[float, float]] = None
        # the outage said (its start), when it is said next, and whether it was said unreachable
        self._told: Optional[Tuple[float, float, bool]] = None
        self._nc: Any = None
        self._js: Any = None
        self._disconnects = 0  # connections lost so far: what was sent on one gets no answer on the next
        _quiet_client_logging()

        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._on_loop_error)
        self._thread = threading.Thread(target=self._run_loop, name="pipeshell-filter-nats", daemon=True)
        self._thread.start()
        try:
            self._call(self._connect(), timeout=self.connect_timeout + CLOSE_TIMEOUT)
        except BaseException:
            self._stop_loop()
            raise

    # --- the event-loop thread ------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
            # Stopped by close(): let whatever is left see its cancellation, then release the loop.
            tasks = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                self._loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
        except BaseException:  # noqa: B036 - nothing may escape a daemon thread onto stderr
            pass
        finally:
            try:
                self._loop.close()
            except BaseException:  # noqa: B036
                pass

    def _on_loop_error(self, loop, context) -> None:
        # Unretrieved task errors, transport hiccups: remembered for messages, never printed.
        exc = context.get("exception")
        if exc is not None:
            self._last_error = exc

    def _call(self, coro, timeout: Optional[float] = None):
        """Run ``coro`` on the loop and wait for its result: at most ``timeout`` seconds, or until
        it ends or close() cancels it.  Every failure comes out as a BusError."""
        if self._closed:
            coro.close()
            raise BusError("the NATS bus is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._inflight.add(fut)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # Short waits, so that a signal handler in the calling thread runs promptly.
            while not fut.done():
                self._tell_reachability()
                wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                if wait <= 0:
                    fut.cancel()
                    raise BusError(f"NATS at {self.url} did not answer within {timeout:g} s")
                concurrent.futures.wait([fut], timeout=wait)
            self._tell_reachability()  # a return is said by the call that waited for it
            return fut.result()
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            raise BusError("the NATS bus was closed") from None
        except BusError:
            raise
        except Exception as exc:  # a client bug or an error not foreseen: still one line for the user
            raise BusError(f"NATS bus error: {_cause(exc)}") from None
        except BaseException:  # KeyboardInterrupt, Terminated: the caller's way out; stop the work
            fut.cancel()
            raise
        finally:
            self._inflight.discard(fut)

    def _tell_reachability(self) -> None:
        """A server unreachable, or connected but not answering, for a while is said (it was waited for
        in silence, and a hung server only once the client's pings failed, 30-40 s on), and so is its
        return."""
        down, told = self._down_since or self._silent_since, self._told
        if down is None:
            if told is not None:
                self._told = None
                self.report(f"NATS at {self.url} {'reachable' if told[2] else 'answering'} again after "
                            f"{time.monotonic() - told[0]:.0f} s")
            return
        since, wall = down
        if told is not None and told[0] != since:
            told = None  # another outage
        elapsed = time.monotonic() - since
        due = told[1] if told is not None else self.unreachable_first
        if elapsed >= due:
            unreachable = self._down_since is not None
            self._told = (since, elapsed + self.unreachable_every, unreachable)
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))
            if unreachable:
                self.report(f"NATS at {self.url} unreachable since {when} ({elapsed:.0f} s); still trying")
            else:
                self.report(f"NATS at {self.url} not answering since {when} ({elapsed:.0f} s), the connection "
                            "up: a hung or overloaded server; still trying")

    def _unanswered(self, since: float) -> None:
        """A request sent at ``since`` (monotonic) got no answer on a connection that is up."""
        if self._silent_since is None and self._nc is not None and self._nc.is_connected:
            self._silent_since = (since, time.time() - (time.monotonic() - since))

    def _answered(self) -> None:
        self._silent_since = None

    def _refused_since(self, sent: float, what: str) -> None:
        """_Final when the server said, since a request left unanswered was sent at ``sent``, that the
        user may not publish or subscribe there: it keeps the connection up and answers nothing, so every
        retry went unanswered for ever, said as a hung server (a correlator's pulls as an empty stream)."""
        denied = self._denied
        if denied is not None and denied[0] >= sent:
            raise _Final(f"{what}: NATS at {self.url} refused it, the user's permissions not allowing it "
                         f"(the server said: {denied[1]})")

    # --- connection -----------------------------------------------------------------------------

    def _client(self):
        """A nats-py client.  nats-py upgrades to TLS only when the server's INFO asks for it, so a
        tls:// URL would send the credentials in the clear to a server that does not: with such a
        URL, every connection is upgraded before anything is sent, or fails."""
        if not any(server.lower().startswith("tls://") for server in self._servers):
            return self._mod.NATS()
        if not hasattr(self._mod.NATS, "_process_info"):  # a nats-py this cannot make insist on TLS
            raise BusError("tls:// needs nats-py 2.x as this build knows it; refused rather than risk plaintext")

        class TLSRequired(self._mod.NATS):
            async def _process_info(self, info, initial_connection=False):
                if initial_connection and getattr(self._current_server.uri, "scheme", "") == "tls":
                    info["tls_required"] = True
                return await super()._process_info(info, initial_connection)

        return TLSRequired()

    def _connect_options(self) -> dict:
        async def on_error(exc):
            self._last_error = exc
            if "permissions violation" in str(exc).lower():
                self._denied = (time.monotonic(), _cause(exc))
            if isinstance(exc, ssl.SSLError) and hasattr(self, "_no_tls"):
                self._no_tls.set()

        async def on_event():
            return None

        async def on_disconnected():
            self._disconnects += 1
            if self._down_since is None and not self._closing.is_set():
                # a server that stopped answering first, then dropped: one outage, from its start
                self._down_since = self._silent_since or (time.monotonic(), time.time())
            self._silent_since = None

        async def on_reconnected():
            self._down_since = self._silent_since = None

        return dict(
            servers=self._servers, name=self.name,
            connect_timeout=min(2.0, self.connect_timeout),
            allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=RECONNECT_WAIT,
            ping_interval=PING_INTERVAL, max_outstanding_pings=2,
            error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected, closed_cb=on_event,
        )

    async def _connect(self) -> None:
        # Loop-bound objects are made on the loop (Python 3.9 binds them at construction).
        self._closing = asyncio.Event()
        self._replace_lock = asyncio.Lock()
        self._no_tls = asyncio.Event()
        nc = self._client()
        # With reconnects unlimited, connect() itself retries until the server answers.
        connecting = asyncio.ensure_future(nc.connect(**self._connect_options()))
        refused = asyncio.ensure_future(self._no_tls.wait())
        try:
            await asyncio.wait({connecting, refused}, timeout=self.connect_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if not connecting.done():
                connecting.cancel()
                raise (self._last_error if refused.done() else asyncio.TimeoutError())
            connecting.result()
        except Exception as exc:
            await _discard(nc)
            cause = self._last_error if isinstance(exc, asyncio.TimeoutError) and self._last_error else exc
            if isinstance(cause, ssl.SSLError):  # no retry makes a server speak TLS
                raise BusError(f"cannot connect to NATS at {self.url}: TLS failed ({_cause(cause)}); "
                               "credentials were not sent") from None
            raise BusError(f"cannot connect to NATS at {self.url} within {self.connect_timeout:g} s: "
                           f"{_cause(cause)}") from None
        finally:
            refused.cancel()
        self._nc = nc
        self._js = nc.jetstream(timeout=ATTEMPT_TIMEOUT)

    async def _live(self):
        """The client, replaced by a new one if the old one closed for good (a server's -ERR makes
        nats-py give up even with unlimited reconnects).  Consumers notice by the generation."""
        nc = self._nc
        if not nc.is_closed or self._closing.is_set():
            return nc
        async with self._replace_lock:
            if self._nc is nc and not self._closing.is_set():
                new = self._client()
                try:
                    await asyncio.wait_for(new.connect(**self._connect_options()), ATTEMPT_TIMEOUT)
                except Exception as exc:
                    self._last_error = exc
                    await _discard(new)
                    return nc
                self._nc, self._js = new, new.jetstream(timeout=ATTEMPT_TIMEOUT)
                self._generation += 1
                self._down_since = None
        return self._nc

    async def _pause(self, seconds: float) -> bool:
        """Sleep, cut short by close(); True when the bus is closing."""
        try:
            await asyncio.wait_for(self._closing.wait(), max(0.0, seconds))
        except asyncio.TimeoutError:
            pass
        return self._closing.is_set()

    def _transient(self, exc: BaseException) -> bool:
        """An error that waiting and trying again can cure: no answer, server or JetStream restarting,
        connection down.  Anything else (a bad subject, a payload too big, a config the server refuses)
        is final."""
        errors, js_errors = self._mod.errors, self._mod.js.errors
        if isinstance(exc, js_errors.APIError):
            if exc.err_code is not None:  # the server's own verdict (a 503 "maximum messages exceeded" is final)
                return exc.err_code in JETSTREAM_BUSY
            return exc.code is None or exc.code in (408, 409) or exc.code >= 500
        return isinstance(exc, (
            asyncio.TimeoutError, errors.TimeoutError, errors.NoRespondersError,
            js_errors.NoStreamResponseError, js_errors.TooManyStalledMsgsError,
            errors.ConnectionClosedError, errors.ConnectionReconnectingError, errors.ConnectionDrainingError,
            errors.OutboundBufferLimitError, errors.StaleConnectionError, errors.FlushTimeoutError,
            errors.UnexpectedEOF, ConnectionError, OSError,
        ))

    def _why(self, last: Optional[BaseException]) -> str:
        """Why requests kept failing, ``last`` being the latest transient error (None: no connection):
        the server could not be reached, did not answer, or answered that it cannot for now."""
        if last is None:
            return f"NATS at {self.url} could not be reached"
        if isinstance(last, (asyncio.TimeoutError, self._mod.errors.TimeoutError)):
            return f"NATS at {self.url} did not answer"
        return f"NATS at {self.url}: {_cause(last)}"

    def _jetstream_off(self, nc, exc: BaseException) -> bool:
        """Nobody answers the JetStream API and the server said at connect that it has none."""
        # (nats-py's JetStream manager reports no responders as a 503 without a code.)
        no_answer = (self._mod.errors.NoRespondersError, self._mod.js.errors.NoStreamResponseError,
                     self._mod.js.errors.ServiceUnavailableError)
        info = getattr(nc, "_server_info", None)
        return isinstance(exc, no_answer) and isinstance(info, dict) and bool(info) and not info.get("jetstream")

    async def _retry(self, attempt: Callable, what: str, timeout: Optional[float] = None, grace: float = STOP_GRACE):
        """``await attempt(js)`` until it succeeds.  Transient errors are retried with a short backoff,
        and nothing is sent while the connection is down (nats-py would buffer it and its answer would
        only time out); other errors are final.  ``timeout`` None: until close()."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = BACKOFF_FIRST
        last: Optional[BaseException] = None
        stop_seen: List[float] = []
        while True:
            if self._closing.is_set():
                raise _Final(f"{what}: the NATS bus was closed")
            self._check_stop(stop_seen, what, grace, last)
            nc = await self._live()
            if not nc.is_connected:
                last = None
            else:
                sent = time.monotonic()
                try:
                    found = await attempt(self._js)
                    self._answered()
                    return found
                except BusError:
                    raise
                except Exception as exc:
                    if isinstance(exc, (asyncio.TimeoutError, self._mod.errors.TimeoutError)):
                        self._refused_since(sent, what)
                        self._unanswered(sent)
                    if not self._transient(exc):
                        raise BusError(f"{what}: {_cause(exc)}") from None
                    if timeout is not None and self._jetstream_off(nc, exc):
                        raise _Final(f"{what}: NATS at {self.url} has no JetStream "
                                     f"(nats-server must run with -js)") from None
                    last = exc
            if deadline is not None and time.monotonic() >= deadline:
                raise BusError(f"{what}: not done within {timeout:g} s ({self._why(last)})")
            if await self._pause(delay):
                raise _Final(f"{what}: the NATS bus was closed")
            delay = min(delay * 2, BACKOFF_MAX)

    # --- streams and publishing -----------------------------------------------------------------

    def ensure_stream(self, stream: str, subjects: list, duplicate_window: float = 7200.0) -> Optional[int]:
        """Create the stream (file storage, limits retention) or bring an existing one up to date:
        its subjects then include ``subjects`` and its duplicate window is ``duplicate_window`` seconds, or
        its ``max_age`` when that is less.  Other settings an operator gave it (limits, replicas) are kept.
        Returns the largest message the stream takes (its ``max_msg_size``), None when it sets none."""
        return self._call(self._ensure_stream(stream, list(subjects), float(duplicate_window)),
                   timeout=self.setup_timeout + CLOSE_TIMEOUT)

    async def _ensure_stream(self, stream: str, subjects: List[str], window: float) -> Optional[int]:
        api, js_errors = self._mod.js.api, self._mod.js.errors
        what = f"stream {stream}"

        async def info(js):
            try:
                return await js.stream_info(stream)
            except js_errors.NotFoundError:
                return None

        async def create(js):
            config = api.StreamConfig(name=stream, subjects=subjects, storage=api.StorageType.FILE,
                                      retention=api.RetentionPolicy.LIMITS, duplicate_window=window)
            try:
                await js.add_stream(config)
                return True
            except js_errors.BadRequestError as exc:
                if exc.err_code == 10058:  # created meanwhile by another process: update it instead
                    return False
                raise

        for _ in range(3):
            current = await self._retry(info, what, self.setup_timeout)
            if current is None:
                if await self._retry(create, what, self.setup_timeout):
                    return None
                continue
            config = current.config
            largest = config.max_msg_size if config.max_msg_size and config.max_msg_size > 0 else None
            retention = getattr(config.retention, "value", config.retention)
            if retention not in (None, "limits"):
                raise BusError(f"stream {stream} exists with {retention} retention; the bus needs limits "
                               f"retention (acknowledged records must stay for replay)")
            if config.no_ack:  # every publish stored and none answered: retried for ever, said as a hung server
                raise BusError(f"stream {stream} exists with no_ack set; the bus needs the server to acknowledge "
                               "each record it stores")
            have = list(config.subjects or [])
            missing = [s for s in subjects if s not in have]
            # an operator's max_age under the window: the server refuses a longer window (every process
            # stopped at start), and a message older than the age is gone anyway
            fits = min(window, config.max_age) if config.max_age else window
            if not missing and abs((config.duplicate_window or 0) - fits) < 1e-6:
                return largest
            updated = config.evolve(subjects=have + missing, duplicate_window=fits)

            async def update(js, updated=updated):
                await js.update_stream(updated)

            # refused for good (a subject of another setup overlaps): one line at once, not 30 s of retries
            await self._retry(update, f"stream {stream}: adding {', '.join(missing)} to its subjects "
                                      f"{', '.join(have)}" if missing else what, self.setup_timeout)
            return largest
        raise BusError(f"stream {stream}: could neither find nor create it")

    def stream_holding(self, subject: str) -> Optional[str]:
        """The name of the stream whose subjects take ``subject`` (wildcards allowed), or None."""
        not_found = self._mod.js.errors.NotFoundError

        async def find(js):
            try:
                return await js.find_stream_name_by_subject(subject)
            except not_found:
                return None

        return self._call(self._retry(find, f"the stream of {subject}", self.setup_timeout),
                          timeout=self.setup_timeout + CLOSE_TIMEOUT)

    def last_message(self, stream: str, subject: str) -> Optional[bytes]:
        """The data of the last message on ``subject`` in ``stream``; None when there is none."""
        js_errors = self._mod.js.errors

        async def get(js):
            try:
                return (await js.get_last_msg(stream, subject)).data
            except js_errors.NotFoundError:
                return None

        return self._call(self._retry(get, f"stream {stream}", self.setup_timeout),
                          timeout=self.setup_timeout + CLOSE_TIMEOUT)

    def last_seq(self, stream: str) -> int:
        """The stream's last sequence number (0 when it is empty)."""
        return self.stream_position(stream)[0]

    def stream_position(self, stream: str) -> Tuple[int, Optional[str]]:
        """The stream's last sequence number (0 when it is empty), and when the stream was made
        (RFC 3339; None when the server does not say): a stream made anew (its store lost, deleted
        and created again) numbers its messages from 1 again, and only this tells it apart."""
        async def info(js):
            return await js.stream_info(stream)

        found = self._call(self._retry(info, f"stream {stream}", self.setup_timeout),
                           timeout=self.setup_timeout + CLOSE_TIMEOUT)
        return found.state.last_seq or 0, _made(found)

    def max_payload(self) -> int:
        """The largest message the server takes (its ``max_payload``, headers included; 1 MB by
        default).  One over it is refused for good: the client raises, or the server drops the
        connection."""
        return int(getattr(self._nc, "max_payload", 0) or 1 << 20)

    def publish(self, subject: str, payload: bytes, msg_id: str) -> int:
        """Publish one record and wait for the server to have stored it; its stream sequence.  Retried
        until stored (the message id makes that harmless) or until close() (BusError)."""
        return self._call(self._publish(subject, bytes(payload), msg_id))

    async def _publish(self, subject: str, payload: bytes, msg_id: str) -> int:
        async def attempt(js):
            try:
                ack = await js.publish(subject, payload, timeout=ATTEMPT_TIMEOUT, headers={MSG_ID_HEADER: msg_id})
            except self._mod.js.errors.NoStreamResponseError:
                await self._check_stream_of(subject)
                raise
            self._streamless.pop(subject, None)
            return ack.seq

        return await self._retry(attempt, f"publish to {subject}")

    async def _check_stream_of(self, subject: str) -> None:
        """No stream answered a publish to ``subject``: _Final when the JetStream API, asked twice
        ``ATTEMPT_TIMEOUT`` apart or more, says that no stream takes it (deleted, or lost with the
        server's store: retrying would wait for ever); nothing when it does not answer (JetStream
        starting up) or a stream does take it."""
        try:
            await self._js.find_stream_name_by_subject(subject)
        except self._mod.js.errors.NotFoundError:
            first = self._streamless.setdefault(subject, time.monotonic())
            if time.monotonic() - first >= ATTEMPT_TIMEOUT:
                raise _Final(f"publish to {subject}: no stream on NATS at {self.url} takes this subject any "
                             "more (deleted, or lost with the server's store)") from None
            return
        except Exception as exc:
            if self._jetstream_off(self._nc, exc):  # restarted without -js: retried for ever in silence
                raise _Final(f"publish to {subject}: NATS at {self.url} has no JetStream "
                             "(nats-server must run with -js)") from None
            return
        self._streamless.pop(subject, None)

    def publish_many(self, items: Sequence[Tuple[str, bytes, str]]) -> None:
        """Publish ``(subject, payload, msg_id)`` records with many in flight at once, and return when
        the server has stored every one.  Those that fail are sent again, in their order, until stored
        or until close() (BusError)."""
        items = [(subject, bytes(payload), msg_id) for subject, payload, msg_id in items]
        if items:
            self._call(self._publish_many(items))

    def publish_once(self, items: Sequence[Tuple[str, bytes, str]]) -> bool:
        """Publish ``(subject, payload, msg_id)`` records with one attempt each, now or never: False
        when the server is not connected or did not store every one in time (none is sent again).
        What the server refuses for good is a BusError, as for ``publish_many``."""
        items = [(subject, bytes(payload), msg_id) for subject, payload, msg_id in items]
        return bool(items) and self._call(self._publish_once(items))

    async def _publish_once(self, items: List[Tuple[str, bytes, str]]) -> bool:
        if self._closing.is_set() or not self._nc.is_connected:
            return False
        left, _, _ = await self._publish_round(items, list(range(len(items))))
        return not left

    def _check_stop(self, stop_seen: List[float], what: str, grace: float = STOP_GRACE,
                    last: Optional[BaseException] = None) -> None:
        """A retry loop's turn: once the process is asked to stop, ``grace`` seconds more.  ``last``:
        the latest transient error (None: not connected), for the message."""
        if self.stopping():
            if not stop_seen:
                stop_seen.append(time.monotonic())
            if time.monotonic() - stop_seen[0] >= grace:
                raise _Final(f"{what}: given up {grace:g} s after the stop request ({self._why(last)})")

    async def _publish_many(self, items: List[Tuple[str, bytes, str]]) -> None:
        todo = list(range(len(items)))
        delay = BACKOFF_FIRST
        stop_seen: List[float] = []
        last: Optional[BaseException] = None
        while todo:
            if self._closing.is_set():
                raise BusError(f"publish of {len(todo)} records: the NATS bus was closed")
            self._check_stop(stop_seen, f"publish of {len(todo)} records", last=last)
            nc = await self._live()
            last = None
            if nc.is_connected:
                before, sent = len(todo), time.monotonic()
                todo, last, streamless = await self._publish_round(items, todo)
                if todo and isinstance(last, asyncio.TimeoutError) and nc.is_connected:
                    todo, last = await self._probe(items, todo, streamless)
                for subject in streamless:
                    await self._check_stream_of(subject)
                if len(todo) < before:
                    delay = BACKOFF_FIRST
                    self._answered()
                elif isinstance(last, (asyncio.TimeoutError, self._mod.errors.TimeoutError)):
                    self._refused_since(sent, f"publish of {len(todo)} records")
                    self._unanswered(sent)
            if todo:
                if await self._pause(delay):
                    raise BusError(f"publish of {len(todo)} records: the NATS bus was closed")
                delay = min(delay * 2, BACKOFF_MAX)

    async def _probe(self, items, todo: List[int], streamless: set) -> tuple:
        """Records left unanswered: the first sent again and waited for alone.  nats-py drops the
        server's error replies to publish_async (the reply handler raises instead of failing the
        future), so a refusal (a stream full with discard new) looks like silence there."""
        subject, payload, msg_id = items[todo[0]]
        try:
            await self._js.publish(subject, payload, timeout=ATTEMPT_TIMEOUT, headers={MSG_ID_HEADER: msg_id})
        except self._mod.js.errors.NoStreamResponseError as exc:
            streamless.add(subject)
            return todo, exc
        except Exception as exc:
            if not self._transient(exc):
                raise BusError(f"publish to {subject}: {_cause(exc)}") from None
            return todo, exc
        self._streamless.pop(subject, None)
        return todo[1:], None

    async def _publish_round(self, items, todo: List[int]) -> tuple:
        """Send every record of ``todo`` once, then collect the PubAcks: the indexes left to retry, the
        last error (None when the connection went), and the subjects no stream answered."""
        js, nc = self._js, self._nc
        sent: List[Tuple[int, asyncio.Future]] = []
        failed: List[int] = []
        unanswered: set = set()
        last: Optional[BaseException] = asyncio.TimeoutError()
        streamless: set = set()
        try:
            for position, index in enumerate(todo):
                if len(unanswered) >= PUBLISH_WINDOW:
                    # The window is full: wait for answers, and give the rest up for this round when
                    # none come (the connection is probably down).
                    done, unanswered = await asyncio.wait(unanswered, timeout=ATTEMPT_TIMEOUT,
                                                          return_when=asyncio.FIRST_COMPLETED)
                    if not done:
                        failed.extend(todo[position:])
                        break
                if not nc.is_connected or self._closing.is_set():
                    failed.extend(todo[position:])
                    last = None
                    break
                subject, payload, msg_id = items[index]
                try:
                    # Our window is below nats-py's own, so this never waits for a slot, and it does
                    # not yield to the loop: the client's flusher then writes many records at once.
                    fut = await js.publish_async(subject, payload, headers={MSG_ID_HEADER: msg_id})
                except Exception as exc:
                    if not self._transient(exc):
                        raise BusError(f"publish to {subject}: {_cause(exc)}") from None
                    self._last_error = last = exc
                    failed.extend(todo[position:])
                    break
                sent.append((index, fut))
                unanswered.add(fut)
            # Wait for the answers for as long as they keep coming, and no longer than the connection they
            # were sent on: the PubAcks of a server that was killed never come, and a restarted one is
            # sent the records again at once (it drops the copies it stored) instead of ATTEMPT_TIMEOUT on.
            link, quiet = self._disconnects, 0.0
            while unanswered and not self._closing.is_set() and quiet < ATTEMPT_TIMEOUT:
                done, unanswered = await asyncio.wait(unanswered, timeout=LINK_CHECK,
                                                      return_when=asyncio.FIRST_COMPLETED)
                quiet = 0.0 if done else quiet + LINK_CHECK
                if self._disconnects != link:
                    last = None
                    break
            for index, fut in sent:
                if not fut.done() or fut.cancelled():
                    failed.append(index)
                    continue
                exc = fut.exception()
                if exc is None:
                    self._streamless.pop(items[index][0], None)
                    continue
                if not self._transient(exc):
                    raise BusError(f"publish to {items[index][0]}: {_cause(exc)}") from None
                if isinstance(exc, self._mod.js.errors.NoStreamResponseError):
                    streamless.add(items[index][0])
                self._last_error = last = exc
                failed.append(index)
        finally:
            for _, fut in sent:
                if not fut.done():
                    fut.cancel()  # frees its slot in nats-py; the record is sent again next round
        failed.sort()
        return failed, last, streamless

    # --- consuming ------------------------------------------------------------------------------

    def consumer(self, stream: str, durable: str, filter_subject: str, start_seq: Optional[int] = None,
                 ack_wait: float = 30.0, max_ack_pending: int = 100_000) -> "Consumer":
        """A durable pull consumer of ``filter_subject`` in ``stream``, acknowledged cumulatively.

        ``start_seq`` None: carry on after the durable's ack floor (from the stream's start when the
        durable is new).  ``start_seq`` given: deliver from exactly that stream sequence, whatever the
        durable had acknowledged (the caller's saved state is the authority)."""
        if start_seq is not None and start_seq < 1:
            raise BusError(f"consumer {durable}: start sequence must be at least 1, not {start_seq}")
        consumer = Consumer(self, stream, durable, filter_subject, float(ack_wait), int(max_ack_pending))
        self._call(consumer._open(start_seq), timeout=self.setup_timeout + CLOSE_TIMEOUT)
        return consumer

    def consumers(self, stream: str) -> list:
        """The info of every consumer of ``stream`` (the server lists them a page at a time)."""
        async def every(js):
            found: list = []
            while True:
                page = await js.consumers_info(stream, offset=len(found))
                if not page:
                    return found
                found += page

        return self._call(self._retry(every, f"the consumers of stream {stream}", self.setup_timeout),
                          timeout=self.setup_timeout + CLOSE_TIMEOUT)

    def delete_consumer(self, stream: str, durable: str) -> None:
        """Delete a durable consumer of ``stream``; one that is gone already is no error."""
        not_found = self._mod.js.errors.NotFoundError

        async def delete(js):
            try:
                await js.delete_consumer(stream, durable)
            except not_found:
                pass

        self._call(self._retry(delete, f"consumer {durable} on stream {stream}", self.setup_timeout),
                   timeout=self.setup_timeout + CLOSE_TIMEOUT)

    # --- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and stop the thread, within a few seconds even when the server is
        gone.  A publish, fetch or ack waiting in another thread ends with BusError.  Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._closing.set)
            except (RuntimeError, AttributeError):  # loop already stopped, or never connected
                pass
            for fut in list(self._inflight):
                fut.cancel()
            if self._nc is not None:
                fut = None
                try:
                    fut = asyncio.run_coroutine_threadsafe(_discard(self._nc), self._loop)
                    fut.result(CLOSE_TIMEOUT)
                except Exception:  # a close that cannot finish in time is abandoned with the thread
                    if fut is not None:
                        fut.cancel()
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._closed = True
        try:
            self._loop.call_soon_threadsafe(self._loop.stop)
        except RuntimeError:  # already closed
            pass
        if threading.current_thread() is not self._thread:
            self._thread.join(JOIN_TIMEOUT)

    def __enter__(self) -> "Bus":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Consumer:
    """Reads one durable pull consumer: records in stream order, each given once, none skipped.

    Made by ``Bus.consumer``.  Not for use by more than one thread at a time."""

    def __init__(self, bus: Bus, stream: str, durable: str, filter_subject: str, ack_wait: float,
                 max_ack_pending: int):
        self.bus = bus
        self.stream = stream
        self.durable = durable
        self.filter_subject = filter_subject
        self.ack_wait = ack_wait
        self.max_ack_pending = max_ack_pending
        self._sub: Any = None
        self._caught_up = False  # the last fetch took all there was: the next waits for one message
        self._sub_generation = -1  # the bus client generation the subscription lives on
        self._gen = 0  # incarnation of the durable (each reset makes a new one)
        self._dseq = 0  # last delivery sequence seen from the current incarnation
        self._last_seq = 0  # last stream sequence handed to the caller
        self._acked_seq = 0  # stream sequence the server confirmed as acknowledged (and all before)
        self._needs_reset = False
        self._idle_since: Optional[float] = None
        self._pending = 0
        # After a reset: (seq, ack subject) of redeliveries the caller already has, to ack through the
        # new incarnation when the caller acks a message delivered by an older one.
        self._stand_ins: List[Tuple[int, str]] = []
        self._stand_in_limit = 0
        self._discarded: List[Tuple[int, int]] = []  # stream sequences gone before they were delivered
        # When the stream was made (``Bus.stream_position``), and the earlier such times of a stream that was
        # deleted and made anew under this reader (``remade``)
        self.made: Optional[str] = None
        self._remade: List[str] = []
        # The durable is still this reader's to pull from and to make anew (``fetch`` returns [] at once
        # when not: the caller makes sure first, ``fleet.PartitionLease``).
        self.ours: Callable[[], bool] = lambda: True
        # The last fetch had no answer: the connection was down, or the server could not serve the pull
        # (``fetch``).  A fetch that waited in vain on a working connection is not away.
        self.away = False

    # --- setting the durable up -----------------------------------------------------------------

    def _config(self, start_seq: Optional[int]):
        api = self.bus._mod.js.api
        config = api.ConsumerConfig(
            name=self.durable, durable_name=self.durable, filter_subject=self.filter_subject,
            ack_policy=api.AckPolicy.ALL, ack_wait=self.ack_wait, max_ack_pending=self.max_ack_pending,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        if start_seq is not None and start_seq > 1:
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start_seq
        return config

    def _what(self) -> str:
        return f"consumer {self.durable} on stream {self.stream}"

    async def _info(self, timeout: Optional[float]):
        """The durable's info, or None when it does not exist (BusError when the stream is gone)."""
        js_errors = self.bus._mod.js.errors

        async def attempt(js):
            try:
                return await js.consumer_info(self.stream, self.durable)
            except js_errors.NotFoundError as exc:
                if exc.err_code == 10059:
                    raise _Final(f"stream {self.stream} does not exist on NATS at {self.bus.url}") from None
                return None

        return await self.bus._retry(attempt, self._what(), timeout)

    async def _recreate(self, start_seq: int, timeout: Optional[float]) -> None:
        """Delete the durable and make it anew delivering from ``start_seq``; bind to it."""
        js_errors = self.bus._mod.js.errors
        config = self._config(start_seq)

        async def attempt(js):
            try:
                await js.delete_consumer(self.stream, self.durable)
            except js_errors.NotFoundError as exc:
                if exc.err_code == 10059:
                    raise _Final(f"stream {self.stream} does not exist on NATS at {self.bus.url}") from None
            await js.add_consumer(self.stream, config=config)

        deadline = None if timeout is None else time.monotonic() + timeout
        await self.bus._retry(attempt, self._what(), timeout)
        self._gen += 1
        self._dseq = 0
        await self._bind(None if deadline is None else max(0.1, deadline - time.monotonic()))

    async def _bind(self, timeout: Optional[float]) -> None:
        """A fresh subscription (new inbox) for the durable: anything still queued for the old one
        belongs to an earlier incarnation and is dropped with it."""
        old, self._sub = self._sub, None
        if old is not None:
            try:
                await old.unsubscribe()
            except Exception:
                pass

        async def attempt(js):
            return await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)

        self._sub = await self.bus._retry(attempt, self._what(), timeout)
        self._sub_generation = self.bus._generation

    async def _stream_made(self, timeout: Optional[float]) -> Optional[str]:
        async def attempt(js):
            try:
                return _made(await js.stream_info(self.stream))
            except self.bus._mod.js.errors.NotFoundError:
                raise _Final(f"stream {self.stream} does not exist on NATS at {self.bus.url}") from None

        return await self.bus._retry(attempt, f"stream {self.stream}", timeout)

    async def _open(self, start_seq: Optional[int]) -> None:
        timeout = self.bus.setup_timeout
        self.made = await self._stream_made(timeout)
        if start_seq is not None:
            self._last_seq = self._acked_seq = start_seq - 1
            await self._recreate(start_seq, timeout)
            return
        info = await self._info(timeout)
        if info is None:
            await self._recreate(1, timeout)
            return
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        self._last_seq = self._acked_seq = floor
        if info.num_ack_pending or not self._same_config(info.config):
            # Deliveries nobody acknowledged (a reader that stopped): made anew from the ack floor they
            # come at once and in order, instead of after ack_wait behind newer messages.  A changed
            # filter or ack setting takes effect the same way, keeping the position.
            await self._recreate(floor + 1, timeout)
            return
        self._gen += 1
        self._dseq = info.delivered.consumer_seq if info.delivered else 0
        await self._bind(timeout)

    def _same_config(self, config) -> bool:
        api = self.bus._mod.js.api
        ack_policy = getattr(config.ack_policy, "value", config.ack_policy)
        return (config.filter_subject == self.filter_subject and ack_policy == api.AckPolicy.ALL.value
                and abs((config.ack_wait or 0) - self.ack_wait) < 1e-3
                and config.max_ack_pending == self.max_ack_pending)

    async def _reset(self, timeout: float) -> None:
        """Make the durable anew from its ack floor after a lost delivery; what the caller already
        has is then skipped as it comes again."""
        deadline = time.monotonic() + timeout
        info = await self._info(timeout)
        floor = self._acked_seq
        if info is not None and info.ack_floor:
            floor = max(floor, info.ack_floor.stream_seq)
        if info is None:
            # The durable is gone.  With its stream deleted and made anew (an operator's rm and add), the new
            # stream numbers from 1 again: made anew from the old position, its first messages were skipped.
            made = await self._stream_made(max(0.1, deadline - time.monotonic()))
            if None not in (made, self.made) and made != self.made:
                self._remade.append(self.made)
                self.made, floor = made, 0
                self._last_seq = self._acked_seq = 0
        await self._recreate(floor + 1, max(0.1, deadline - time.monotonic()))
        self._stand_ins = []
        self._stand_in_limit = self._last_seq
        self._needs_reset = False
        self._idle_since = None

    # --- fetching -------------------------------------------------------------------------------

    def fetch(self, batch: int = 256, timeout: float = 1.0) -> List[Message]:
        """Up to ``batch`` new records, [] when none came within ``timeout`` seconds, or while the
        server is unreachable (this then waits about ``timeout`` and carries on once it is back)."""
        batch = max(1, int(batch))
        timeout = max(0.01, float(timeout))
        # The bound is a last resort: the steps inside keep to ``timeout``, give or take one attempt each.
        return self.bus._call(self._fetch(batch, timeout), timeout=timeout + 30.0)

    async def _fetch(self, batch: int, timeout: float) -> List[Message]:
        bus = self.bus
        errors = bus._mod.errors
        deadline = time.monotonic() + timeout
        self.away = True  # until the server answers the pull
        while True:
            remaining = deadline - time.monotonic()
            if bus._closing.is_set():
                raise _Final(f"{self._what()}: the NATS bus was closed")
            if remaining <= 0:
                return []
            if not self.ours():
                self.away = False
                return []
            nc = await bus._live()
            if not nc.is_connected:
                await bus._pause(min(remaining, 0.1))
                continue
            if self._needs_reset or self._sub is None or self._sub_generation != bus._generation:
                if await self._try(self._reset(max(remaining, ATTEMPT_TIMEOUT))) is _FAILED:
                    await bus._pause(min(remaining, 0.2))
                continue
            if self._idle_since is not None and time.monotonic() - self._idle_since > IDLE_CHECK:
                self._idle_since = time.monotonic()
                if await self._try(self._info(ATTEMPT_TIMEOUT)) is None:
                    self._needs_reset = True  # the durable is gone: make it again
                    continue
            # Caught up, the wait is for one message: nats-py's fetch, once a message came, waits on
            # for the whole batch until ``timeout``, which would hold the first record back by that
            # much.  The next fetch takes what has come meanwhile, without waiting.
            want = 1 if self._caught_up else batch
            sent = time.monotonic()
            try:
                raws = await self._sub.fetch(want, timeout=max(0.01, remaining))
                self.away = False
            except (asyncio.TimeoutError, errors.TimeoutError):
                raws = []
                bus._refused_since(sent, f"pull from {self._what()}")
                self.away = not nc.is_connected or not await self._answers(sent)
            except Exception as exc:
                if not bus._transient(exc):
                    raise BusError(f"{self._what()}: {_cause(exc)}") from None
                bus._last_error = exc
                if isinstance(exc, bus._mod.js.errors.ServiceUnavailableError):
                    # Nobody answered the pull: JetStream restarting, or the durable is gone.  Look.
                    self._idle_since = time.monotonic() - IDLE_CHECK - 1
                await bus._pause(min(deadline - time.monotonic(), 0.1))
                continue
            if not self.away:
                bus._answered()
            before = self._last_seq
            out = self._accept(raws)
            self._caught_up = len(raws) < want
            if out:
                self._idle_since = None
                if out[0].seq > before + 1:
                    await self._look_for_discards(before + 1, out[0].seq)
                return out
            if self._idle_since is None:
                self._idle_since = time.monotonic()

    async def _answers(self, sent: float) -> bool:
        """JetStream answers a request.  A hung server (stopped, overloaded, a half-open link) keeps the
        connection up until the client's own pings fail, 20-30 s on: a pull that waited in vain on it
        passed for agents with nothing to say, and the fleet's time moved on without their records.
        (A request the consumer needs anyway, its info: a user's permissions allow it; not nats-py's
        flush, as a PONG for a flush that timed out stops its reader.)"""
        try:
            await self.bus._js.consumer_info(self.stream, self.durable)
            return True
        except Exception as exc:
            if self.bus._transient(exc):
                self.bus._unanswered(sent)  # from the pull that waited in vain
                return False
            return True  # a refusal is an answer

    async def _look_for_discards(self, first_unseen: int, delivered: int) -> None:
        """Messages ``first_unseen`` .. ``delivered - 1`` did not come: other subjects, or gone before
        they were read (the stream's limits drop the oldest first, and the consumer skips them
        without a word).  Those below the stream's first sequence now are the second kind (some
        may be other subjects')."""
        async def attempt(js):
            return (await js.stream_info(self.stream)).state.first_seq

        first = await self._try(self.bus._retry(attempt, f"stream {self.stream}", ATTEMPT_TIMEOUT))
        if first is not _FAILED and first and first > first_unseen:
            self._discarded.append((first_unseen, min(first, delivered) - 1))

    def remade(self) -> List[str]:
        """When the stream was made, each time it was found deleted and made anew since the last call (read
        again from its first message; ``made`` is when the current one was made)."""
        found, self._remade = self._remade, []
        return found

    def discarded(self) -> List[Tuple[int, int]]:
        """The ranges of stream sequences found gone before they were read since the last call."""
        found, self._discarded = self._discarded, []
        return found

    async def _try(self, coro):
        """A setup step inside fetch: its result, or _FAILED on a transient failure (the fetch loop
        carries on and tries again later).  Final errors go through."""
        try:
            return await coro
        except _Final:
            raise
        except BusError as exc:
            self.bus._last_error = exc
            return _FAILED

    def _accept(self, raws) -> List[Message]:
        """The new records among the deliveries, in order; a gap in delivery sequence flags a reset."""
        out: List[Message] = []
        for raw in raws:
            try:
                meta = raw.metadata
                dseq, seq = meta.sequence.consumer, meta.sequence.stream
            except Exception:
                continue  # not a JetStream delivery
            if dseq != self._dseq + 1:
                # A delivery went missing (connection dropped mid-flight, server state rolled back):
                # later ones cannot be handed out, or a later ack would cover the missing one.
                self._needs_reset = True
                break
            self._dseq = dseq
            if seq <= self._last_seq:
                # The caller has it already (a redelivery, or the replay after a reset).
                if self._acked_seq < seq <= self._stand_in_limit:
                    self._stand_ins.append((seq, raw.reply))
                    if len(self._stand_ins) > STAND_IN_CAP:
                        # Every other one, the newest kept: an ack then lands a little lower at worst.
                        self._stand_ins = self._stand_ins[::-2][::-1]
                continue
            self._last_seq = seq
            out.append(Message(raw.subject, raw.data, seq, raw, self._gen))
        return out

    # --- acknowledging --------------------------------------------------------------------------

    def ack(self, message: Message) -> None:
        """Acknowledge ``message`` and every record before it; returns once the server confirmed.
        Retried on transient errors until confirmed or until close() (BusError).  An ack the server
        can no longer take (its consumer state rolled back in a crash) is dropped: the ack floor stays
        lower, which can only mean more replay, never less."""
        self.bus._call(self._ack(message))

    async def _ack(self, message: Message) -> None:
        if message.seq <= self._acked_seq:
            return  # covered by a later ack already
        reply, seq = getattr(message._raw, "reply", None), message.seq
        if message._gen != self._gen:
            # Delivered by an earlier incarnation of the durable, whose ack subjects the new one does
            # not know: ack the newest redelivery of it or of an earlier record instead.  With none
            # yet, the ack floor stays where it is, which only means more replay (never less).
            at = bisect.bisect_right([s for s, _ in self._stand_ins], seq)
            if at == 0:
                return
            seq, reply = self._stand_ins[at - 1]
        if not reply:
            raise BusError(f"ack of {self.stream} #{seq}: not a message from this consumer")
        errors, js_errors = self.bus._mod.errors, self.bus._mod.js.errors

        async def attempt(js):
            # What nats-py's ack_sync does, but through the bus's current client: the one that received
            # the message may have been replaced since.
            try:
                await self.bus._nc.request(reply, b"", timeout=ATTEMPT_TIMEOUT)
                return True
            except (asyncio.TimeoutError, errors.NoRespondersError):  # nats-py's TimeoutError included
                pass
            # No answer.  The server also stays silent on an ack of a delivery it does not know: one
            # past its consumer's delivered pointer, which a crash (SIGKILL) can roll back.  Look.
            try:
                info = await js.consumer_info(self.stream, self.durable)
            except js_errors.NotFoundError:
                info = None
            if info is not None and info.ack_floor and info.ack_floor.stream_seq >= seq:
                return True
            if info is None or info.delivered is None or info.delivered.stream_seq < seq:
                # This ack cannot land.  Leave the floor where it is (more replay, never less) and
                # make the durable anew at the next fetch.
                self._needs_reset = True
                return False
            raise errors.TimeoutError  # a slow server: send it again

        # stopping: not waited for (the caller's state holds its position; an ack only spares a replay)
        if not await self.bus._retry(attempt, f"ack of {self.stream} #{seq}", grace=0):
            return
        self._acked_seq = max(self._acked_seq, seq)
        if self._stand_ins:
            self._stand_ins = [(s, r) for s, r in self._stand_ins if s > self._acked_seq]

    # --- stats ----------------------------------------------------------------------------------

    def pending(self) -> int:
        """Records in the stream not yet delivered to this consumer (the last known count when the
        server does not answer right now)."""
        try:
            info = self.bus._call(self._info(ATTEMPT_TIMEOUT), timeout=ATTEMPT_TIMEOUT + 2)
        except BusError:
            return self._pending
        if info is not None and info.num_pending is not None:
            self._pending = int(info.num_pending)
        return self._pending


_FAILED = object()


def _made(info) -> Optional[str]:
    """When a stream was made (RFC 3339), from its info; None when the server does not say."""
    created = getattr(info, "created", None)
    if created is not None and not isinstance(created, str):
        created = created.isoformat()
    return created


async def _discard(nc) -> None:
    """Close a client, bounded: a client that is reconnecting can take its time otherwise."""
    try:
        await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT - 0.5)
    except BaseException:  # noqa: B036 - closing is best effort; cancellation included
        pass


_logging_quieted = False


def _quiet_client_logging() -> None:
    """nats-py logs some errors with a traceback; the bus reports its errors as BusError instead."""
    global _logging_quieted
    if not _logging_quieted:
        for name in ("nats", "asyncio"):  # asyncio's: warnings from a failed TLS handshake
            logger = logging.getLogger(name)
            logger.addHandler(logging.NullHandler())
            logger.propagate = False
        _logging_quieted = True
