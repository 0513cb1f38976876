"""Field resolution: where a Sigma field name (``EventID``, ``Payload``) lives in one event.

The same PowerShell event arrives in different JSON shapes depending on the
collector.  Each shape is a *profile*: a declarative table from Sigma field
names to candidate paths, a detector (paths that must exist), fallback roots for
fields the table does not list, and the paths of the event time.  Profiles ship
as YAML in ``profiles/`` (one per collector shape, tried in the order of
``profiles/order.txt``: the first whose detector holds wins, ``flat`` last);
``--field-map FILE`` loads a user's own in the same format, tried first.

Table format (YAML or JSON)::

    name: my-collector
    description: free text           # optional
    detect: [my.event_id]            # the profile applies when all these exist
    product: windows                 # optional: the logsource product of its events
    time: ["@timestamp"]             # first present, parsable value wins
    roots: [my.data]                 # unknown field F: F itself, then my.data.F
    fields:                          # a listed field is looked up only here
      EventID: [my.event_id]         # first candidate present wins
      ScriptBlockText:
        - my.data.ScriptBlockText
        - {path: my.inserts.2, event_id: [4104]}   # positional, by EventID
      read_time: []                  # never resolves: hidden from rules

Paths are dotted; an all-digit segment indexes a list.
"""

from __future__ import annotations

import os
from typing import Optional

import attrs
import yaml

from ..values import MISSING, first_leaf, fold, leaves
from ..yamlfile import UniqueKeyLoader
from .timeparse import parse_time


class ProfileError(ValueError):
    """A field-map table that does not have the documented format."""


def parse_path(text: str) -> tuple:
    if not isinstance(text, str) or not text:
        raise ProfileError(f"a path must be a non-empty string, got {text!r}")
    return tuple(int(p) if p.isdigit() else p for p in text.split("."))


def lookup(event, path: tuple):
    """Follow ``path`` through dicts and lists; MISSING when any step is absent."""
    node = event
    for step in path:
        if isinstance(step, int):
            if isinstance(node, list) and -len(node) <= step < len(node):
                node = node[step]
                continue
            if isinstance(node, dict) and str(step) in node:
                node = node[str(step)]
                continue
            return MISSING
        if isinstance(node, dict) and step in node:
            node = node[step]
        else:
            return MISSING
    return node


@attrs.frozen
class Candidate:
    path: tuple
    event_ids: Optional[frozenset] = None  # only for events with one of these EventIDs


@attrs.frozen
class Profile:
    name: str
    detect: tuple  # of paths
    fields: dict  # Sigma field name -> tuple of Candidate
    roots: tuple  # of paths
    time: tuple  # of paths
    source: str = "built-in"
    product: Optional[str] = None  # the logsource product of every event of this shape (windows)

    def applies_to(self, event: dict) -> bool:
        return all(lookup(event, path) is not MISSING for path in self.detect)


def profile_from_table(table, source: str) -> Profile:
    """Build a profile from its declarative table (see the module docstring)."""
    if not isinstance(table, dict):
        raise ProfileError(f"{source}: a field map must be a mapping")
    unknown = set(table) - {"name", "detect", "time", "roots", "fields", "description", "product"}
    if unknown:
        raise ProfileError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{source}: 'name' must be a non-empty string")

    def paths(key):
        value = table.get(key, [])
        if not isinstance(value, list):
            raise ProfileError(f"{source}: '{key}' must be a list of paths")
        return tuple(parse_path(v) for v in value)

    fields = {}
    raw_fields = table.get("fields", {})
    if not isinstance(raw_fields, dict):
        raise ProfileError(f"{source}: 'fields' must map field names to lists of paths")
    for field, candidates in raw_fields.items():
        if isinstance(candidates, (str, dict)):
            candidates = [candidates]
        if not isinstance(candidates, list):
            raise ProfileError(f"{source}: field {field!r} must list its paths")
        compiled = []
        for candidate in candidates:
            if isinstance(candidate, str):
                compiled.append(Candidate(parse_path(candidate)))
            elif isinstance(candidate, dict) and set(candidate) <= {"path", "event_id"} and "path" in candidate:
                ids = candidate.get("event_id")
                if ids is not None:
                    ids = ids if isinstance(ids, list) else [ids]
                    ids = frozenset(str(i) for i in ids)
                compiled.append(Candidate(parse_path(candidate["path"]), ids))
            else:
                raise ProfileError(f"{source}: field {field!r}: a candidate is a path or {{path, event_id}}")
        fields[str(field)] = tuple(compiled)
    product = table.get("product")
    if product is not None and (not isinstance(product, str) or not product):
        raise ProfileError(f"{source}: 'product' must be a non-empty string")
    return Profile(name, paths("detect"), fields, paths("roots"), paths("time"), source, product)


