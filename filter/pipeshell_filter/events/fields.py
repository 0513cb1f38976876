"""Field resolution: where a Sigma field name (``EventID``, ``Payload``) lives in one event.

The same PowerShell event arrives in different JSON shapes depending on the
collector.  Each shape is a *profile*: a declarative table from Sigma field
names to candidate paths, a detector (paths that must exist), fallback roots for
fields the table does not list, and the paths of the event time.  Profiles ship
as YAML in ``profiles/`` (one per collector shape, tried in the order of
``profiles/order.txt``: the first whose detector holds wins, ``flat`` last);
``--field-map FILE`` loads a user's own in the same format, tried first, or one made of a pySigma
processing pipeline (``pipelines``); a table of ours may name one (``pipeline: FILE``) and override it.

Table format (YAML or JSON)::

    name: my-collector
    description: free text           # optional
    detect: [my.event_id]            # the profile applies when all these exist
    product: windows                 # optional: the logsource product of its events
    service: {path: my.log_type}     # optional: its logsource service, as product and category: a name,
    category: proxy                  # or {path: P} / {path: [P, ...]}, read from the event (first present)
    time: ["@timestamp"]             # first present, parsable value wins
    channel: [my.channel]            # optional: the log the event is in, for routing (else the field
                                     # Channel): a rule's Channel may mean another (event 104's cleared log)
    roots: [my.data, my.extra.*]     # unknown field F: F itself, then my.data.F, my.extra.<any>.F
    fields:                          # a listed field is looked up only here
      EventID: [my.event_id]         # first candidate present wins
      ScriptBlockText:
        - my.data.ScriptBlockText
        - {path: my.inserts.2, event_id: [4104]}   # positional, by EventID
      read_time: []                  # never resolves: hidden from rules

``product``, ``service`` and ``category`` are what the events of the shape tell of their
logsource (``sigma.logsource``), for a log with no channel or EventID to tell it by: a proxy's, a
web server's, CloudTrail's.  Several shapes in one stream each tell their own, since the profile is
detected per event.

Paths are dotted; a segment of ASCII digits (``0``, ``12``; not ``01``) indexes a list, and any other
segment that meets a list is looked up in each of its objects (the field is the list of what they hold).
In ``roots`` only, a ``*`` segment stands for every child of the object there
(``Event.UserData.*``: the one element UserData wraps its fields in, whatever its
name); elsewhere it is a plain key.

A field the table does not list is looked up as itself, then under each root.  If
that finds nothing, two fallbacks apply, in this order:

* A name with spaces is also reachable by the same name without them: Defender
  writes ``<Data Name="Threat Name">``, rules ask for ``ThreatName``.  Only keys
  of the event's top level and of its roots count, and an exact name always wins.
* :data:`ALIASES`, the field-name rewrites of SigmaHQ's own regression runner
  (``tests/thor.yml`` ``fieldmappings``): in a Security 4688 event ``Image`` is
  ``NewProcessName``, in a Defender detection ``Signature`` is ``ThreatName``.
  They hold in every profile, for the EventIDs and channels thor.yml gives them
  (an event that tells no channel is taken at its EventID), and only where the
  field itself is absent.

Per profile, each field's lookup plan is worked out once (its parsed path, its
candidates, its aliases); per event, the root objects and the index of names with
spaces are found once, on first need, and each resolved field is memoised.
"""

from __future__ import annotations

import os
from typing import Optional

import attrs

from ..values import MISSING, event_texts, first_leaf, fold, leaves
from ..dirwalk import FileProblem, read_bounded
from ..yamlfile import YamlProblem, expanded_size_problem, load_yaml
from .pipelines import PipelineError, convert, is_pipeline
from .timeparse import parse_time


class ProfileError(ValueError):
    """A field-map table that does not have the documented format."""


ANY = "*"  # a ``roots`` path segment: every child of the object there (see the module docstring)


def _index(segment: str) -> bool:
    """A segment that indexes a list: ASCII digits in canonical form ('²' and '٣' are names,
    and so is '01': list index 1 is written '1', and a key '01' must stay reachable)."""
    return segment.isascii() and segment.isdigit() and (segment == "0" or segment[0] != "0")


