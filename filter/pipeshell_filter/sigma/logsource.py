"""Which events a Sigma rule's ``logsource`` covers.

Why: a rule's detection is written for the events of one log source, and is
often meaningless elsewhere.  Matched against every event, an AWS rule with
``errorCode: null`` fires on each Windows event (none has an errorCode).  This
module turns a rule's ``logsource`` (product / category / service) into a
:class:`LogsourceCheck` that says whether an event can belong to it, from what
the event tells about itself (:class:`EventFacts`: product, channel, EventID)
and the package's own table (``logsources.yml``, facts from SigmaHQ's
``tests/thor.yml``).

Semantics:

* Names compare case-insensitively.  ``product``, ``category`` and ``service``
  may each be a string or a list of strings; a list means any of them.  Other
  keys (``definition``, custom ones) are ignored.
* product: the event's product must be one of the rule's.  An event that does
  not name its product gets the one the table gives its channel (every channel
  of a Windows service is ``windows``); otherwise its product is unknown.  (The
  detect stage names an event's product from its channel too, before its shape's:
  Sysmon for Linux writes Windows' event XML, in a channel the table gives to linux.)
* service: the event's channel must be one of the service's channels.
* category: the event must fit one of the category's alternatives: its EventID
  is in the alternative's EventIDs and, when the alternative names a service,
  its channel is one of that service's channels.  With both category and
  service, both must hold.
* A fact the check needs that the event does not tell (None) is decided by the
  policy ``unknown``: ``"match"`` takes it as satisfied (check only what the
  event tells), ``"skip"`` as not satisfied.  Known facts are always checked,
  so an event that tells product, channel and EventID gets the same verdict
  under both policies.
* A category or service the table does not map for a product it knows
  (``windows``; in the SigmaHQ rule set: categories file_access and file_rename,
  ETW-only sources without a channel: 15 rules) falls back to the product alone: any
  Windows event may apply, and the detection decides.  Only the event's facts
  are subject to the policy, never the table's gaps.  The same holds for linux's
  services (auditd, ...) and for any category or service of a product the table
  does not know (aws, ...).
* A rule without a product takes a category or service from the table when the
  table lists it (``antivirus``: thor.yml maps it with no product condition).
  One the table does not list (proxy, webserver, dns, firewall, ...) is taken
  as the logsource of no product the table knows: such a rule does not apply to
  Windows events, and applies to events of other or unknown products (the
  product fact, when unknown, under the policy).  Of a product the table knows
  some logs of only (``partial``: linux, Sysmon for Linux's), only the events
  of those logs (their channel known) are kept from it: an nginx log on a
  Linux host is a linux event, and SigmaHQ's webserver rules apply to it.
* An event that declares a service the table knows (for its product; for any
  product when it tells none) and no category is judged as an event in that
  service's channel (any of them) would be, with its own EventID: a declared
  ``service: sysmon`` keeps the categories' EventIDs (Sysmon 1 is a
  process_creation, Sysmon 3 is not), under both policies.  Its own channel is
  not read.
* Any other event that declares a service or a category (``EventFacts.service`` /
  ``category``: its field map says so, or ``--logsource``) is judged on its
  declared facts alone: each of product, service and category the rule names
  must be the event's (any entry of a list), and one the event does not tell is
  decided by the policy.  Its channel and EventID are not read then: a declared
  ``category: proxy`` is what the event is, and a table of Windows EventIDs has
  nothing to add (nor to take away: ``product: windows, category:
  process_creation`` declared for an EDR's records lets SigmaHQ's rules apply).
  An event that declares neither is judged by the table, as above.
* A logsource with none of product, category, service constrains nothing:
  :func:`compile_logsource` returns None and the rule applies to every event.

Cost: :meth:`LogsourceCheck.verdict` and :meth:`LogsourceCheck.applies` run
per event per candidate rule.  Everything is casefolded and turned into
frozensets at compile time; :class:`EventFacts` folds its values once, so one
facts object serves every rule an event is checked against.  ``applies`` is a
few set lookups; ``verdict`` also remembers its answers per (facts, policy),
since a stream repeats a small number of channel/EventID pairs and the reason
text is the costly part.
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import attrs
import yaml

from .rule import RuleError

TABLE_PATH = os.path.join(os.path.dirname(__file__), "logsources.yml")

_KEYS = ("product", "category", "service")


def _event_id_text(value) -> Optional[str]:
    """The EventID as canonical text: ``4104``, ``"4104"`` and ``" 04104"`` all give ``"4104"``."""
    if value is None:
        return None
    text = value if value.__class__ is str else str(value)
    if text.isascii() and text.isdigit() and text[0] != "0":
        return text
    text = text.strip()
    if text.isascii() and text.isdigit():
        text = str(int(text))
    return text or None


def _folded(value) -> Optional[str]:
    if value is None:
        return None
    text = str(value).casefold()
    return text or None


@attrs.frozen
class EventFacts:
    """What an event tells about its own logsource; None = cannot tell.

    ``service`` and ``category`` are never inferred: only a field map or ``--logsource`` declares them
    (a proxy's or a web server's log has no channel or EventID to tell them by)."""

    product: Optional[str] = None
    channel: Optional[str] = None
    event_id: Optional[str] = None  # the EventID as text, e.g. "4104"
    service: Optional[str] = None
    category: Optional[str] = None
    origin: Optional[str] = attrs.field(default=None, eq=False)  # who declared them ("profile X"), for explain
    # (product, channel, EventID) casefolded/canonical, computed once per event.
    _key: tuple = attrs.field(init=False, repr=False, eq=False)
    # (service, category) casefolded, or None when the event declares neither (then judged by the table)
    _declared: Optional[tuple] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self):
        object.__setattr__(self, "_key", (_folded(self.product), _folded(self.channel), _event_id_text(self.event_id)))
        declared = (_folded(self.service), _folded(self.category))
        object.__setattr__(self, "_declared", None if declared == (None, None) else declared)


def _skips(unknown: str) -> bool:
    if unknown == "match":
        return False
    if unknown == "skip":
        return True
    raise ValueError(f"unknown-fact policy must be 'match' or 'skip', not {unknown!r}")


# --------------------------------------------------------------------------- the table


class LogsourceTable:
    """Products -> categories (EventID/service alternatives) and services (channels)."""

    def __init__(self, data, source: str = "<logsource table>"):
        def bad(what: str):
            return ValueError(f"logsource table {source}: {what}")

        if not isinstance(data, dict):
            raise bad("must be a mapping of products")
        self._categories: dict = {}  # product -> category -> ((event_ids, service|None), ...)
        self._services: dict = {}  # product -> service -> (channel display names, ...)
        self._channel_product: dict = {}  # casefolded channel -> product
        self._product_names: dict = {}  # casefolded product -> name as written
        self._partial: set = set()  # casefolded products the table knows only some logs of (``partial: true``)
        # (casefolded product or None, casefolded service) -> ((casefolded channel, as written), ...): where an
        # event that declares that service (and no category) is taken to be; None: of any product that has it
        self._declared_channels: dict = {}
        for product, body in data.items():
            if not isinstance(product, str) or not isinstance(body, dict):
                raise bad(f"product {product!r} must map to {{categories, services}}")
            key = product.casefold()
            self._product_names[key] = product
            if body.get("partial", False) not in (True, False):
                raise bad(f"{product} partial must be true or false")
            if body.get("partial"):
                self._partial.add(key)
            services = {}
            for service, channels in (body.get("services") or {}).items():
                if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
                    raise bad(f"{product} service {service!r} must list channel names")
                services[str(service).casefold()] = tuple(channels)
                listed = tuple((c.casefold(), c) for c in channels)
                self._declared_channels[key, str(service).casefold()] = listed
                self._declared_channels[None, str(service).casefold()] = \
                    self._declared_channels.get((None, str(service).casefold()), ()) + listed
                for channel in channels:
                    owner = self._channel_product.setdefault(channel.casefold(), key)
                    if owner != key:
                        raise bad(f"channel {channel!r} is listed under {owner} and {product}")
            categories = {}
            for category, alternatives in (body.get("categories") or {}).items():
                if not isinstance(alternatives, list) or not alternatives:
                    raise bad(f"{product} category {category!r} must list alternatives")
                parsed = []
                for alternative in alternatives:
                    if not isinstance(alternative, dict) or not isinstance(alternative.get("event_ids"), list):
                        raise bad(f"{product} category {category!r}: an alternative needs event_ids")
                    ids = frozenset(_event_id_text(e) for e in alternative["event_ids"])
                    if not ids or None in ids:
                        raise bad(f"{product} category {category!r}: empty EventID")
                    service = _folded(alternative.get("service"))
                    if service is not None and service not in services:
                        raise bad(f"{product} category {category!r}: unknown service {alternative['service']!r}")
                    parsed.append((ids, service))
                categories[str(category).casefold()] = tuple(parsed)
            self._categories[key] = categories
            self._services[key] = services

    @classmethod
    def load(cls, path: str) -> "LogsourceTable":
        with open(path, encoding="utf-8") as handle:
            return cls(yaml.safe_load(handle), path)

    @classmethod
    def builtin(cls) -> "LogsourceTable":
        """The table shipped with the package (loaded once per process)."""
        return _builtin_table()

    @property
    def products(self) -> frozenset:
        """The products the table knows, casefolded."""
        return frozenset(self._categories)

    @property
    def partial(self) -> frozenset:
        """The products (casefolded) the table knows only some logs of: linux, Sysmon for Linux's alone."""
        return frozenset(self._partial)

    def all_channels(self, product: str) -> tuple:
        """Every channel the table lists for ``product`` (as written)."""
        return tuple(dict.fromkeys(c for cs in self._services.get(_folded(product), {}).values() for c in cs))

    def declared_channels(self, product: Optional[str], service: str) -> tuple:
        """The channels (as written) an event that declares ``service`` and no category is taken to be in:
        the service's of ``product``, of every product that has it when None; () when the table has none."""
        return tuple(name for _, name in self._declared_channels.get((_folded(product), _folded(service)), ()))

    def product_of_channel(self, channel: str) -> Optional[str]:
        """The product whose service lists ``channel`` (e.g. ``Security`` -> ``windows``), or None."""
        if not channel:
            return None
        key = self._channel_product.get(channel.casefold())
        return self._product_names[key] if key is not None else None

    def knows(self, product: str, category: Optional[str] = None, service: Optional[str] = None) -> bool:
        """Whether the table maps ``product`` and (when given) its ``category`` and ``service``."""
        key = _folded(product)
        if key not in self._categories:
            return False
        if category is not None and category.casefold() not in self._categories[key]:
            return False
        return service is None or service.casefold() in self._services[key]

    def alternatives(self, product: str, category: str) -> Optional[tuple]:
        """``((event_ids, service or None), ...)`` of a category, or None when not mapped."""
        return self._categories.get(_folded(product), {}).get(category.casefold())

    def channels(self, product: str, service: str) -> Optional[tuple]:
        """The channels of a service (as written in the table), or None when not mapped."""
        return self._services.get(_folded(product), {}).get(service.casefold())

    def categories(self, product: str) -> list:
        return sorted(self._categories.get(_folded(product), {}))

    def services(self, product: str) -> list:
        return sorted(self._services.get(_folded(product), {}))


