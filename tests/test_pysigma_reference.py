"""The detect stage's verdicts against a reference built on pySigma (``sigma_reference.py``).

Each rule is read by both: the filter compiles it (``compile_plan``) and runs its condition on a
flat event (the ``flat`` profile, no logsource routing); pySigma parses it and the reference
evaluates pySigma's condition tree.  Events are made from the rule's own values, so that the
condition holds (each value's wildcards filled with random text, its letters in random case,
its dashes swapped under ``windash``), or fails on purpose, and then mutated (a field dropped,
nulled, renamed in another case, a character changed, the case flipped, blanks around it): the
two must agree on every one.  SigmaHQ's windows and linux rules (``../shared``, skipped when
absent), and random rules of every modifier and condition form (always).
"""

import functools
import glob
import os
import random

import pytest
import yaml
from hypothesis import given, settings, strategies as st

pytest.importorskip("sigma.collection", reason="pySigma (pip install pysigma, Python 3.11+) is not installed")

import sigma_reference as ref  # noqa: E402
import sigmahq  # noqa: E402
from sigma.conditions import (ConditionAND, ConditionFieldEqualsValueExpression, ConditionNOT,  # noqa: E402
                              ConditionOR, ConditionValueExpression)
from sigma.types import (CompareOperators, SigmaBool, SigmaCasedString, SigmaCIDRExpression,  # noqa: E402
                         SigmaCompareExpression, SigmaExists, SigmaExpansion, SigmaFieldReference, SigmaNull,
                         SigmaNumber, SigmaRegularExpression, SigmaString, SpecialChars)

from pipeshell_filter.events.fields import FieldResolver, builtin_profiles  # noqa: E402
from pipeshell_filter.sigma.compile import compile_plan  # noqa: E402
from pipeshell_filter.sigma.condition import evaluate  # noqa: E402
from pipeshell_filter.sigma.rule import Rule, RuleError, parse_rules  # noqa: E402

RESOLVER = FieldResolver(builtin_profiles(), "flat")
# Fillers for wildcards: the characters values hold (escapes, wildcards, dashes, blanks, newlines),
# letters whose lower and casefold agree (the reference folds with re.IGNORECASE)
FILLER = "abcXYZ019 _-./\\:\"'*?éÄж\n\t%$[](){}|^+"
SIGMAHQ_FILES = sorted(path for directory in sigmahq.RULE_DIRS for product in ("windows", "linux")
                       for path in glob.glob(os.path.join(directory, product, "**", "*.yml"), recursive=True))
needs_sigmahq = pytest.mark.skipif(not SIGMAHQ_FILES, reason="the shared SigmaHQ checkout is absent")


def ours(plan, event: dict) -> bool:
    return evaluate(plan.expression, plan.match(RESOLVER.view(event)))