def parse_path(text: str) -> tuple:
    if not isinstance(text, str) or not text:
        raise ProfileError(f"a path must be a non-empty string, got {text!r}")
    return tuple(int(p) if _index(p) else p for p in text.split("."))


# SigmaHQ's regression runner rewrites these field names for the logsources thor.yml gives
# them (``fieldmappings`` in tests/thor.yml): (field, field it is in that event, EventIDs,
# channels).  Each is a fact about the Windows event, whatever the collector's shape.
_DEFENDER_DETECTIONS = ("1006", "1007", "1008", "1009", "1010", "1011", "1012", "1017", "1018", "1019",
                        "1115", "1116")
_DEFENDER = ("Microsoft-Windows-Windows Defender/Operational",)
ALIASES = (
    ("Image", "NewProcessName", ("4688",), ("Security",)),  # process_creation_2
    ("ParentImage", "ParentProcessName", ("4688",), ("Security",)),
    ("Signature", "ThreatName", _DEFENDER_DETECTIONS, _DEFENDER),  # windows-defender-antivirus-mapping
    ("Filename", "Path", _DEFENDER_DETECTIONS, _DEFENDER),
)


@attrs.frozen
class Alias:
    """Where a field is absent, look up ``target`` instead, in events with one of these
    EventIDs and (when the event tells its channel) one of these channels (casefolded)."""

    target: str
    event_ids: frozenset
    channels: frozenset


def _compile_aliases(table) -> dict:
    aliases = {}
    for field, target, event_ids, channels in table:
        alias = Alias(target, frozenset(event_ids), frozenset(c.casefold() for c in channels))
        aliases[field] = aliases.get(field, ()) + (alias,)
    targets = {a.target for group in aliases.values() for a in group}
    if targets & set(aliases):  # one step only: an alias never leads to another
        raise ProfileError(f"an alias target is itself aliased: {sorted(targets & set(aliases))}")
    return aliases


_ALIASES = _compile_aliases(ALIASES)


def lookup(event, path: tuple):
    """Follow ``path`` through dicts and lists; MISSING when any step is absent.  A key at a list is
    looked up in each of its elements (``_through_list``)."""
    node = event
    for step in path:
        if type(node) is dict and type(step) is str:  # nearly every step: a key of a parsed object
            node = node.get(step, MISSING)
            if node is MISSING:
                return MISSING
            continue
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
        elif isinstance(node, list):
            return _walk_into_lists(event, path)  # rare: walked again, minding where
        else:
            return MISSING
    return node


def _walk_into_lists(event, path: tuple):
    """``lookup`` of a path that meets a list at a key: from there, each element (``_through_list``)."""
    node = event
    for at, step in enumerate(path):
        if isinstance(node, list) and not isinstance(step, int):
            return _through_list(node, path[at:])
        node = lookup(node, (step,))
        if node is MISSING:
            return MISSING
    return node


def _through_list(items: list, path: tuple):
    """``path`` (a key first) looked up in each element of a list of objects, as Elasticsearch and Splunk read
    a rule's ``requestParameters.containerDefinitions.command`` (CloudTrail's list of container definitions):
    the list of what the elements hold, or MISSING when none holds a value (not null).  A list in the list is
    walked with a stack of its own (JSON may nest lists deeper than Python recurses); each object takes a key
    of ``path`` before any list under it is reached, so ``lookup`` recurses at most once per key."""
    found, stack = [], items[::-1]
    while stack:
        item = stack.pop()
        if item.__class__ is list:
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            value = lookup(item, path)
            if value is not MISSING and value is not None:  # a null there is no value, as in one object
                found.append(value)
    return found if found else MISSING


def _flat_key(path: tuple) -> Optional[str]:
    """A nested path's keys joined, as flattened ECS writes them as one key; None for one key or an index."""
    return ".".join(path) if len(path) > 1 and all(key.__class__ is str for key in path) else None


def lookup_flattened(event: dict, path: tuple):
    """``lookup``, and a nested path the event lacks also as one key, its keys joined: flattened ECS
    (``{"winlog.channel": ...}``) holds there what a profile's time, channel and read paths name."""
    value = lookup(event, path)
    if value is MISSING and len(path) > 1:
        return event.get(_flat_key(path), MISSING)
    return value