@functools.lru_cache(maxsize=1)
def _builtin_table() -> LogsourceTable:
    return LogsourceTable.load(TABLE_PATH)


# --------------------------------------------------------------------------- compiled checks


@attrs.frozen
class _Spec:
    """One way for an event to belong to the logsource: every set given must hold (None = any)."""

    products: Optional[frozenset] = None  # casefolded
    not_products: frozenset = frozenset()
    event_ids: Optional[frozenset] = None
    channels: Optional[frozenset] = None  # casefolded
    channel_names: tuple = ()  # the same channels as written, for messages
    # Channels (casefolded) an event must not be in (a known channel only: one not told is none of them)
    not_channels: frozenset = frozenset()
    not_channel_names: tuple = ()

    def constrains_product(self) -> bool:
        return self.products is not None or bool(self.not_products)

    def covers(self, other: "_Spec") -> bool:
        return (_superset(self.products, other.products) and self.not_products <= other.not_products
                and _superset(self.event_ids, other.event_ids) and _superset(self.channels, other.channels)
                and self.not_channels <= other.not_channels)


def _superset(mine: Optional[frozenset], theirs: Optional[frozenset]) -> bool:
    return mine is None or (theirs is not None and mine >= theirs)


def _meet(mine: Optional[frozenset], theirs: Optional[frozenset]) -> Optional[frozenset]:
    if mine is None:
        return theirs
    if theirs is None:
        return mine
    return mine & theirs


