"""Builders for synthetic PowerShell events and hypothesis strategies over streams of them."""

import datetime

from hypothesis import strategies as st

SERVER = "System.IO.Pipes.NamedPipeServerStream"
CLIENT = "System.IO.Pipes.NamedPipeClientStream"
BASE = datetime.datetime(2021, 6, 3, 13, 0, 0, tzinfo=datetime.timezone.utc)
HOSTS = ["srv01", "cli01", "cli02", "cli03", "ws04"]


def iso(seconds: float) -> str:
    moment = BASE + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def flat_event(seconds, host, kind, event_id=4104, record_id=None):
    """A flat Sigma-style event; kind is 'server', 'client', 'both' or 'benign'."""
    text = {"server": f"$p = New-Object {SERVER}('x')", "client": f"$c = New-Object {CLIENT}('.', 'x')",
            "both": f"{SERVER} {CLIENT}", "benign": "Get-ChildItem C:\\ | Out-Null"}[kind]
    field = {4104: "ScriptBlockText", 4103: "Payload", 800: "EventData"}[event_id]
    event = {"EventID": event_id, "Computer": host, "@timestamp": iso(seconds), field: text}
    if record_id is not None:
        event["EventRecordID"] = record_id
    return event


def evtx_event(seconds, host, kind, event_id=4104, record_id=1):
    """The same event as Windows XML rendered to JSON (evtx / evtx_dump / Chainsaw shape)."""
    text = flat_event(seconds, host, kind, event_id)
    body = next(v for k, v in text.items() if k in ("ScriptBlockText", "Payload", "EventData"))
    system = {
        "EventID": event_id,
        "Computer": host,
        "EventRecordID": record_id,
        "TimeCreated": {"#attributes": {"SystemTime": iso(seconds)[:-1] + "000Z"}},
    }
    if event_id == 800:
        system["EventID"] = {"#attributes": {"Qualifiers": "0"}, "#text": "800"}
        data = {"Data": {"#text": ["Get-Thing", "\tHostName=ConsoleHost\r\n", f"ParameterBinding: value=\"{body}\""]}}
    elif event_id == 4103:
        data = {"ContextInfo": "Host Name = ConsoleHost", "UserData": "", "Payload": body}
    else:
        data = {"MessageNumber": 1, "MessageTotal": 1, "ScriptBlockText": body, "ScriptBlockId": "id", "Path": ""}
    return {"Event": {"System": system, "EventData": data}}


@st.composite
def raw_events(draw, max_size=40, span=900):
    """(seconds, host, kind, event_id) tuples; integer seconds so that ties are common."""
    size = draw(st.integers(0, max_size))
    events = []
    for i in range(size):
        events.append((
            draw(st.integers(0, span)),
            draw(st.sampled_from(HOSTS)),
            draw(st.sampled_from(["server", "client", "client", "server", "both", "benign"])),
            draw(st.sampled_from([800, 4103, 4104])),
            i,
        ))
    return events


# Fluent Bit's framings of a record (``io.frames``): its stdin form, the filter's own --fluentbit-time output,
# its event format since 2.1 with metadata, and its file output's default format with the tag before it.
FRAMINGS = ("plain", "tight", "meta", "tag")

# Lines that open like a frame and are none, or not all of one (each diagnosed, or passed on as a line with a
# syntax error is when it holds no needle and is shaped like a frame around a record).
FRAME_GARBAGE = [b"[1, 2]", b"tag: [x", b'[1.5, {"a":1}', b"[1.5, [1]]", b'win: [1.5, {"a":1}', b'[[1.5], {"a":1}]',
                 b'[true, {"a":1}]', b'["1.5", {"a":1}]', b'[1.5, {"a":1}, 2]', b'win: [1.5, {"a":1}] x',
                 b'[1.5, {"a":1}, {"b":2}]', b"win: [1.5, {]", b"[1e400, {}]", b"[-3, {}]", b'[[1.5, {}], [1]]']


def framed(record: bytes, seconds: float, framing: str) -> bytes:
    """``record`` (a JSON object's line) in one of Fluent Bit's frames, at ``seconds`` after ``BASE``."""
    stamp = b"%.9f" % (BASE.timestamp() + seconds)
    return {"plain": b"[" + stamp + b", " + record + b"]",
            "tight": b"[" + stamp + b"," + record + b"]",
            "meta": b"[[" + stamp + b', {"src": "x"}], ' + record + b"]",
            "tag": b"win: [" + stamp + b", " + record + b"]"}[framing]