@attrs.frozen
class Candidate:
    path: tuple
    event_ids: Optional[frozenset] = None  # only for events with one of these EventIDs
    # a nested path's keys joined, as flattened ECS writes them as one key ({"process.pid": ...})
    flat: Optional[str] = attrs.field(init=False, default=None, eq=False)

    def __attrs_post_init__(self):
        object.__setattr__(self, "flat", _flat_key(self.path))


@attrs.frozen
class Plan:
    """How one field is looked up in events of one profile, worked out once."""

    candidates: Optional[tuple]  # the profile lists the field: only these (Candidate)
    own: Optional[tuple]  # else: the field's own path, from the top and under each root
    bare: bool  # a one-segment name: the names-without-spaces index may hold it
    aliases: tuple  # of Alias, tried when all the above find nothing
    # not listed, one key of an object (not a list index): a key of the top level or of a root
    keyed: bool = attrs.field(init=False, default=False)
    # listed with one path for every event (``EventID: [Event.System.EventID]``): that path
    only: Optional[tuple] = attrs.field(init=False, default=None)

    def __attrs_post_init__(self):
        object.__setattr__(self, "keyed", self.candidates is None and self.bare and isinstance(self.own[0], str))
        if self.candidates is not None and len(self.candidates) == 1 and self.candidates[0].event_ids is None:
            object.__setattr__(self, "only", self.candidates[0].path)


LOGSOURCE_KEYS = ("product", "service", "category")  # the logsource facts a profile may declare
READ = object()  # ``Profile.tag`` of a profile that reads a logsource fact from each event


@attrs.frozen
class Profile:
    name: str
    detect: tuple  # of paths
    fields: dict  # Sigma field name -> tuple of Candidate
    roots: tuple  # of paths (a segment may be ANY)
    time: tuple  # of paths
    source: str = "built-in"
    product: Optional[str] = None  # the logsource product of every event of this shape (windows)
    channel: tuple = ()  # of paths: the event's own log (routing); none: the field Channel
    service: Optional[str] = None  # the logsource service of every event of this shape
    category: Optional[str] = None  # ... and its category
    reads: tuple = ()  # ((fact, (path, ...)), ...): logsource facts read from each event, first path present
    notes: tuple = attrs.field(default=(), eq=False)  # what a pySigma pipeline it came from left out, a line each
    _plans: dict = attrs.field(factory=dict, eq=False, repr=False)  # field -> Plan, filled on first use
    # What the shape's logsource facts add to an event's routing key: the product alone when it declares
    # nothing else (every Windows shape: the key is what it was), the constants, or READ (read per event).
    tag: object = attrs.field(init=False, eq=False, repr=False)
    # each detector path's keys joined as flattened ECS writes them as one key, and the start of a key under it
    _detectors: tuple = attrs.field(init=False, eq=False, repr=False)
    # the roots' keys joined, each with a dot: the start of a flattened key under the root
    flat_roots: tuple = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self):
        flats = [_flat_key(path) or ".".join(map(str, path)) for path in self.detect]
        object.__setattr__(self, "_detectors", tuple((flat, "\n" + flat + ".") for flat in flats))
        object.__setattr__(self, "flat_roots", tuple(
            ".".join(root) + "." for root in self.roots if all(key.__class__ is str and key != ANY for key in root)))
        if self.reads:
            tag = READ
        elif self.service is None and self.category is None:
            tag = self.product
        else:
            tag = ("declared", self.product, self.service, self.category)
        object.__setattr__(self, "tag", tag)

    def declared(self, event: dict) -> tuple:
        """``(product, service, category)`` the shape says of this event: its constants, and what it reads."""
        facts = {"product": self.product, "service": self.service, "category": self.category}
        for fact, paths in self.reads:
            for path in paths:
                text = first_leaf(lookup_flattened(event, path))
                if text is not None and text.strip():
                    facts[fact] = text.strip()
                    break
        return facts["product"], facts["service"], facts["category"]

    def applies_to(self, event: dict) -> bool:
        for path in self.detect:
            if lookup(event, path) is MISSING:
                return False
        return True

    def applies_flattened(self, event: dict, joined: str) -> bool:
        """Whether ``event`` is this shape as flattened ECS writes it: each detector path's keys joined
        into one key (``winlog.event_id``), or into the start of keys (``powershell.file.script_block_text``
        for ``powershell``); ``joined``: the event's keys, each after a newline (searched in C, at no
        cost per key; a key holding a newline itself may at worst pick this shape)."""
        if not self.detect:
            return False
        for flat, start in self._detectors:
            if flat not in event and start not in joined:
                return False
        return True

    def plan(self, field: str) -> Plan:
        try:
            return self._plans[field]
        except KeyError:
            pass
        candidates = self.fields.get(field)
        own = None if candidates is not None else parse_path(field)
        plan = Plan(candidates, own, own is not None and len(own) == 1,
                    _ALIASES.get(field, ()))
        self._plans[field] = plan
        return plan