def _combine(a: _Spec, b: _Spec) -> Optional[_Spec]:
    """Both specs at once, or None when no event can satisfy both."""
    products = _meet(a.products, b.products)
    not_products = a.not_products | b.not_products
    if products is not None:
        products -= not_products
    event_ids = _meet(a.event_ids, b.event_ids)
    channels = _meet(a.channels, b.channels)
    not_channels = a.not_channels | b.not_channels
    if channels is not None:
        channels -= not_channels
        not_channels = frozenset()
    if any(s is not None and not s for s in (products, event_ids, channels)):
        return None
    names = tuple(n for n in dict.fromkeys(a.channel_names + b.channel_names)
                  if channels is not None and n.casefold() in channels)
    not_names = tuple(n for n in dict.fromkeys(a.not_channel_names + b.not_channel_names)
                      if n.casefold() in not_channels)
    return _Spec(products, not_products, event_ids, channels, names, not_channels, not_names)


def _simplify(specs: list) -> tuple:
    # Alternatives that differ only in their EventIDs merge (ps_module + ps_script: 4103/4104 on the
    # PowerShell channels); then any spec another one covers goes.
    merged: dict = {}
    for spec in specs:
        key = (spec.products, spec.not_products, spec.channels, spec.not_channels)
        if key in merged:
            old = merged[key]
            ids = None if old.event_ids is None or spec.event_ids is None else old.event_ids | spec.event_ids
            merged[key] = attrs.evolve(old, event_ids=ids)
        else:
            merged[key] = spec
    unique = list(merged.values())
    return tuple(s for i, s in enumerate(unique)
                 if not any(j != i and o.covers(s) and (o != s or j < i) for j, o in enumerate(unique)))