class Maker:
    """Events for one rule, from the values of pySigma's condition tree.  ``regex_text`` gives a
    text a pattern finds (hypothesis' ``from_regex``), or None to put random text there."""

    def __init__(self, rnd: random.Random, reference: ref.Reference, regex_text=None):
        self.rnd, self.reference, self.regex_text = rnd, reference, regex_text
        self.cased, self.dashed = set(reference.cased), set(reference.dashed)

    def filler(self, size=None) -> str:
        size = self.rnd.randint(0, 4) if size is None else size
        return "".join(self.rnd.choice(FILLER) for _ in range(size))

    def recase(self, text: str) -> str:
        draw = self.rnd.random()
        if draw < 0.3:
            return text
        if draw < 0.5:
            return text.upper()
        return "".join(c.swapcase() if self.rnd.random() < 0.5 else c for c in text)

    def choose(self, expansion: SigmaExpansion):
        """One value of a list pySigma made of one (base64offset's three, windash's five), keeping
        how the reference compares it."""
        chosen = self.rnd.choice(expansion.values)
        for marked in (self.cased, self.dashed):
            if id(expansion) in marked:
                marked.add(id(chosen))
        return chosen

    def text_for(self, values: list) -> str:
        """A text meant to meet every SigmaString of ``values`` (``|all``: several on one field):
        the anchored ones first and last, the contained ones between."""
        heads, middles, tails = [], [], []
        for value in values:
            parts = list(value.s)
            lead = bool(parts) and parts[0] is SpecialChars.WILDCARD_MULTI
            trail = len(parts) > lead and parts[-1] is SpecialChars.WILDCARD_MULTI
            cased = isinstance(value, SigmaCasedString) or id(value) in self.cased
            text = "".join(self.filler() if p is SpecialChars.WILDCARD_MULTI
                           else self.rnd.choice(FILLER) if p is SpecialChars.WILDCARD_SINGLE
                           else p if cased else self.recase(p)
                           for p in parts[lead:len(parts) - trail])
            if id(value) in self.dashed:
                text = "".join(self.rnd.choice(ref.DASHES) if c in ref.DASHES and self.rnd.random() < 0.5 else c
                               for c in text)
            if not lead and not trail:
                return text
            (middles if lead and trail else tails if lead else heads).append(text)
        return "".join([heads[0] if heads else self.filler(), self.filler(), *middles, self.filler(),
                        tails[0] if tails else self.filler()])

    def value_for(self, value, field: str, fieldrefs: list):
        """A field value meant to meet one pySigma value; ``ABSENT`` for no field at all."""
        rnd = self.rnd
        if isinstance(value, SigmaExpansion):
            return self.value_for(self.choose(value), field, fieldrefs)
        if isinstance(value, SigmaString):
            return self.text_for([value])
        if isinstance(value, SigmaNull):
            return rnd.choice([None, ABSENT])
        if isinstance(value, SigmaExists):
            return self.filler(3) if value.exists else ABSENT
        if isinstance(value, SigmaBool):
            return rnd.choice([value.boolean, str(value.boolean).lower()])
        if isinstance(value, SigmaCompareExpression):
            step = {CompareOperators.LT: -1, CompareOperators.LTE: 0, CompareOperators.GT: 1,
                    CompareOperators.GTE: 0}[value.op]
            number = value.number.number + step * rnd.choice([1, 0.5, 100])
            return rnd.choice([number, str(number)])
        if isinstance(value, SigmaNumber):
            return rnd.choice([value.number, str(value.number)])
        if isinstance(value, SigmaRegularExpression):
            return (self.regex_text(value) if self.regex_text else None) or self.filler()
        if isinstance(value, SigmaCIDRExpression):
            network = value.network
            return str(network[rnd.randrange(min(network.num_addresses, 1 << 30))])
        if isinstance(value, SigmaFieldReference):
            fieldrefs.append((field, value))
            return self.filler(3)
        raise ref.Unsupported(type(value).__name__)

    def leaves(self, node, want: bool, found: list) -> None:
        """(field, value, want): the leaves that make ``node`` come out ``want``; the other side
        of an or (an and, wanting false) sometimes wanted either way."""
        if isinstance(node, ConditionNOT):
            self.leaves(node.args[0], not want, found)
        elif isinstance(node, (ConditionAND, ConditionOR)):
            if isinstance(node, ConditionAND) == want:
                for arg in node.args:
                    self.leaves(arg, want, found)
            else:
                pick = self.rnd.choice(node.args)
                for arg in node.args:
                    if arg is pick:
                        self.leaves(arg, want, found)
                    elif self.rnd.random() < 0.3:
                        self.leaves(arg, not want, found)
        elif isinstance(node, ConditionFieldEqualsValueExpression):
            found.append((node.field, node.value, want))
        elif isinstance(node, ConditionValueExpression):
            found.append((None, node.value, want))
        else:
            raise ref.Unsupported(type(node).__name__)

    def changed(self, text: str) -> str:
        if not text:
            return "x"
        at, draw = self.rnd.randrange(len(text)), self.rnd.random()
        if draw < 0.4:
            return text[:at] + text[at + 1:]
        if draw < 0.8:
            return text[:at] + self.rnd.choice("qZ9 -") + text[at + 1:]
        return text.swapcase()

    def event(self, want: bool) -> dict:
        found, event, strings, fieldrefs = [], {}, {}, []
        self.leaves(self.reference.trees[0], want, found)
        for field, value, wanted in found:
            key = field if field is not None else self.rnd.choice(["Message", "Payload", "CommandLine"])
            if wanted:
                if isinstance(value, SigmaExpansion):
                    value = self.choose(value)
                if isinstance(value, SigmaString):
                    strings.setdefault(key, []).append(value)
                else:
                    event[key] = self.value_for(value, key, fieldrefs)
            elif self.rnd.random() >= 0.4 and key not in event and key not in strings:
                near = self.value_for(value, key, fieldrefs)
                event[key] = self.changed(near) if isinstance(near, str) else near
        for key, values in strings.items():
            event[key] = self.text_for(values)
        for field, value in fieldrefs:
            other = event.get(value.field)
            if not isinstance(other, str):
                other = event[value.field] = self.filler(3)
            mine = self.recase(other)
            event[field] = mine + self.filler() if value.starts_with else \
                self.filler() + mine if value.ends_with else mine
        return {key: value for key, value in event.items() if value is not ABSENT}

    def mutations(self, event: dict, count: int = 4) -> list:
        found, rnd = [], self.rnd
        for _ in range(count if event else 0):
            mutated = dict(event)
            key, draw = rnd.choice(list(event)), rnd.random()
            value = mutated[key]
            if draw < 0.1:
                mutated[key] = rnd.choice([None, "", 0, True, " "])
            elif draw < 0.15:
                mutated[key.lower() if key != key.lower() else key.upper()] = mutated.pop(key)
            elif draw < 0.2 and isinstance(value, str):
                mutated[key] = rnd.choice([" ", "\n", ""]) + value + rnd.choice([" ", "\n", ""])
            elif draw < 0.25 and isinstance(value, str) and value.strip().lstrip("-").isdigit():
                mutated[key] = int(value)
            elif draw < 0.3:
                del mutated[key]
            elif isinstance(value, str):
                mutated[key] = self.changed(value) if draw < 0.8 else value.swapcase()
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                mutated[key] = value + rnd.choice([-1, 1])
            else:
                mutated[key] = None
            found.append(mutated)
        return found