def profile_from_table(table, source: str, notes: tuple = ()) -> Profile:
    """Build a profile from its declarative table (see the module docstring)."""
    if not isinstance(table, dict):
        raise ProfileError(f"{source}: a field map must be a mapping")
    unknown = set(table) - {"name", "detect", "time", "roots", "fields", "description", "channel", *LOGSOURCE_KEYS}
    if unknown:
        raise ProfileError(f"{source}: unknown key(s) {', '.join(sorted(map(repr, unknown)))[:200]}")
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{source}: 'name' must be a non-empty string")

    def path(text, where: str) -> tuple:
        if not isinstance(text, str) or not text:  # not parse_path's error: it would quote the whole value
            got = "''" if text == "" else f"a {type(text).__name__}"
            raise ProfileError(f"{source}: {where}: a path must be a non-empty string, got {got}")
        return parse_path(text)

    def paths(key):
        value = table.get(key, [])
        if not isinstance(value, list):
            raise ProfileError(f"{source}: '{key}' must be a list of paths")
        return tuple(path(v, repr(key)) for v in value)

    def event_ids(ids, field: str) -> frozenset:
        ids = ids if isinstance(ids, list) else [ids]
        for event_id in ids:  # as an EventID reads (``first_leaf``): any other value would match no event
            if isinstance(event_id, bool) or not isinstance(event_id, (int, str)) or event_id == "":
                raise ProfileError(f"{source}: field {field!r}: an event_id is a number or a text, "
                                   f"not {type(event_id).__name__}")
        return frozenset(str(i) for i in ids)

    fields = {}
    raw_fields = table.get("fields", {})
    if not isinstance(raw_fields, dict):
        raise ProfileError(f"{source}: 'fields' must map field names to lists of paths")
    for field, candidates in raw_fields.items():
        if not isinstance(field, str) or not field:
            raise ProfileError(f"{source}: field name {str(field)[:80]!r} must be a non-empty string")
        if isinstance(candidates, (str, dict)):
            candidates = [candidates]
        if not isinstance(candidates, list):
            raise ProfileError(f"{source}: field {field!r} must list its paths")
        compiled = []
        for candidate in candidates:
            if isinstance(candidate, str):
                compiled.append(Candidate(path(candidate, repr(field))))
            elif isinstance(candidate, dict) and set(candidate) <= {"path", "event_id"} and "path" in candidate:
                ids = candidate.get("event_id")
                if ids is not None:
                    if field == "EventID":  # it would need the EventID to read the EventID: it never resolved
                        raise ProfileError(f"{source}: field 'EventID': its candidates cannot be for some EventIDs "
                                           "only (event_id); list its paths alone")
                    ids = event_ids(ids, field)
                compiled.append(Candidate(path(candidate["path"], repr(field)), ids))
            else:
                raise ProfileError(f"{source}: field {field!r}: a candidate is a path or {{path, event_id}}")
        fields[str(field)] = tuple(compiled)
    facts, reads = {}, []
    for fact in LOGSOURCE_KEYS:
        value = table.get(fact)
        if value is None:
            continue
        if isinstance(value, str) and value.strip() and "\n" not in value:
            facts[fact] = value.strip()
            continue
        read = value.get("path") if isinstance(value, dict) and set(value) == {"path"} else None
        read = [read] if isinstance(read, str) else read
        if not isinstance(read, list) or not read:
            raise ProfileError(f"{source}: '{fact}' must be a name (e.g. {fact}: {_EXAMPLES[fact]}) or "
                               f"{{path: PATH}} / {{path: [PATH, ...]}} to read it from the event")
        reads.append((fact, tuple(path(p, repr(fact)) for p in read)))
    return Profile(name, paths("detect"), fields, paths("roots"), paths("time"), source, facts.get("product"),
                   paths("channel"), facts.get("service"), facts.get("category"), tuple(reads), tuple(notes))