def _sorted_ids(ids) -> list:
    return sorted(ids, key=lambda e: (0, int(e)) if e.isdigit() else (1, e))


def _or(values) -> str:
    values = list(values)
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


def _need(spec: _Spec, names: dict) -> str:
    parts = []
    if spec.products is not None:
        parts.append("product " + _or(sorted(names.get(p, p) for p in spec.products)))
    elif spec.not_products:
        parts.append("a product other than " + _or(sorted(names.get(p, p) for p in spec.not_products)))
    if spec.event_ids is not None:
        parts.append("EventID " + _or(_sorted_ids(spec.event_ids)))
    if spec.channels is not None:
        parts.append("channel " + _or(spec.channel_names))
    if spec.not_channels:
        parts.append("a channel other than " + _or(spec.not_channel_names))
    return ", ".join(parts) or "any event"


def _text(values: tuple) -> str:
    return values[0] if len(values) == 1 else "[" + ", ".join(values) + "]"


class LogsourceCheck:
    """One rule's logsource, compiled against a table: which events it applies to."""

    __slots__ = ("_subjects", "_notes", "_specs", "_rows", "_needs", "_channel_product", "_product_names",
                 "_channels", "_event_ids", "_describe", "_verdicts", "_wants", "_declared_channels")

    # verdict() remembers this many (facts, policy) answers per rule: events repeat a few channel/EventID pairs.
    _VERDICT_CACHE = 512

    def __init__(self, fields: dict, specs: tuple, notes: tuple, table: LogsourceTable):
        # fields: key -> tuple of names as written.  The subject of a message is the most specific part.
        self._subjects = {key: f"{key} {_text(fields[key])}" for key in _KEYS if key in fields}
        # What an event that declares its facts is held to: per key, the rule's names casefolded (None: any).
        self._wants = tuple((key, frozenset(n.casefold() for n in fields[key]) if key in fields else None)
                            for key in _KEYS)
        self._notes = notes
        self._specs = specs
        # Per spec: (products or None, excluded products or None, EventIDs or None, channels or None,
        # excluded channels or None).
        self._rows = tuple((s.products, None if s.products is not None or not s.not_products else s.not_products,
                            s.event_ids, s.channels, s.not_channels or None) for s in specs)
        self._verdicts = {}
        self._product_names = dict(table._product_names)
        self._needs = tuple(_need(s, self._product_names) for s in specs)
        self._channel_product = table._channel_product
        self._declared_channels = table._declared_channels
        self._channels = self._union(s.channels for s in specs)
        self._event_ids = self._union(s.event_ids for s in specs)
        logsource = ", ".join(self._subjects.values())
        if not specs:
            covers = "no event (its parts exclude each other)"
        else:
            covers = " | ".join(self._needs)
        self._describe = f"{logsource} -> {covers}" + "".join(f" ({n})" for n in notes)

    @staticmethod
    def _union(sets) -> Optional[frozenset]:
        total = frozenset()
        for s in sets:
            if s is None:
                return None
            total |= s
        return total

    @property
    def channels(self) -> Optional[frozenset]:
        """Every channel (casefolded) an applicable event can have, or None when any channel may do.

        An event whose channel is known and not in this set never applies, under either policy;
        one without a channel is decided by the policy.  Not so an event that declares its service or
        category (:class:`EventFacts`): its channel is not read (a known service stands for its channels).
        """
        return self._channels

    @property
    def event_ids(self) -> Optional[frozenset]:
        """Every EventID (text) an applicable event can have, or None when unconstrained (as ``channels``)."""
        return self._event_ids

    def identity(self) -> tuple:
        """What ``applies`` depends on: two checks of the same identity give the same answers."""
        return self._rows, self._wants, id(self._channel_product), id(self._declared_channels)

    def describe(self) -> str:
        """One line for ``explain``: the logsource and the events it covers."""
        return self._describe

    def __repr__(self) -> str:
        return f"<LogsourceCheck {self._describe}>"

    def _facts(self, facts: EventFacts):
        product, channel, event_id = facts._key
        inferred = False
        if product is None and channel is not None:
            product = self._channel_product.get(channel)
            inferred = product is not None
        return product, inferred, channel, event_id

    def applies(self, facts: EventFacts, unknown: str = "match") -> bool:
        """``verdict(facts, unknown)[0]`` without the reason."""
        if unknown == "match":
            skip = False
        elif unknown == "skip":
            skip = True
        else:
            _skips(unknown)
        product, channel, event_id = facts._key
        if product is None and channel is not None:
            product = self._channel_product.get(channel)
        declared = facts._declared
        if declared is not None:
            places = self._service_channels(product, declared)
            if places is None:
                return self._declared_fails(product, declared, skip) is None
            return any(self._fits(product or self._channel_product.get(place), place, event_id, skip)
                       for place, _ in places)
        return self._fits(product, channel, event_id, skip)

    def _service_channels(self, product: Optional[str], declared: tuple) -> Optional[tuple]:
        """Where an event that declares ``(service, category)`` is taken to be: its declared service's
        channels, when it declares no category and the table knows the service (of its product, or of
        any when it tells none); None: judged on its declared facts alone."""
        service, category = declared
        if category is not None or service is None:
            return None
        return self._declared_channels.get((product, service))

    def _fits(self, product: Optional[str], channel: Optional[str], event_id: Optional[str], skip: bool) -> bool:
        """Whether an event of these (casefolded) facts fits one of the specs."""
        for products, excluded, event_ids, channels, not_channels in self._rows:
            if products is not None:
                if product is None:
                    if skip:
                        continue
                elif product not in products:
                    continue
            elif excluded is not None:
                if product is None:
                    if skip:
                        continue
                elif product in excluded:
                    continue
            if event_ids is not None:
                if event_id is None:
                    if skip:
                        continue
                elif event_id not in event_ids:
                    continue
            if channels is not None:
                if channel is None:
                    if skip:
                        continue
                elif channel not in channels:
                    continue
            if not_channels is not None and channel in not_channels:
                continue
            return True
        return False

    def verdict(self, facts: EventFacts, unknown: str = "match") -> tuple:
        """(applies?, one-line reason for ``explain``)."""
        key = (facts._key, facts.channel, facts.product, facts.service, facts.category, facts.origin, unknown)
        found = self._verdicts.get(key)
        if found is None:
            found = self._verdict(facts, _skips(unknown))
            if len(self._verdicts) >= self._VERDICT_CACHE:
                self._verdicts.clear()
            self._verdicts[key] = found
        return found

    def _declared_fails(self, product: Optional[str], declared: tuple, skip: bool) -> Optional[tuple]:
        """For an event that declares its service or category: None when the rule applies, else
        ``(key, what the event tells or None)`` of the first fact that fails."""
        service, category = declared
        for (key, wanted), told in zip(self._wants, (product, category, service)):  # in _KEYS' order
            if wanted is None:
                continue
            if told is None:
                if skip:
                    return key, None
            elif told not in wanted:
                return key, told
        return None

    def _declared_verdict(self, facts: EventFacts, product: Optional[str], inferred: bool, skip: bool) -> tuple:
        told = {"product": facts.product if product is None or not inferred else
                self._product_names.get(product, product) + " (from its channel)",
                "service": facts.service, "category": facts.category}
        by = f" (by {facts.origin})" if facts.origin else ""
        failed = self._declared_fails(product, facts._declared, skip)
        if failed is None:
            asked = [key for key, wanted in self._wants if wanted is not None]
            fits = [f"{key} {told[key]}" for key in asked if told[key] is not None]
            unknown = [key for key in asked if told[key] is None]
            reason = f"{self._subject()} applies: the event declares " + (", ".join(fits) or "nothing it asks") + by
            if unknown:
                reason += f" ({_or(unknown)} unknown, taken as matching)"
            return True, reason
        key, value = failed
        subject = self._subjects[key]
        if value is None:
            return False, f"{subject} needs the event's {key}, which it does not tell (policy skip){by}"
        return False, f"{subject} does not fit: the event declares {key} {told[key]}{by}"

    def _verdict(self, facts: EventFacts, skip: bool) -> tuple:
        product, inferred, channel, event_id = self._facts(facts)
        if facts._declared is not None:
            places = self._service_channels(product, facts._declared)
            if places is None:
                return self._declared_verdict(facts, product, inferred, skip)
            found = []
            for place, name in places:
                told = product if product is not None and not inferred else self._channel_product.get(place)
                found.append(self._table_verdict(told, product is None or inferred, place, name, event_id, skip))
            applies, reason = next((v for v in found if v[0]), found[0])
            by = f", by {facts.origin}" if facts.origin else ""
            return applies, f"{reason} (as in the channel of its declared service {facts.service}{by})"
        return self._table_verdict(product, inferred, channel, facts.channel, event_id, skip)

    def _table_verdict(self, product: Optional[str], inferred: bool, channel: Optional[str],
                       channel_name: Optional[str], event_id: Optional[str], skip: bool) -> tuple:
        """The verdict by the table, on the event's (casefolded) facts; ``channel_name`` as the event has it."""
        failures = []  # (spec index, fact that failed)
        for index, spec in enumerate(self._specs):
            assumed = []
            failed = None
            asked = (
                ("product", spec.constrains_product(), product, lambda: product not in spec.not_products and (
                    spec.products is None or product in spec.products)),
                ("EventID", spec.event_ids is not None, event_id, lambda: event_id in spec.event_ids),
                ("channel", spec.channels is not None, channel, lambda: channel in spec.channels),
                # a channel not told is none of the excluded ones: no policy to ask
                ("channel", channel is not None and bool(spec.not_channels), channel,
                 lambda: channel not in spec.not_channels),
            )
            for name, constrained, known, fits in asked:
                if not constrained:
                    continue
                if known is None and not skip:
                    assumed.append(name)
                elif known is None or not fits():
                    failed = name
                    break
            if failed is None:
                reason = f"{self._subject()} applies: event fits {self._needs[index]}"
                if assumed:
                    reason += f" ({_or(assumed)} unknown, taken as matching)"
                return True, reason + "".join(f" ({n})" for n in self._notes)
            failures.append((index, failed))
        if not failures:
            return False, f"{self._subject()} covers no event: its parts exclude each other"
        have = {
            "product": (self._product_names.get(product, product) + (" (from its channel)" if inferred else ""))
            if product is not None else None,
            "EventID": event_id,
            "channel": channel_name if channel is not None else None,
        }
        kinds = {kind for _, kind in failures}
        if len(kinds) == 1:
            kind = kinds.pop()
            if have[kind] is None:
                tail = f"event's {kind} is unknown (policy skip)"
            elif kind == "product":
                tail = f"event is {have[kind]}"
            else:
                tail = f"event has {have[kind]}"
            wanted = self._fact_need([self._specs[index] for index, _ in failures], kind)
            return False, f"{self._subject(kind)} needs {wanted}, {tail}"
        event = ", ".join(f"{kind} {value if value is not None else 'unknown'}" for kind, value in have.items())
        needs = " | ".join(self._needs[index] for index, _ in failures)
        return False, f"{self._subject()} needs {needs}; event has {event}"

    def _subject(self, kind: Optional[str] = None) -> str:
        if kind == "product" and list(self._subjects) == ["product"]:
            return "logsource"
        for key in ("category", "service", "product"):
            if key in self._subjects:
                return self._subjects[key]
        return "logsource"

    def _fact_need(self, specs: list, kind: str) -> str:
        """What the failing specs want of one fact, merged: ``EventID 800, 4103 or 4104``."""
        names = self._product_names
        if kind == "product":
            wants = []
            included = {p for s in specs if s.products is not None for p in s.products}
            excluded = {p for s in specs if s.products is None for p in s.not_products}
            if included:
                wants.append("product " + _or(sorted(names.get(p, p) for p in included)))
            if excluded:
                wants.append("a product other than " + _or(sorted(names.get(p, p) for p in excluded)))
            return " or ".join(wants)
        if kind == "EventID":
            return "EventID " + _or(_sorted_ids({e for s in specs for e in s.event_ids}))
        wants = []
        named = list(dict.fromkeys(n for s in specs for n in s.channel_names))
        if named:
            wants.append("channel " + _or(named))
        unnamed = list(dict.fromkeys(n for s in specs for n in s.not_channel_names))
        if unnamed:
            wants.append("a channel other than " + _or(unnamed))
        return " or ".join(wants)


