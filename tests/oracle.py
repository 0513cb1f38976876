"""A brute-force reference for the built-in rule, written independently of the filter.

Sort by time; per distinct time t, the window is every candidate event with time
in [t - timeframe, t] not consumed by an earlier alert; fire when it has a server
event, a client event and more than two distinct hosts; firing consumes up to t.
"""

SERVER = "namedpipeserverstream"
CLIENT = "namedpipeclientstream"


def sides(event_text: str):
    text = event_text.lower()
    return (SERVER in text, CLIENT in text)


def pipeshell_oracle(events, timeframe=300, threshold=2, join="window"):
    """events: (seconds, host, kind, event_id, ident).  Returns [(t, frozenset(idents))]."""
    candidates = []
    for seconds, host, kind, _event_id, ident in events:
        server = kind in ("server", "both")
        client = kind in ("client", "both")
        if join == "event":
            server = client = server and client
        if server or client:
            candidates.append((seconds, host, server, client, ident))
    candidates.sort(key=lambda c: c[0])
    alerts, consumed = [], float("-inf")
    for t in sorted({c[0] for c in candidates}):
        window = [c for c in candidates if consumed < c[0] and t - timeframe <= c[0] <= t]
        if any(c[2] for c in window) and any(c[3] for c in window) and len({c[1] for c in window}) > threshold:
            alerts.append((t, frozenset(c[4] for c in window)))
            consumed = t
    return alerts