_EXAMPLES = {"product": "aws", "service": "cloudtrail", "category": "proxy"}  # for the error message


# A field map's size once its YAML aliases are expanded (``yamlfile.expanded_size_problem``): a pySigma
# pipeline of thousands of mappings is far below these.
MAX_MAP_NODES = 200_000
MAX_MAP_CHARS = 16 << 20
MAX_MAP_NESTING = 32


def _read_table(path: str):
    try:
        data = read_bounded(path, "field map")
    except FileProblem as problem:
        raise ProfileError(str(problem)) from None
    try:
        table = load_yaml(data.decode("utf-8"))  # a field listed twice is an error
    except UnicodeDecodeError as error:
        raise ProfileError(f"field map {path} is not UTF-8 (byte {error.start})") from None
    except YamlProblem as problem:
        raise ProfileError(f"field map {path} is not valid YAML/JSON{problem}") from None
    problem = expanded_size_problem(table, MAX_MAP_NODES, MAX_MAP_CHARS, MAX_MAP_NESTING)
    if problem is not None:
        raise ProfileError(f"field map {path} holds {problem}")
    return table


def load_profile_file(path: str) -> Profile:
    """A field map, in our format or a pySigma pipeline's (``pipelines``); ours may name a pipeline
    (``pipeline: FILE``, beside it) and give what it lacks or gets wrong: each key given replaces the
    pipeline's, and each field listed its paths."""
    table = _read_table(path)
    try:
        if is_pipeline(table):
            conversion = convert(table, path)
            return profile_from_table(conversion.table, path, tuple(conversion.notes))
        if not isinstance(table, dict) or "pipeline" not in table:
            return profile_from_table(table, path)
        named = table["pipeline"]
        if not isinstance(named, str) or not named:
            raise ProfileError(f"{path}: 'pipeline' must name a pySigma pipeline file")
        pipeline_path = os.path.join(os.path.dirname(path), named)
        pipeline = _read_table(pipeline_path)
        if not is_pipeline(pipeline):
            raise ProfileError(f"{path}: {pipeline_path} is not a pySigma pipeline (it has no 'transformations')")
        conversion = convert(pipeline, pipeline_path)
    except PipelineError as error:
        raise ProfileError(str(error)) from None
    merged = dict(conversion.table)
    own = {key: value for key, value in table.items() if key != "pipeline"}
    if isinstance(own.get("fields"), dict):
        own["fields"] = {**merged["fields"], **own["fields"]}
    merged.update(own)
    return profile_from_table(merged, path, tuple(conversion.notes))


_PROFILE_DIR = os.path.join(os.path.dirname(__file__), "profiles")


def _builtin(profile: Profile) -> bool:
    return os.path.dirname(profile.source) == _PROFILE_DIR


def builtin_profiles() -> list:
    """The shipped profiles, most specific first (``flat`` last: it applies to anything)."""
    with open(os.path.join(_PROFILE_DIR, "order.txt"), encoding="utf-8") as handle:
        names = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    return [load_profile_file(os.path.join(_PROFILE_DIR, f"{name}.yml")) for name in names]


CARRIED_PROFILE = "evtx"  # the shape of an event read from its XML (``xml_event.parse_event_xml``)


class FramedEvent(dict):
    """An event that came in a Fluent Bit frame (``io.frames``), with the frame's time (ns): the event's time
    where it has none of its own by its profile (``FieldResolver.time``).  Here, not with the frames, so that
    the event an XML in it holds (``xml_event.event_to_read``) keeps that time too."""

    __slots__ = ("frame_time",)

    def __init__(self, event: dict, frame_time: int):
        super().__init__(event)
        self.frame_time = frame_time


FLAT_MEMO_KEYS = 64  # events of up to this many keys have their flattened shape remembered by their keys,
FLAT_MEMO_SIZE = 1024  # up to this many sets of keys: about 5 MB at most


