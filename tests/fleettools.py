"""What the fleet-bus tests (test_fleet_nats*.py) share: agents (``--stage match --nats``) and correlators
(``--stage correlate --nats``) of the real CLI on a real ``nats-server`` (``natsserver``), fed lines timed
now, and what they alerted and said, read back; waits on a condition with a deadline, not a fixed sleep
(a fixed one was too short on a loaded machine)."""

import datetime
import fcntl
import json
import os
import signal
import subprocess
import time

from clitools import COMMAND, REPO, alerts
from test_stages import BY_HOST

WAIT = 60  # seconds a step may take on a loaded machine before it counts as failed
SAMPLE = os.path.join(REPO, "examples", "pipeshell-sample.ndjson")
QUICK_BY_HOST = BY_HOST.replace("timeframe: 2m", "timeframe: 10s")
PIPE_TEXT = "$p = New-Object System.IO.Pipes.NamedPipeServerStream('x')"  # what QUICK_BY_HOST counts


def event_line(host: str, text: str = PIPE_TEXT) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({"EventID": 4104, "Computer": host, "@timestamp": now, "ScriptBlockText": text}).encode() + b"\n"


def wait_until(condition, timeout: float = WAIT, step: float = 0.2):
    """``condition()`` once it is true, polled every ``step`` seconds; its last value at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(step)
    return condition()


def wait_for_alerts(path, count: int, process) -> list:
    """The alerts in ``path`` once there are ``count``, or ``process`` ended, or ``WAIT`` passed."""
    wait_until(lambda: len(alerts(path.read_bytes())) >= count or process.poll() is not None)
    return alerts(path.read_bytes())


def open_text(process) -> str:
    """What ``process`` wrote on stderr so far, without waiting for more."""
    fd = process.stderr.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    chunk = process.stderr.read() or b""
    process.seen = getattr(process, "seen", b"") + chunk
    return process.seen.decode()


def streams_made(url: str, prefix: str = "pipeshell") -> bool:
    """Both of the prefix's streams exist: a process of the fleet has connected and set them up."""
    from pipeshell_filter.io.bus import Bus
    from pipeshell_filter.io.fleet import alert_subject

    with Bus(url, name="test looker") as bus:
        return bus.stream_holding(f"{prefix}.records.0") is not None and \
            bus.stream_holding(alert_subject(prefix)) is not None


def bus_alerts(url: str, want: int, timeout: float = WAIT) -> list:
    """Every alert on the alert subject, read from the start; waits until ``want`` arrived, then
    one more second for any duplicate."""
    from pipeshell_filter.io.bus import Bus
    from pipeshell_filter.io.fleet import ALERT_STREAM, alert_subject

    found = []
    with Bus(url, name="test reader") as bus:
        bus.ensure_stream(ALERT_STREAM, [alert_subject("pipeshell")])
        consumer = bus.consumer(ALERT_STREAM, f"reader-{time.monotonic_ns()}", alert_subject("pipeshell"), 1)
        deadline, settle = time.monotonic() + timeout, None
        while time.monotonic() < (settle or deadline):
            for message in consumer.fetch(64, 0.5):
                found.append(json.loads(message.data))
                consumer.ack(message)
            if len(found) >= want and settle is None:
                settle = time.monotonic() + 1.0
    return found


def hosts(process) -> list:
    """The hosts of each alert a correlator (``Fleet.correlator``) wrote on stdout so far."""
    return [a["related"]["hosts"] for a in alerts(process.out.read_bytes())]


class Fleet:
    """Agents a0, a1, ... (``--heartbeat 1``) on ``server_url``, fed lines timed now, with QUICK_BY_HOST
    (lateness ``lateness``, idle 1 s); correlators started on whichever URL a test gives (a relay)."""

    def __init__(self, tmp_path, server_url: str, agents: int = 2, lateness: str = "2"):
        (tmp_path / "by.yml").write_text(QUICK_BY_HOST)
        self.tmp = tmp_path
        self.rules = ["--rule", str(tmp_path / "by.yml"), "--lateness", lateness, "--idle", "1"]
        self.agents = [subprocess.Popen(COMMAND + self.rules + ["--stage", "match", "--nats", server_url, "--agent",
                                                                f"a{i}", "--heartbeat", "1", "--quiet"],
                                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                       for i in range(agents)]
        self.correlators = []

    def correlator(self, url: str, name: str = "c", extra=(), command=COMMAND):
        """A correlator with its state in ``<name>.json``, its stdout in ``<name>.ndjson`` (``.out``)."""
        out = self.tmp / f"{name}.ndjson"
        process = subprocess.Popen(
            command + self.rules + ["--stage", "correlate", "--nats", url, "--state", str(self.tmp / f"{name}.json"),
                                    "--state-interval", "0.2", "--agents", str(len(self.agents)), *extra],
            stdout=open(out, "wb"), stderr=subprocess.PIPE)
        process.out = out
        self.correlators.append(process)
        return process

    def active(self, process) -> None:
        """Ticks until ``process`` has saved a state: it reads its partition."""
        state = self.tmp / (process.out.stem + ".json")
        deadline = time.monotonic() + WAIT
        while not state.exists():
            assert time.monotonic() < deadline and process.poll() is None, "the correlator did not start"
            self.tick(1)

    def write(self, agent: int, host: str, text: str = PIPE_TEXT) -> None:
        self.agents[agent].stdin.write(event_line(host, text))
        self.agents[agent].stdin.flush()

    def tick(self, seconds: int) -> None:
        """A quiet line from every agent each second."""
        for _ in range(seconds):
            for agent in range(len(self.agents)):
                self.write(agent, "quiet", "Get-ChildItem")
            time.sleep(1)

    def end(self, process, count: int = 1) -> list:
        """End of the agents' input, then the alerts ``process`` made once it has ``count``."""
        for agent in self.agents:
            agent.stdin.close()
            assert agent.wait(timeout=WAIT) == 0, agent.stderr.read()
        return wait_for_alerts(process.out, count, process)

    def stop(self) -> None:
        for agent in self.agents:
            if agent.poll() is None:
                agent.stdin.close()
                agent.wait(timeout=WAIT)
        for process in self.correlators:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=WAIT)