def load_profile_file(path: str) -> Profile:
    try:
        with open(path, encoding="utf-8") as handle:
            table = yaml.load(handle, Loader=UniqueKeyLoader)  # a field listed twice is an error
    except OSError as error:
        raise ProfileError(f"cannot read field map {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ProfileError(f"field map {path} is not valid YAML/JSON: {str(error).splitlines()[0]}") from None
    return profile_from_table(table, path)


_PROFILE_DIR = os.path.join(os.path.dirname(__file__), "profiles")


def builtin_profiles() -> list:
    """The shipped profiles, most specific first (``flat`` last: it applies to anything)."""
    with open(os.path.join(_PROFILE_DIR, "order.txt"), encoding="utf-8") as handle:
        names = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    return [load_profile_file(os.path.join(_PROFILE_DIR, f"{name}.yml")) for name in names]


class FieldResolver:
    """Picks a profile per event and resolves Sigma field names through it."""

    def __init__(self, profiles: list, fixed: Optional[str] = None, time_field: Optional[str] = None):
        if fixed not in (None, "auto"):
            chosen = [p for p in profiles if p.name == fixed]
            if not chosen:
                names = ", ".join(p.name for p in profiles)
                raise ProfileError(f"unknown profile {fixed!r} (known: auto, {names})")
            profiles = chosen
        self.profiles = list(profiles)
        self.fixed = fixed not in (None, "auto")
        self.time_path = parse_path(time_field) if time_field else None

    def profile_for(self, event: dict) -> Profile:
        if self.fixed:
            return self.profiles[0]
        for profile in self.profiles:
            if profile.applies_to(event):
                return profile
        return self.profiles[-1]

    def view(self, event: dict) -> "EventView":
        return EventView(event, self.profile_for(event), self)


class EventView:
    """One event seen through its profile; resolved fields are memoised."""

    __slots__ = ("event", "profile", "resolver", "_cache", "_leaves", "_folded", "_everything", "_everything_folded")

    def __init__(self, event: dict, profile: Profile, resolver: FieldResolver):
        self.event = event
        self.profile = profile
        self.resolver = resolver
        self._cache = {}
        self._leaves = {}
        self._folded = {}
        self._everything = self._everything_folded = None

    def get(self, field: str):
        try:
            return self._cache[field]
        except KeyError:
            value = self._cache[field] = self._resolve(field)
            return value

    def leaves(self, field: str) -> tuple:
        """The field's leaf strings (see ``matching.leaves``); several selections test the same field."""
        try:
            return self._leaves[field]
        except KeyError:
            value = self.get(field)
            found = self._leaves[field] = () if value is MISSING else tuple(leaves(value))
            return found

    def folded(self, field: str) -> frozenset:
        """The field's leaf strings, case-folded: what equality tests compare with."""
        try:
            return self._folded[field]
        except KeyError:
            found = self._folded[field] = frozenset(fold(text) for text in self.leaves(field))
            return found

    def everything(self) -> tuple:
        """Every leaf string of the whole event (keyword searches look at all of them)."""
        if self._everything is None:
            self._everything = tuple(leaves(self.event))
        return self._everything

    def everything_folded(self) -> frozenset:
        if self._everything_folded is None:
            self._everything_folded = frozenset(fold(text) for text in self.everything())
        return self._everything_folded

    def where(self, field: str) -> Optional[str]:
        """The dotted path a field resolved from (for ``explain``)."""
        for path in self._paths(field):
            if lookup(self.event, path) is not MISSING:
                return ".".join(str(p) for p in path)
        return None

    def _paths(self, field: str):
        candidates = self.profile.fields.get(field)
        if candidates is not None:
            event_id = None
            for candidate in candidates:
                if candidate.event_ids is not None:
                    if event_id is None:
                        event_id = first_leaf(self.get("EventID")) if field != "EventID" else ""
                    if event_id not in candidate.event_ids:
                        continue
                yield candidate.path
            return
        own = parse_path(field)
        yield own
        for root in self.profile.roots:
            yield root + own

    def _resolve(self, field: str):
        for path in self._paths(field):
            value = lookup(self.event, path)
            if value is not MISSING:
                return value
        return MISSING

    def time(self) -> Optional[int]:
        """Event time in ns: ``--time-field`` if given, else the profile's time paths."""
        paths = (self.resolver.time_path,) if self.resolver.time_path else self.profile.time
        for path in paths:
            value = lookup(self.event, path)
            if value is not MISSING:
                parsed = parse_time(value)
                if parsed is not None:
                    return parsed
        return None
