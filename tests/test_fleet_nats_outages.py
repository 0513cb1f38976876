"""The fleet bus when the server is slow, hung, killed or shared by two correlators of one partition,
with the real ``nats-server`` (``natsserver``): what the correlator counts as the agents' silence,
how soon an agent's publishes go on after a crash, what is said, and who alerts."""

import datetime
import json
import signal
import subprocess
import time

import pytest

from clitools import COMMAND, alerts
from natsproxy import HoldingRelay
from natsserver import NatsServer, needs_nats
from test_fleet_nats import QUICK_BY_HOST, WAIT

pytestmark = needs_nats


def event_line(host: str, text: str = "$p = New-Object System.IO.Pipes.NamedPipeServerStream('x')") -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({"EventID": 4104, "Computer": host, "@timestamp": now, "ScriptBlockText": text}).encode() + b"\n"


def wait_until(condition, timeout: float = WAIT, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(step)
    return condition()


class Fleet:
    """Agents a0, a1 (``--heartbeat 1``) straight to the server; correlators at ``url`` (a relay)."""

    def __init__(self, tmp_path, server_url: str, agents: int = 2):
        (tmp_path / "by.yml").write_text(QUICK_BY_HOST)
        self.tmp = tmp_path
        self.rules = ["--rule", str(tmp_path / "by.yml"), "--lateness", "2", "--idle", "1"]
        self.agents = [subprocess.Popen(COMMAND + self.rules + ["--stage", "match", "--nats", server_url, "--agent",
                                                                f"a{i}", "--heartbeat", "1", "--quiet"],
                                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                       for i in range(agents)]
        self.correlators = []

    def correlator(self, url: str, name: str = "c", extra=()):
        out = self.tmp / f"{name}.ndjson"
        process = subprocess.Popen(
            COMMAND + self.rules + ["--stage", "correlate", "--nats", url, "--state", str(self.tmp / f"{name}.json"),
                                    "--state-interval", "0.2", "--agents", str(len(self.agents)), *extra],
            stdout=open(out, "wb"), stderr=subprocess.PIPE)
        process.out = out
        self.correlators.append(process)
        return process

    def write(self, agent: int, host: str, text: str = None) -> None:
        self.agents[agent].stdin.write(event_line(host) if text is None else event_line(host, text))
        self.agents[agent].stdin.flush()

    def tick(self, seconds: int) -> None:
        for _ in range(seconds):
            for agent in range(len(self.agents)):
                self.write(agent, "quiet", "Get-ChildItem")
            time.sleep(1)

    def stop(self) -> None:
        for agent in self.agents:
            if agent.poll() is None:
                agent.stdin.close()
                agent.wait(timeout=WAIT)
        for process in self.correlators:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=WAIT)


def hosts(process) -> list:
    return [a["related"]["hosts"] for a in alerts(process.out.read_bytes())]


@pytest.mark.parametrize("held", [b"pipeshell.alerts", b"$JS.ACK"], ids=["alert publish", "ack"])
def test_a_correlator_held_up_by_the_server_does_not_count_the_wait_as_the_agents_silence(tmp_path, held):
    """The server slow for 8 s just as the correlator publishes an alert, or acknowledges (the relay
    holds its traffic): both agents were declared silent (--agent-idle 3) when it came back, and the
    fleet's time moved on without them.  The wait is no time in which the correlator could hear them."""
    with NatsServer(tmp_path / "nats") as server:
        relay = HoldingRelay(server.port)
        fleet = Fleet(tmp_path, server.url)
        try:
            correlate = fleet.correlator(relay.url, extra=["--agent-idle", "3", "--early-alerts"])
            fleet.tick(3)
            relay.hold_on(held, 8)
            for _ in range(3):
                fleet.write(0, "first")
            assert relay.held.wait(WAIT)
            fleet.tick(8)
            for _ in range(3):
                fleet.write(1, "second")
            fleet.tick(3)
            assert wait_until(lambda: len(hosts(correlate)) == 2), hosts(correlate)
        finally:
            fleet.stop()
            relay.close()
    err = correlate.stderr.read().decode()
    assert hosts(correlate) == [["first"], ["second"]], err
    assert "sent nothing" not in err, err
