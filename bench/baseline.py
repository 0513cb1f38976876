#!/usr/bin/env python3
"""The PipeShell rule written by hand: the yardstick pipeshell-filter is compared with.

    python bench/baseline.py < bench/out/corpus.ndjson
    python bench/baseline.py FILE [--verbose]

What someone would write in an afternoon for this one rule and the evtx_dump
shape: parse every line with ujson, keep events 800 / 4103 / 4104 whose
text field contains a named-pipe server or client type name (any case), and
slide a five-minute window over them.  An alert needs a server event and a
client event in the window and more than two distinct computers among the
window's events; an alert empties the window (the next one needs new events).
Lines are taken in the order they come; the window is kept in event time.

Prints one JSON object: lines read, events that met a selection, alerts.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections import deque

import ujson

SERVER = "system.io.pipes.namedpipeserverstream"
CLIENT = "system.io.pipes.namedpipeclientstream"
WINDOW_SECONDS = 300.0


def event_seconds(system: dict):
    """TimeCreated SystemTime ("2026-11-02T09:00:00.0695600Z", UTC) as POSIX seconds, or None."""
    try:
        stamp = system["TimeCreated"]["#attributes"]["SystemTime"]
        whole = datetime.datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
        fraction = stamp[19:].rstrip("Zz")
        return whole.replace(tzinfo=datetime.timezone.utc).timestamp() + (float(fraction) if fraction else 0.0)
    except (KeyError, TypeError, ValueError):
        return None


def strings(value):
    """Every string inside a JSON value (event 800 keeps its data as an unnamed list)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def searched_text(event_id: int, data: dict) -> str:
    if event_id == 800:
        return "\n".join(strings(data))
    field = data.get("Payload" if event_id == 4103 else "ScriptBlockText")
    return field if isinstance(field, str) else ""


def run(stream, verbose: bool = False) -> dict:
    window = deque()  # (time, computer, is_server, is_client), oldest first
    lines = matched = alerts = 0
    for line in stream:
        lines += 1
        try:
            event = ujson.loads(line)["Event"]
            system = event["System"]
            event_id = system["EventID"]
            if isinstance(event_id, dict):
                event_id = event_id.get("#text")
            event_id = int(event_id)
        except (ValueError, KeyError, TypeError):
            continue
        if event_id not in (800, 4103, 4104):
            continue
        data = event.get("EventData")
        if not isinstance(data, dict):
            continue
        text = searched_text(event_id, data).lower()
        is_server = SERVER in text
        is_client = CLIENT in text
        if not (is_server or is_client):
            continue
        matched += 1
        when = event_seconds(system)
        if when is None:
            continue
        # keep the window in time order even if this event came a little late
        entry = (when, system.get("Computer"), is_server, is_client)
        if window and when < window[-1][0]:
            items = sorted([*window, entry], key=lambda e: e[0])
            window.clear()
            window.extend(items)
        else:
            window.append(entry)
        newest = window[-1][0]
        while window[0][0] < newest - WINDOW_SECONDS:
            window.popleft()
        hosts = {e[1] for e in window if e[1] is not None}
        if len(hosts) > 2 and any(e[2] for e in window) and any(e[3] for e in window):
            alerts += 1
            if verbose:
                stamp = datetime.datetime.fromtimestamp(newest, datetime.timezone.utc).isoformat()
                sys.stderr.write(f"alert at {stamp}: {', '.join(sorted(hosts))}\n")
            window.clear()
    return {"lines": lines, "matched": matched, "alerts": alerts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Hand-written PipeShell rule (benchmark baseline).")
    parser.add_argument("file", nargs="?", help="NDJSON file (default: stdin)")
    parser.add_argument("--verbose", action="store_true", help="one line per alert on stderr")
    args = parser.parse_args(argv)
    if args.file:
        with open(args.file, "rb") as stream:
            result = run(stream, args.verbose)
    else:
        result = run(sys.stdin.buffer, args.verbose)
    print(ujson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
