"""Privacy: classify the fields of events (Red, Yellow, Green) with the matcher plugins and the
config, and apply what a source or destination asks for each class or field: allow, block,
redact or hash (segment-api.md §6).

Fields are named by dotted paths under ``context``, ``traits`` and ``properties`` (array items
take their array's path: ``properties.products.email``; an array's string items are checked by
value as the array: ``properties.emails`` is Yellow when an item is an email). A key decision is
made once per path and cached; values are checked only when they could have a shape a matcher
knows (digits, ``@`` or ``:``), so free text costs one cheap test. Once no field of a dict shape needs its value
checked on an event, the dict is classified by its shape plan (:mod:`gateway.privacy.shape_plans`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import msgspec

from gateway.components import MatcherType
from gateway.privacy.config import Class, CustomMatcher, PrivacyConfig, PrivacyPolicy
from gateway.privacy.shape_plans import FieldClass, Finding, Shape, ShapePlans

__all__ = [
    "Classifier",
    "CustomMatcher",
    "FieldClass",
    "Finding",
    "PrivacyConfig",
    "PrivacyPolicy",
    "Shape",
    "apply_policy",
    "block_red",
    "hash_value",
]

RANK: dict[str, int] = {"green": 0, "yellow": 1, "red": 2}
SCANNED_ROOTS = ("context", "traits", "properties")
REDACTED = "[REDACTED]"
#: ``value_checks = "learn"``: clean values in a row before a path is sampled, and the sample
#: rate (every SAMPLE_EVERY-th message has the values of all its settled paths checked).
LEARN_AFTER = 200
SAMPLE_EVERY = 100
MAX_LEARNED_PATHS = 100_000
#: ``value_checks = "every"``: changes of a path's class by value (one value a card number, the
#: next not) in CLASS_CHANGE_WINDOW messages past which messages are walked field by field
#: until the window ends (each change drops every plan, and plans cost more to make than a walk).
MAX_CLASS_CHANGES = 100
CLASS_CHANGE_WINDOW = 10_000
#: String items of one array (nested arrays included) checked by value at most: the first ones.
MAX_ARRAY_VALUES = 1000
#: Fields the Segment spec defines as describing the library, app, device model or page, not a
#: person (``context.library.name`` is not a name). ``[privacy.classes]`` can still classify them.
STRUCTURAL_PATHS = frozenset(
    {
        "context.library",
        "context.app",
        "context.os",
        "context.campaign",
        "context.screen",
        "context.network",
        "context.page",
        "context.userAgentData",
        "context.locale",
        "context.timezone",
        "context.userAgent",
        "context.protocols",
        "context.direct",
        "context.active",
        "context.groupId",
        "context.device.type",
        "context.device.manufacturer",
        "context.device.model",
        "context.device.adTrackingEnabled",
    }
)
_MAY_HAVE_SHAPE = re.compile(r"[\d@:]")
#: Decisions cached per field path (and per parent path and key) at most.
_MAX_STEPS = 65536
#: Value check results remembered at most, and the longest string remembered: what the value
#: matchers say of a value is the same every time, and values repeat (currencies, plans, pages).
#: The values are held in memory only (never logged or stored), and dropped with the classifier.
_MAX_VALUE_RESULTS = 65536
_MAX_REMEMBERED_LENGTH = 256
#: Types of values whose class by value is their key's, whatever the value (see _value_class):
#: a site that held one holds every value of its type.
_CLASSED_BY_TYPE: frozenset[type] = frozenset({float, bool, type(None), dict})


@dataclass(frozen=True, slots=True)
class _Matcher:
    name: str
    cls: str
    match_key: Callable[[str], bool] | None
    match_value: Callable[[Any], bool] | None


class Classifier:
    """Classifies fields with the installed matchers, custom matchers and explicit classes."""

    def __init__(self, matchers: Sequence[MatcherType], config: PrivacyConfig) -> None:
        self.config = config
        found = [_Matcher(m.name, m.default_class, m.match_key, m.match_value) for m in matchers]
        self._key_matchers = [m for m in found if m.match_key is not None]
        # Per class, the value checks that could raise it: (name, class, rank, check), in order.
        self._value_checks = {
            cls: [
                (m.name, m.cls, RANK[m.cls], m.match_value)
                for m in found
                if m.match_value is not None and RANK[m.cls] > rank
            ]
            for cls, rank in RANK.items()
        }
        self.key_class = lru_cache(maxsize=_MAX_STEPS)(self._key_class)
        # Value classes learned per path (sticky), and clean values seen in a row per path.
        self._learned: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._clean: dict[str, int] = {}
        # Messages classified, to pick the sampled ones: those whose settled paths are checked.
        self._messages = 0
        self._every = config.value_checks == "every"
        # (parent path, key) -> what a walk decides from them alone; see _step.
        self._steps: dict[tuple[str, Any], tuple[str, bool, str, tuple[str, ...], bool]] = {}
        self._plans = ShapePlans(self._decide, SCANNED_ROOTS, red_sites=self._every)
        # value_checks = "every": the class each path's values gave last (by key and value), for
        # the plans; and how often one changed in this window (past MAX_CLASS_CHANGES, no plans).
        self._observed: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._class_changes = 0
        # Per class before, value -> (class after, the matchers that raised it): see _checked_value.
        # One table per class, keyed by the value alone: a tuple key cost an allocation and a
        # hash per lookup, and every value a site does not remember is looked up here.
        self._value_results: dict[str, dict[str | int, tuple[str, tuple[str, ...]]]] = {cls: {} for cls in RANK}
        self._remembered_results = 0

    def _key_class(self, path: str, key: str) -> tuple[str, tuple[str, ...]]:
        explicit = self.config.classes.get(path)
        if explicit is not None:
            return explicit, ("config",)
        hits = tuple(m.name for m in self._key_matchers if m.match_key and m.match_key(key))
        cls = max((m.cls for m in self._key_matchers if m.name in hits), key=RANK.__getitem__, default="green")
        return cls, hits

    def classify(self, path: str, key: str, value: Any) -> tuple[str, tuple[str, ...]]:
        cls, hits = self.key_class(path, key)
        if cls == "red" or path in self.config.classes:
            return cls, hits
        return self._value_class(value, cls, hits)

    def _value_class(self, value: Any, cls: str, hits: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        kind = type(value)
        if kind is str or kind is int:  # the usual values: what the checks say is remembered
            result = self._value_results[cls].get(value)
            if result is None:
                result = self._checked_value(value, cls)
            return (result[0], (*hits, *result[1])) if result[1] else (cls, hits)
        if kind is list:
            # Its string items take its path, as the keys of its objects do (those are walked):
            # the array's class by value is the most severe of theirs. Not its numbers: arrays of
            # numeric ids are common, and one id in ten of 16 digits passes a card's Luhn check.
            for item in _array_strings(value):
                if cls == "red":
                    break
                cls, hits = self._value_class(item, cls, hits)
            return cls, hits
        if (isinstance(value, str) and _MAY_HAVE_SHAPE.search(value)) or (
            isinstance(value, int) and not isinstance(value, bool)
        ):  # subclasses of str and int: checked every time
            rank = RANK[cls]
            for name, matcher_cls, matcher_rank, check in self._value_checks[cls]:
                if matcher_rank > rank and check(value):  # (a hit raises the bar for the next ones)
                    cls, rank, hits = matcher_cls, matcher_rank, (*hits, name)
        return cls, hits

    def _checked_value(self, value: str | int, cls: str) -> tuple[str, tuple[str, ...]]:
        """The value checks that could raise ``cls``, run on ``value``: the class they give and
        the matchers that raised it; remembered by ``(cls, value)`` (strings of at most
        _MAX_REMEMBERED_LENGTH). A value check depends on the value alone, so the same value
        gets the same answer: ``value_checks = "every"`` stays exact, and a value seen before
        costs one lookup. Only strings that could have a shape a matcher knows (digits, ``@``
        or ``:``) are checked: free text costs one cheap test."""
        found = cls
        raised: tuple[str, ...] = ()
        if isinstance(value, int) or _MAY_HAVE_SHAPE.search(value):
            rank = RANK[cls]
            for name, matcher_cls, matcher_rank, check in self._value_checks[cls]:
                if matcher_rank > rank and check(value):  # (a hit raises the bar for the next ones)
                    found, rank, raised = matcher_cls, matcher_rank, (*raised, name)
        if isinstance(value, int) or len(value) <= _MAX_REMEMBERED_LENGTH:
            if self._remembered_results >= _MAX_VALUE_RESULTS:
                self._forget_results()  # values that never repeat: start over rather than grow
            self._remembered_results += 1
            self._value_results[cls][value] = (found, raised)
        return found, raised

    def _forget_results(self) -> None:
        for results in self._value_results.values():
            results.clear()
        self._remembered_results = 0

    def _path_value_class(
        self, path: str, value: Any, cls: str, hits: tuple[str, ...], sampled: bool
    ) -> tuple[str, tuple[str, ...]]:
        """The value-based class of a field, learned per path (see ``PrivacyConfig.value_checks``);
        ``sampled``: the message is one whose settled paths are checked too."""
        learned = self._learned.get(path)
        if learned is not None and RANK[learned[0]] > RANK[cls]:
            cls, hits = learned[0], (*hits, *learned[1])
        if self._every:
            found = self._value_class(value, cls, hits)
            if self._observed.get(path, (cls, hits)) != found and self._class_changes < MAX_CLASS_CHANGES:
                self._class_changes += 1
                if len(self._observed) < MAX_LEARNED_PATHS:
                    self._observed[path] = found
                self._plans.clear()  # planned with the class it had
            return found
        clean = self._clean.get(path, 0)
        if clean >= LEARN_AFTER and not sampled:
            return cls, hits
        found_cls, found_hits = self._value_class(value, cls, hits)
        if found_cls != cls:
            if len(self._learned) < MAX_LEARNED_PATHS:
                self._learned[path] = (found_cls, found_hits[len(hits) :])
            self._clean.pop(path, None)
            self._plans.clear()  # the path's class changed, and its values are checked again
        elif clean < LEARN_AFTER and len(self._clean) < MAX_LEARNED_PATHS:
            self._clean[path] = clean + 1
        return found_cls, found_hits

    def forget_values(self) -> None:
        """Drop every value and key this classifier remembers (the checks' results, the plans'
        sites, the walk's steps), for a deletion request: a user's emails, phones and ids may be
        among them. What was learned per path (classes, not values) stays."""
        self._forget_results()
        self._steps.clear()
        self.key_class.cache_clear()
        self._plans.clear()

    def scan(self, message: dict[str, Any], at_least: Class = "yellow") -> list[Finding]:
        """Every non-green field of ``message`` (a field whose key matches stands for its
        subtree), or only the red ones (``at_least="red"``)."""
        self._messages += 1
        if self._every and not self._messages % CLASS_CHANGE_WINDOW:
            self._class_changes = 0
        sampled = self._every or not self._messages % SAMPLE_EVERY
        if sampled:
            planned = self._sampled_plan(message, survey=False, red_only=at_least == "red")
        else:  # the common case: a message of a known shape takes its plan
            planned = self._plans.findings(message, survey=False, red_only=at_least == "red")
        if planned is not None:
            return planned[0]
        found = self._findings(message, sampled, greens=False)
        return found if at_least != "red" else [f for f in found if f.cls == "red"]

    def survey(self, message: dict[str, Any], at_least: Class = "yellow") -> tuple[list[Finding], Shape]:
        """What :meth:`scan` finds, and the :class:`Shape` of ``message``: every field of it
        (what :meth:`walk` gives) with its class, for an inventory. One walk gives both."""
        self._messages += 1
        if self._every and not self._messages % CLASS_CHANGE_WINDOW:
            self._class_changes = 0
        sampled = self._every or not self._messages % SAMPLE_EVERY
        if sampled:
            planned = self._sampled_plan(message, survey=True, red_only=at_least == "red")
        else:
            planned = self._plans.findings(message, survey=True, red_only=at_least == "red")
        if planned is not None:
            found, shape = planned
            assert shape is not None
            return found, shape
        fields = self._findings(message, sampled, greens=True)
        shape = self._plans.shape_of(tuple(FieldClass(f.path, f.cls, f.hits) for f in fields))
        floor = max(RANK[at_least], RANK["yellow"])
        return [f for f in fields if RANK[f.cls] >= floor], shape

    def _sampled_plan(
        self, message: dict[str, Any], *, survey: bool, red_only: bool
    ) -> tuple[list[Finding], Shape | None] | None:
        """What the shape plans find in a sampled ``message``, or None: walk it field by field.
        It takes its plan only when no value checked changes a class. With ``value_checks =
        "every"`` every message is a sampled one, and its plans are made here."""
        if not self._every:
            sites: list[Finding] = []
            planned = self._plans.findings(message, survey=survey, red_only=red_only, sites=sites)
            if planned is None or any(
                self._value_class(site.value, site.cls, site.hits)[0] != site.cls for site in sites
            ):
                return None  # the walk checks them again and learns what changed
            return planned
        # Each site as the walk classifies it, from its key's class: the plan holds only when
        # every one gets the class (and matchers) it was planned with.
        holds = (self._site_check, _CLASSED_BY_TYPE)
        planned = self._plans.findings(message, survey=survey, red_only=red_only, holds=holds)
        if planned is None and self._plans.findings(message, survey=survey, red_only=red_only):
            planned = self._plans.findings(message, survey=survey, red_only=red_only, holds=holds)
        return planned

    def _site_check(self, path: str, key: Any, cls: str, hits: tuple[str, ...]) -> Callable[[Any], bool]:
        """The check of a site's values (see ShapePlans.findings): whether a value gives the field
        the class and matchers it was planned with, as the walk classifies it from its key's
        class. What the walk decides from the key is decided here once, for every value."""
        key_cls, key_hits = self.key_class(path, key)
        planned = (cls, hits)
        unchanged = (key_cls, key_hits) == planned  # what a value no check raises gives
        # A string or an integer: what the checks say of it (remembered by _checked_value) is
        # (key_cls, ()) or the class and matchers that raised it, which the walk adds to key_hits.
        expected = (cls, hits[len(key_hits) :]) if hits[: len(key_hits)] == key_hits else None
        results, checked, value_class = self._value_results[key_cls], self._checked_value, self._value_class

        def check(value: Any) -> bool:
            kind = type(value)
            if kind is str or kind is int:
                result = results.get(value)
                if result is None:
                    result = checked(value, key_cls)
                return result == expected
            if kind is list and str not in (types := {*map(type, value)}) and list not in types:
                return unchanged  # an array with no strings to check (say, of objects): its key's class
            return value_class(value, key_cls, key_hits) == planned

        return check

    def walk(self, message: dict[str, Any]) -> list[Finding]:
        """Every field of ``message`` for an inventory: what :meth:`scan` finds (a classified
        field stands for its subtree), plus every green leaf, structural ones included (as
        green: they are never classified), field by field."""
        self._messages += 1
        return self._findings(message, self._every or not self._messages % SAMPLE_EVERY, greens=True)

    def _findings(self, message: dict[str, Any], sampled: bool, *, greens: bool) -> list[Finding]:
        """The walk field by field: every decision made again, every value due a check checked."""
        found: list[Finding] = []
        for root in SCANNED_ROOTS:
            node = message.get(root)
            if isinstance(node, dict):
                self._visit(node, root, False, sampled, greens, found)
        return found

    def _visit(
        self,
        node: dict[str, Any] | list[Any],
        path: str,
        structural: bool,
        sampled: bool,
        greens: bool,
        found: list[Finding],
    ) -> None:
        if isinstance(node, list):  # array items take the array's path and are not classified by key
            for index, item in enumerate(node):
                if isinstance(item, dict | list):
                    self._visit(item, path, structural, sampled, greens, found)
                elif greens:
                    found.append(Finding(path, node, index, item, "green", ()))
            return
        steps = self._steps
        for key, value in list(node.items()):
            step = steps.get((path, key))
            if step is None:
                step = self._step(path, key, structural)
            child, exempt, cls, hits, settled = step
            if exempt and not greens:
                continue  # scan: structural fields are not personal data
            if not settled:
                cls, hits = self._path_value_class(child, value, cls, hits, sampled)
            if cls != "red" and isinstance(value, dict | list):
                if cls != "green":  # a Yellow object stands for its subtree, and what is Red in it is found too
                    found.append(Finding(child, node, key, value, cls, hits))
                self._visit(value, child, exempt, sampled, greens, found)
            elif greens or cls != "green":
                found.append(Finding(child, node, key, value, cls, hits))

    def _step(self, path: str, key: Any, structural: bool) -> tuple[str, bool, str, tuple[str, ...], bool]:
        """What a walk decides once per (parent path, key): the child's path, whether it is
        structural (never classified), its class and hits by key, and whether the value can
        change that (not when structural, Red already, or classified explicitly)."""
        child = f"{path}.{key}"
        exempt = structural or (child in STRUCTURAL_PATHS and child not in self.config.classes)
        if exempt or not isinstance(key, str):
            step: tuple[str, bool, str, tuple[str, ...], bool] = (child, exempt, "green", (), True)
        else:
            cls, hits = self.key_class(child, key)
            step = (child, False, cls, hits, cls == "red" or child in self.config.classes)
        if len(self._steps) >= _MAX_STEPS:
            self._steps.clear()  # keys that are data (ids as keys): start over rather than grow
        self._steps[(path, key)] = step
        return step

    def _decide(self, path: str, key: Any, structural: bool) -> tuple[str, bool, str, tuple[str, ...], bool] | None:
        """A field's decision for a shape plan: what :meth:`_visit` decides on a message that is
        not sampled, and whether a sampled one checks its value; or None while the field's values
        are still checked in every message as it learns. (With ``every``, every message is a
        sampled one: its plan holds the fields whose values it checks.)"""
        step = self._steps.get((path, key))
        if step is None:
            step = self._step(path, key, structural)
        child, exempt, cls, hits, settled = step
        if not settled:
            if self._every:
                if self._class_changes >= MAX_CLASS_CHANGES:
                    return None  # classes change too often here: walk every message
                return child, exempt, *self._observed.get(child, (cls, hits)), True
            if self._clean.get(child, 0) < LEARN_AFTER:
                return None
            learned = self._learned.get(child)
            if learned is not None and RANK[learned[0]] > RANK[cls]:
                cls, hits = learned[0], (*hits, *learned[1])
        return child, exempt, cls, hits, not settled


def _array_strings(items: list[Any]) -> Iterator[str]:
    """The string items of an array and of the arrays in it (not those of its objects, which are
    walked key by key), the first :data:`MAX_ARRAY_VALUES` at most."""
    stack = [iter(items)]
    left = MAX_ARRAY_VALUES
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            if type(item) is str:
                yield item
                left -= 1
                if not left:
                    return
        else:
            stack.pop()


def _normalise_for_hash(value: Any, hits: tuple[str, ...]) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    if "email" in hits:
        return text.strip().lower()  # how ad platforms match hashed emails
    if "phone" in hits:
        digits = re.sub(r"[^\d+]", "", text)
        return digits if digits.startswith("+") else digits.lstrip("0")
    return text


def hash_value(value: Any, salt: str, hits: tuple[str, ...] = ()) -> str:
    """SHA-256 (hex) of the salt and the value, emails and phones normalised first."""
    return hashlib.sha256((salt + _normalise_for_hash(value, hits)).encode()).hexdigest()


def apply_policy(
    message: dict[str, Any], classifier: Classifier, policy: PrivacyPolicy, findings: Sequence[Finding] | None = None
) -> bool:
    """Apply ``policy`` to ``message`` in place; returns whether anything changed. ``findings``
    are the message's fields of class ``policy.acts_on`` and above when the caller has them
    already (from :meth:`Classifier.survey`)."""
    changed = False
    found = classifier.scan(message, policy.acts_on) if findings is None else findings
    if policy.fields:
        found = [*found, *_named_fields(message, classifier, policy, found)]
    if any(f.cls != "red" for f in found):
        # Red fields first: one inside a Yellow object is dealt with (say, blocked) before that
        # object is replaced (say, by its hash), which would carry the Red value along.
        found = [*(f for f in found if f.cls == "red"), *(f for f in found if f.cls != "red")]
    for finding in found:
        action = policy.fields.get(finding.path) or getattr(policy, finding.cls)
        if action == "allow":
            continue
        container, key = finding.container, finding.key
        if action == "block":
            if isinstance(container, dict):
                container.pop(key, None)  # type: ignore[arg-type]
            else:
                container[key] = None  # type: ignore[index]
        elif action == "redact":
            container[key] = REDACTED  # type: ignore[index]
        else:
            container[key] = _hash_tree(finding.value, classifier.config.hash_salt, finding.hits)  # type: ignore[index]
        changed = True
    return changed


def block_red(message: dict[str, Any], classifier: Classifier, findings: Sequence[Finding] | None = None) -> bool:
    """``apply_policy(message, classifier, PrivacyPolicy(red="block"), findings)``, what every
    message of a ``block_red`` source goes through, without a policy to consult per finding:
    Red fields removed in place (an array's item set to None). Returns whether any was."""
    changed = False
    for finding in classifier.scan(message, "red") if findings is None else findings:
        if finding.cls == "red":
            container = finding.container
            if isinstance(container, dict):
                container.pop(finding.key, None)  # type: ignore[arg-type]
            else:
                container[finding.key] = None  # type: ignore[index]
            changed = True
    return changed


def _hash_tree(value: Any, salt: str, hits: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _hash_tree(v, salt, hits) for k, v in value.items()}
    if isinstance(value, list):
        return [_hash_tree(v, salt, hits) for v in value]
    return None if value is None else hash_value(value, salt, hits)


def _named_fields(
    message: dict[str, Any], classifier: Classifier, policy: PrivacyPolicy, scanned: Sequence[Finding]
) -> list[Finding]:
    """Fields named in ``policy.fields`` that the scan did not report. Whatever their class: the
    scan checks a settled path's values only in sampled messages, so it can pass over a field a
    value makes Yellow this time, and the action named for the field must apply all the same."""
    reported = {(id(f.container), f.key) for f in scanned}
    found = []
    for path, action in policy.fields.items():
        parts = path.split(".")
        node: Any = message
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        key = parts[-1]
        if isinstance(node, dict) and key in node and action != "allow" and (id(node), key) not in reported:
            cls, hits = classifier.classify(path, key, node[key])
            found.append(Finding(path, node, key, node[key], cls, hits))
    return found