ABSENT = Maker  # a marker no event value can be


@functools.lru_cache(maxsize=None)
def both(path: str):
    """(plan, reference) of a SigmaHQ file holding one plain rule both read, else None."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        theirs = ref.rules_of(text)
        mine = parse_rules(text, path)
    except Exception:  # pySigma's errors have no common base; the filter's rule errors are tested elsewhere
        return None
    if len(theirs) != 1 or len(mine) != 1 or not isinstance(mine[0], Rule):
        return None
    rule = mine[0]
    if rule.condition.aggregation is not None or rule.near is not None:
        return None
    try:
        return compile_plan(rule), ref.Reference(theirs[0])
    except RuleError:  # |expand without --placeholders
        return None


def compare(plan, reference, maker: Maker, rounds: int, counts: dict) -> list:
    """The events (made and mutated) on which the filter and the reference disagree."""
    wrong = []
    for round_ in range(rounds):
        made = maker.event(want=round_ % 3 != 2)
        for event in [made] + maker.mutations(made):
            expected = reference.holds(event)
            counts[expected] = counts.get(expected, 0) + 1
            if ours(plan, event) != expected:
                wrong.append((event, expected))
    return wrong


@needs_sigmahq
def test_a_fixed_sample_of_sigmahq_rules_agrees_with_the_reference():
    sample = SIGMAHQ_FILES[::6]
    counts, compared, wrong = {}, 0, []
    for number, path in enumerate(sample):
        found = both(path)
        if found is None:
            continue
        compared += 1
        plan, reference = found
        wrong += [(path, *case) for case in compare(plan, reference, Maker(random.Random(number), reference), 4,
                                                    counts)]
    assert compared > 0.95 * len(sample) - 5
    assert counts.get(True, 0) > 1000 and counts.get(False, 0) > 1000, counts  # both verdicts exercised
    assert not wrong, wrong[:5]


_ASCII = st.characters(codec="ascii", exclude_categories=["Cc"])


@needs_sigmahq
@settings(max_examples=100)
@given(st.data())
def test_any_sigmahq_rule_agrees_with_the_reference_regexes_included(data):
    found = both(data.draw(st.sampled_from(SIGMAHQ_FILES), label="rule"))
    if found is None:
        return
    plan, reference = found

    def regex_text(value):
        flags = "".join(sorted(f.name[0].lower() for f in value.flags))  # IGNORECASE -> i, ...
        pattern = (f"(?{flags})" if flags else "") + value.regexp.original
        try:
            return data.draw(st.from_regex(pattern, alphabet=_ASCII))
        except Exception:  # a form sre does not parse, or a literal outside the alphabet: random text there
            return None

    maker = Maker(random.Random(data.draw(st.integers(0, 2 ** 32), label="seed")), reference, regex_text)
    assert compare(plan, reference, maker, 3, {}) == []


# ---------------------------------------------------------------- random rules

NAMES = ["sel", "sel_1", "selection", "_hidden", "filter_a", "filter_b", "Sel2", "x", "selection_2", "s", "sel-b"]
PATTERN_NAMES = ["them", "sel*", "filter_*", "_*", "s*", "*", "*_1", "*a", "sel*2", "*lect*", "s*l*n", "*_*"]
FIELDS = ["A", "B", "c.d", "Some Field"]
ALPHABET = "aB*?\\-/ 1é\n."
EVENT_ALPHABET = "aAbB*?\\-/ 1éÉ–\n."
NUMBERS = [0, 1, -1, 10, 2, 1.5, -0.5, 100000000000, 10 ** 16, 0.1, 1e16, 2.5e-3]  # the last two: 1.0e+16
EVENT_NUMBERS = NUMBERS + [1e16, 5, "3", " 2", "1.5", "1.50", "1.0", 1.0, "-0", "+1", "1e1", "0x10", 2.0, "2.0", "",
                           "10.0.0.1", "192.168.1.7", "::1", "fe80::1", "::ffff:10.0.0.1"]
PATTERNS = ["a.b", "^a", "b$", "a|B", "[ab]+1", "\\d", "a?b", "^$", "(a|b)c*", "a$", "^b", "a.*b", "(?i)ab", "\\.",
            "\\n", "\\s", "[^a]", "^a.b$", "é", "É"]


def _text(rnd, alphabet=ALPHABET, low=0, high=4):
    return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(low, high)))


def _key_and_value(rnd):
    draw = rnd.random()
    if draw < 0.45:
        modifiers = rnd.choice([[], ["contains"], ["startswith"], ["endswith"], ["contains", "all"], ["cased"],
                                ["contains", "cased"], ["windash"], ["contains", "windash"], ["neq"],
                                ["contains", "neq"], ["all"]])
        values = [_text(rnd) for _ in range(rnd.randint(1, 3))]
        return modifiers, values if len(values) > 1 or rnd.random() < 0.5 else values[0]
    if draw < 0.55:
        return rnd.choice([["re"], ["re", "i"], ["re", "m"], ["re", "s"], ["re", "i", "m"]]), rnd.choice(PATTERNS)
    if draw < 0.65:
        return rnd.choice([[], ["gt"], ["lt"], ["gte"], ["lte"]]), rnd.choice(NUMBERS)
    if draw < 0.7:
        return ["cidr"], rnd.choice(["10.0.0.0/8", "192.168.1.0/24", "::1/128", "fe80::/10"])
    if draw < 0.77:
        return ["exists"], rnd.choice([True, False])
    if draw < 0.83:
        return [], None
    if draw < 0.9:
        return rnd.choice([["fieldref"], ["fieldref", "contains"], ["fieldref", "startswith"],
                           ["fieldref", "endswith"]]), rnd.choice(FIELDS)
    if draw < 0.93:
        return rnd.choice([[], ["contains"]]), [None, _text(rnd)]
    return [], rnd.choice([True, False, 1, 0])


def _selection(rnd):
    if rnd.random() < 0.1:
        return [_text(rnd, low=1) for _ in range(rnd.randint(1, 2))]  # keywords
    maps = []
    for _ in range(1 if rnd.random() < 0.8 else 2):
        mapping = {}
        for field in rnd.sample(FIELDS, rnd.randint(1, 2)):
            modifiers, value = _key_and_value(rnd)
            mapping["|".join([field] + modifiers)] = value
        maps.append(mapping)
    return maps[0] if len(maps) == 1 else maps


def _condition(rnd, names, depth=0):
    draw = rnd.random()
    if depth > 2 or draw < 0.35:
        return rnd.choice(names)
    if draw < 0.5:
        return f"{rnd.choice(['1 of', 'all of', 'any of'])} {rnd.choice(PATTERN_NAMES)}"
    if draw < 0.6:
        return f"not {_condition(rnd, names, depth + 1)}"
    text = f"{_condition(rnd, names, depth + 1)} {rnd.choice(['and', 'or'])} {_condition(rnd, names, depth + 1)}"
    return f"({text})" if rnd.random() < 0.5 else text


def _random_event(rnd):
    event = {}
    for field in FIELDS:
        draw = rnd.random()
        if draw < 0.15:
            continue
        event[field] = None if draw < 0.2 else rnd.choice(EVENT_NUMBERS) if draw < 0.3 \
            else rnd.choice([True, False]) if draw < 0.35 else _text(rnd, EVENT_ALPHABET, 0, 6)
    if rnd.random() < 0.3 and len(event) > 1:  # for |fieldref: two fields alike
        mine, other = rnd.sample(list(event), 2)
        event[mine] = event[other]
    return event


@given(st.integers(0, 2 ** 32))  # a seed: hypothesis' own randoms keep to their first choices, a few shapes
def test_random_rules_agree_with_the_reference(seed):
    rnd = random.Random(seed)
    names = rnd.sample(NAMES, rnd.randint(1, 4))
    detection = {name: _selection(rnd) for name in names}
    detection["condition"] = _condition(rnd, names)
    text = yaml.safe_dump({"title": "random", "logsource": {"product": "windows"}, "detection": detection},
                          allow_unicode=True, sort_keys=False)
    try:
        reference = ref.Reference(ref.rules_of(text)[0])
    except Exception:  # pySigma refuses it (a pattern under all of, ...): nothing to compare
        return
    try:
        rule = parse_rules(text, "random.yml")[0]
        if not isinstance(rule, Rule):
            return
        plan = compile_plan(rule)
    except RuleError:  # documented refusals: see test_modifiers_v21
        return
    events = [_random_event(rnd) for _ in range(12)]
    maker = Maker(rnd, reference)
    events += [maker.event(want=True) for _ in range(4)]
    wrong = [(event, expected) for event in events
             for expected in [reference.holds(event)] if ours(plan, event) != expected]
    assert not wrong, (text, wrong[:3])