class FieldResolver:
    """Picks a profile per event and resolves Sigma field names through it."""

    def __init__(self, profiles: list, fixed: Optional[str] = None, time_field: Optional[str] = None,
                 logsource: Optional[tuple] = None):
        every = list(profiles)
        # ``--logsource``: (product, service, category) of every event that tells none of its own
        self.logsource = logsource
        if fixed not in (None, "auto"):
            chosen = [p for p in profiles if p.name == fixed]
            if not chosen:
                names = ", ".join(p.name for p in profiles)
                raise ProfileError(f"unknown profile {fixed!r} (known: auto, {names})")
            if len(chosen) > 1:  # the first would win, in silence: a field map named as a built-in or another map
                where = " and ".join("the built-in one" if _builtin(p) else p.source for p in chosen)
                raise ProfileError(f"--profile {fixed}: several profiles have this name ({where}): "
                                   "give the field map another 'name'")
            profiles = chosen
        self.profiles = list(profiles)
        self.fixed = fixed not in (None, "auto")
        self._flattened_shapes = {}  # the top-level keys of a small event -> its flattened shape's profile (or None)
        self.time_path = parse_path(time_field) if time_field else None
        # What reads an event taken from the XML a record carries (``xml_event``): it is in the evtx shape,
        # at its own TimeCreated, whatever the records' shape, which ``--profile`` and ``--time-field`` say.
        self.carried = self
        evtx = [p for p in every if p.name == CARRIED_PROFILE and _builtin(p)]  # not a field map of that name
        if evtx and (self.time_path is not None or self.fixed and self.profiles != evtx):
            self.carried = FieldResolver(evtx, CARRIED_PROFILE, logsource=logsource)

    def reading(self, carried: bool) -> "FieldResolver":
        """What reads an event: ``carried`` (taken from the XML its record carries) is ``self.carried``'s."""
        return self.carried if carried else self

    def profile_for(self, event: dict) -> Profile:
        if self.fixed:
            return self.profiles[0]
        for profile in self.profiles:
            if profile.applies_to(event):
                if not profile.detect and "." in "".join(event):  # the catch-all: a shape flattened?
                    return self._flattened_shape(event) or profile
                return profile
        return self.profiles[-1]

    def _flattened_shape(self, event: dict) -> Optional[Profile]:
        """The profile whose shape, flattened, the event is (or None); remembered per set of keys, which
        a stream repeats, for events of a few keys only: a memo of big ones would hold their keys (up to
        hundreds of MB when they differ from event to event), and they are told apart in C anyway."""
        keys = tuple(event) if len(event) <= FLAT_MEMO_KEYS else None
        found = self._flattened_shapes.get(keys, _UNSET) if keys is not None else _UNSET
        if found is _UNSET:
            joined = "\n" + "\n".join(event)
            found = next((shape for shape in self.profiles if shape.applies_flattened(event, joined)), None)
            if keys is not None:
                if len(self._flattened_shapes) >= FLAT_MEMO_SIZE:
                    self._flattened_shapes.clear()
                self._flattened_shapes[keys] = found
        return found

    def view(self, event: dict) -> "EventView":
        return EventView(event, self.profile_for(event), self)

    def own_event(self, record: dict) -> bool:
        """Whether a record is an event itself, naming an EventID of its own (NXLog's, a flat record, any
        collector's): its texts are then its own data, which an attacker writes (a command line, a script
        block ending in an event's XML), never another event's XML to read in its place (``xml_event``)."""
        return self.view(record).get("EventID") is not MISSING

    def time(self, event: dict, profile: Optional[Profile] = None) -> Optional[int]:
        """Event time in ns: ``--time-field`` if given, else the time paths of the event's profile, else the
        time of the frame the event came in (``io.frames``).  Needs no ``EventView``: the Fluent Bit modes
        ask it of every line."""
        paths = (self.time_path,) if self.time_path else (profile or self.profile_for(event)).time
        for path in paths:
            value = lookup_flattened(event, path)
            if value is not MISSING:
                parsed = parse_time(value)
                if parsed is not None:
                    return parsed
        # none of its own: that of the Fluent Bit frame it came in, if it did (``FramedEvent``)
        return getattr(event, "frame_time", None)


_UNSET = object()  # not looked up yet (MISSING is a cached answer: the event has no such field)