# --------------------------------------------------------------------------- compilation


def _names(logsource: dict, key: str, source: str) -> tuple:
    value = logsource.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        values = value
    else:
        raise RuleError(f"rule {source}: logsource '{key}' must be a string or a list of strings")
    return tuple(dict.fromkeys(v.strip() for v in values if v.strip()))


def compile_logsource(logsource: dict, table: LogsourceTable, source: str) -> Optional[LogsourceCheck]:
    """The check for one rule's ``logsource``, or None when it constrains nothing.

    ``source`` names the rule file in errors; a malformed logsource raises :class:`RuleError`.
    """
    if logsource is None:
        return None
    if not isinstance(logsource, dict):
        raise RuleError(f"rule {source}: 'logsource' must be a mapping")
    fields = {key: _names(logsource, key, source) for key in _KEYS}
    fields = {key: names for key, names in fields.items() if names}
    if not fields:
        return None
    products = [p.casefold() for p in fields.get("product", ())]
    categories = fields.get("category", ())
    services = fields.get("service", ())
    notes = []
    specs = []
    if products:
        for product in dict.fromkeys(products):
            base = _Spec(products=frozenset([product]))
            if product not in table.products:
                specs.append(base)
                continue
            category_specs = [_Spec()]
            if categories:
                found = _category_specs(table, product, categories)
                if found is None:
                    missing = [c for c in categories if not table.knows(product, category=c)]
                    notes.append(f"{product} category {_or(missing)} not in the logsource table: product only")
                else:
                    category_specs = found
            service_spec = _Spec()
            if services:
                found = _service_spec(table, product, services)
                if found is None:
                    missing = [s for s in services if not table.knows(product, service=s)]
                    notes.append(f"{product} service {_or(missing)} not in the logsource table: product only")
                else:
                    service_spec = found
            for category_spec in category_specs:
                both = _combine(category_spec, service_spec)
                both = both and _combine(base, both)
                if both is not None:
                    specs.append(both)
    else:
        everywhere = table.products
        # A source the table does not list is of no product it knows: not a Windows event, and of a product
        # the table knows some logs of only (linux), not one of those logs (Sysmon for Linux's).
        elsewhere = _Spec(not_products=everywhere - table.partial)
        partial_channels = tuple(c for p in sorted(table.partial) for c in table.all_channels(p))
        if partial_channels:
            elsewhere = attrs.evolve(elsewhere, not_channels=frozenset(c.casefold() for c in partial_channels),
                                     not_channel_names=partial_channels)
        category_specs = [_Spec()]
        if categories:
            category_specs = []
            for category in categories:
                listed = [p for p in sorted(everywhere) if table.knows(p, category=category)]
                if not listed:
                    category_specs.append(elsewhere)
                for product in listed:
                    category_specs.extend(_category_specs(table, product, (category,)))
        service_specs = [_Spec()]
        if services:
            service_specs = []
            for service in services:
                listed = [p for p in sorted(everywhere) if table.knows(p, service=service)]
                if not listed:
                    service_specs.append(elsewhere)
                for product in listed:
                    service_specs.append(_service_spec(table, product, (service,)))
        for category_spec in category_specs:
            for service_spec in service_specs:
                both = _combine(category_spec, service_spec)
                if both is not None:
                    specs.append(both)
    return LogsourceCheck(fields, _simplify(specs), tuple(notes), table)


def _channel_spec(channels: tuple) -> _Spec:
    return _Spec(channels=frozenset(c.casefold() for c in channels), channel_names=channels)


def _category_specs(table: LogsourceTable, product: str, categories) -> Optional[list]:
    """One spec per alternative of the categories, or None when one of them is not mapped."""
    specs = []
    for category in categories:
        alternatives = table.alternatives(product, category)
        if alternatives is None:
            return None
        for event_ids, service in alternatives:
            spec = _Spec(event_ids=event_ids)
            if service is not None:
                spec = _combine(spec, _channel_spec(table.channels(product, service)))
            specs.append(spec)
    return specs


def _service_spec(table: LogsourceTable, product: str, services) -> Optional[_Spec]:
    """The channels of any of the services, or None when one of them is not mapped."""
    channels = []
    for service in services:
        found = table.channels(product, service)
        if found is None:
            return None
        channels.extend(found)
    return _channel_spec(tuple(dict.fromkeys(channels)))
