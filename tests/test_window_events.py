"""A window's events map (``windows.WindowEvents``): the SortedDict it replaced, lighter for the
few events most windows hold, and a SortedList of keys past ``SMALL_WINDOW``."""

from hypothesis import given, settings, strategies as st

from pipeshell_filter.correlate.windows import SMALL_WINDOW, WindowEvents

keys = st.tuples(st.integers(0, 60), st.integers(0, 3 * SMALL_WINDOW))
steps = st.lists(st.one_of(st.tuples(st.just("set"), keys), st.tuples(st.just("pop"), st.integers(0, 10**6)),
                           st.tuples(st.just("update"), st.lists(keys, max_size=2 * SMALL_WINDOW))),
                 max_size=4 * SMALL_WINDOW)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_it_behaves_as_a_sorted_mapping(steps):
    """Whatever is set, taken out or added at once (in and out of order, across the size at which
    the keys change container), it reads as a dict in key order."""
    events, model = WindowEvents(), {}
    for n, (what, arg) in enumerate(steps):
        if what == "set":
            events[arg] = model[arg] = n
        elif what == "update":
            items = [(key, n) for key in arg]
            events.update(items)
            model.update(items)
        elif model:
            key = sorted(model)[arg % len(model)]
            assert events.pop(key) == model.pop(key)
        ordered = sorted(model.items())
        assert events.items() == ordered
        assert list(events) == events.keys() == [key for key, _ in ordered]
        assert events.values() == [value for _, value in ordered]
        assert len(events) == len(model) and bool(events) == bool(model)
        if model:
            assert events.peekitem(0) == ordered[0] and events.peekitem(-1) == ordered[-1]
            assert all(key in events and events[key] == value for key, value in ordered)
    assert WindowEvents(events.items()).items() == sorted(model.items())


def test_a_large_window_keeps_its_keys_sorted_by_bisection():
    """Past ``SMALL_WINDOW`` events the keys are a SortedList: a flood of late events in one group
    inserts each in O(log n), not by moving a list's tail."""
    events = WindowEvents()
    for n in range(10 * SMALL_WINDOW, 0, -1):  # every one out of order
        events[(n, n)] = n
    assert type(events._keys) is not list
    assert events.peekitem(0) == ((1, 1), 1) and len(events) == 10 * SMALL_WINDOW