class EventView:
    """One event seen through its profile; resolved fields are memoised."""

    __slots__ = ("event", "profile", "resolver", "_cache", "_leaves", "_folded", "_everything", "_everything_folded",
                 "_roots", "_spaced", "_places", "_flat", "_has_dots", "_channel")

    def __init__(self, event: dict, profile: Profile, resolver: FieldResolver):
        self.event = event
        self.profile = profile
        self.resolver = resolver
        self._cache = {}
        self._leaves = {}
        self._folded = {}
        self._everything = self._everything_folded = None
        self._roots = self._spaced = self._places = self._flat = self._has_dots = None
        self._channel = _UNSET

    def log_channel(self):
        """The log the event is in (``Security``), for routing: the profile's ``channel`` paths, else
        the field Channel.  Not always the rule field Channel: in event 104 that is the log cleared."""
        value = self._channel
        if value is _UNSET:
            value = MISSING
            for path in self.profile.channel:
                value = lookup_flattened(self.event, path)
                if value is not MISSING:
                    break
            if not self.profile.channel:
                value = self.get("Channel")
            self._channel = value
        return value

    # The caches are read with ``dict.get``: the first look-up of each field of each event
    # raised KeyError before, which cost more than the look-up.
    def get(self, field: str):
        value = self._cache.get(field, _UNSET)
        if value is _UNSET:
            plan = self.profile.plan(field)
            if plan.keyed:  # most fields: one key of the top level or of a root
                value = self._flattened().get(field, _UNSET)
            elif plan.only is not None:  # else ``_locate`` finds it absent, and tries the aliases
                value = lookup(self.event, plan.only)
                if value is MISSING:
                    value = _UNSET
            if value is _UNSET:
                found = self._locate(field, True)
                value = MISSING if found is None else found[1]
            self._cache[field] = value
        return value

    def leaves(self, field: str) -> tuple:
        """The field's leaf strings (see ``values.leaves``); several selections test the same field."""
        found = self._leaves.get(field)
        if found is None:
            value = self.get(field)
            if value.__class__ is str:  # most fields: one string, no walk
                found = (value,)
            else:
                found = () if value is MISSING else tuple(leaves(value))
            self._leaves[field] = found
        return found

    def folded(self, field: str) -> frozenset:
        """The field's leaf strings, case-folded: what equality tests compare with."""
        found = self._folded.get(field)
        if found is None:
            texts = self.leaves(field)
            found = self._folded[field] = \
                frozenset((texts[0].casefold(),)) if len(texts) == 1 else frozenset(map(fold, texts))
        return found

    def everything(self) -> tuple:
        """Every leaf string of the whole event, its XML attributes' too (``values.event_texts``): keyword
        searches look at all of them."""
        if self._everything is None:
            self._everything = tuple(event_texts(self.event))
        return self._everything

    def everything_folded(self) -> frozenset:
        if self._everything_folded is None:
            self._everything_folded = frozenset(fold(text) for text in self.everything())
        return self._everything_folded

    def where(self, field: str) -> Optional[str]:
        """The dotted path a field resolved from (for ``explain``)."""
        found = self._locate(field, True)
        return None if found is None else ".".join(str(p) for p in found[0])

    def _locate(self, field: str, aliased: bool):
        """``(path, value)`` of a field in this event, or None (see the module docstring)."""
        plan = self.profile.plan(field)
        if plan.candidates is not None:
            event_id = None
            for candidate in plan.candidates:
                if candidate.event_ids is not None:
                    if event_id is None:
                        event_id = first_leaf(self.get("EventID")) if field != "EventID" else ""
                    if event_id not in candidate.event_ids:
                        continue
                value = lookup(self.event, candidate.path)
                if value is not MISSING:
                    return candidate.path, value
                if candidate.flat is not None and self._dotted():
                    value = self._flattened().get(candidate.flat, MISSING)
                    if value is MISSING:  # an object flattened: its keys gathered again
                        value = self._gathered(candidate.flat + ".")
                    if value is not MISSING:
                        return (candidate.flat,), value
        elif plan.keyed:
            if field in self._flattened():  # then the first object holding it names the path
                for path, node in self._objects():
                    if field in node:
                        return path + plan.own, node[field]
            found = self._spaced_names().get(field) or self._under_flat_roots(field)
            if found is not None:
                return found
        else:
            own = plan.own
            value = lookup(self.event, own)
            if value is not MISSING:
                return own, value
            for path, node in self._root_nodes():
                value = lookup(node, own)
                if value is not MISSING:
                    return path + own, value
            if len(own) > 1 and field in self._flattened():  # flattened ECS: {"process.name": ...}
                for path, node in self._objects():
                    if field in node:
                        return path + (field,), node[field]
            found = self._under_flat_roots(field)
            if found is not None:
                return found
            if plan.bare:
                found = self._spaced_names().get(field)
                if found is not None:
                    return found
        if aliased and plan.aliases:
            event_id = first_leaf(self.get("EventID"))
            channel = None
            for alias in plan.aliases:
                if event_id not in alias.event_ids:
                    continue
                if channel is None:
                    channel = first_leaf(self.log_channel())
                    channel = "" if channel is None else channel.casefold()
                if channel and channel not in alias.channels:
                    continue
                found = self._locate(alias.target, False)
                if found is not None:
                    return found
        return None

    def _root_nodes(self) -> list:
        """``(path, node)`` of each of the profile's roots present in this event, ``*`` expanded."""
        if self._roots is None:
            event, nodes = self.event, []
            for root in self.profile.roots:
                node = event
                for step in root:  # keys of objects, inline; anything else as ``_expand`` finds it
                    if node.__class__ is dict and step.__class__ is str and step != ANY:
                        node = node.get(step, MISSING)
                        if node is MISSING:
                            break
                    else:
                        nodes.extend(_expand(event, root))
                        break
                else:
                    nodes.append((root, node))
            self._roots = nodes
        return self._roots

    def _objects(self) -> list:
        """``(path, object)`` of the top level and of each root that is an object, in lookup order."""
        if self._places is None:
            self._places = [((), self.event)] + [place for place in self._root_nodes() if isinstance(place[1], dict)]
        return self._places

    def _flattened(self) -> dict:
        """Key -> value of the first object of ``_objects`` holding it: a one-segment field is then
        one dict look-up, not a walk of every root.  Merged by ``dict.update``, later objects
        first, so earlier ones win; made once per event."""
        if self._flat is None:
            flat = {}
            for _, node in reversed(self._objects()):
                flat.update(node)
            self._flat = flat
        return self._flat

    def _under_flat_roots(self, name: str) -> Optional[tuple]:
        """``(path, value)`` of ``name`` under a root whose keys flattened ECS joined into the event's
        own (``{"winlog.event_data.Image": ...}``), or None."""
        if self.profile.flat_roots and self._dotted():
            event = self.event
            for prefix in self.profile.flat_roots:
                key = prefix + name
                if key in event:
                    return (key,), event[key]
        return None

    def _gathered(self, prefix: str):
        """The object flattened ECS spread over the event's keys starting with ``prefix``, or MISSING."""
        found = {key[len(prefix):]: value for key, value in self.event.items() if key.startswith(prefix)}
        return found or MISSING

    def _dotted(self) -> bool:
        """Whether a key of the top level or of a root holds a dot (flattened ECS): most events have none."""
        if self._has_dots is None:
            self._has_dots = "." in "/".join(self._flattened())
        return self._has_dots

    def _spaced_names(self) -> dict:
        """Name without spaces -> ``(path, value)`` for every key with a space at the top level
        or in a root object; the first in lookup order wins."""
        if self._spaced is None:
            spaced = {}
            if " " in "/".join(self._flattened()):  # most events have none: one C call on every key
                for path, node in self._objects():
                    if " " in "/".join(node):
                        for key, value in node.items():
                            if " " in key:
                                spaced.setdefault(key.replace(" ", ""), (path + (key,), value))
            self._spaced = spaced
        return self._spaced

    def time(self) -> Optional[int]:
        """Event time in ns (``FieldResolver.time``)."""
        return self.resolver.time(self.event, self.profile)


def _expand(node, root: tuple, prefix: tuple = ()) -> list:
    """``(concrete path, node)`` for each place ``root`` reaches from ``node``, an ``ANY`` segment
    taking every child of the object there (but its ``#attributes``, which are metadata)."""
    if ANY not in root:
        found = lookup(node, root)
        return [] if found is MISSING else [(prefix + root, found)]
    at = root.index(ANY)
    parent = lookup(node, root[:at])
    if not isinstance(parent, dict):
        return []
    places = []
    for key, child in parent.items():
        if key != "#attributes":
            places.extend(_expand(child, root[at + 1:], prefix + root[:at] + (key,)))
    return places
