"""Loading a tracking plan file and compiling its rules (segment-api.md §7.1).

A plan is read from a JSON or TOML file, chosen by the extension, in one of two shapes:

- Segment's Public API shape (``rules`` is a list of ``{type, key, version, jsonSchema}``);
- Segment's legacy Config API shape (``rules`` is a table of ``events``, ``identify``, ``group``,
  ``page``, ``screen`` and ``common`` (alias ``global``)).

Every ``jsonSchema`` (draft-07, applied to the whole message) is compiled once, here, with
fastjsonschema. Anything wrong raises :class:`PlanError` (a ValueError) naming the rule.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastjsonschema

from gateway_filter_tracking_plan.quick import QuickCheck, compile_quick_check

RULE_TYPES = ("TRACK", "IDENTIFY", "GROUP", "PAGE", "SCREEN", "COMMON")
#: Where a rule's planned keys live in the message: properties of events, traits of users/groups.
CONTAINERS = {
    "TRACK": "properties",
    "PAGE": "properties",
    "SCREEN": "properties",
    "IDENTIFY": "traits",
    "GROUP": "traits",
}
#: Keys of a Public API rule besides type/key/version/jsonSchema that Segment exports; ignored.
_IGNORED_RULE_KEYS = frozenset({"createdAt", "updatedAt", "deprecatedAt", "description"})
_LEGACY_KEYS = {"identify": "IDENTIFY", "group": "GROUP", "page": "PAGE", "screen": "SCREEN", "common": "COMMON"}


class PlanError(ValueError):
    """The plan file cannot be used; the message says where and why."""


class _NoRemoteRefs(dict[str, Callable[[str], Any]]):
    """fastjsonschema handlers that refuse every remote ``$ref`` (no network at config load)."""

    def __contains__(self, scheme: object) -> bool:
        return True

    def __getitem__(self, scheme: str) -> Callable[[str], Any]:
        return _refuse_remote


def _refuse_remote(uri: str) -> Any:
    raise fastjsonschema.JsonSchemaDefinitionException(f"remote $ref {uri!r} is not supported; inline it")


_NO_REMOTE = _NoRemoteRefs()


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule.

    Attributes:
        type: ``TRACK``, ``IDENTIFY``, ``GROUP``, ``PAGE``, ``SCREEN`` or ``COMMON``.
        key: The event name (TRACK), page/screen name, or None.
        version: The rule's version (1 unless the plan says otherwise).
        label: How errors and logs name the rule.
        validate: The compiled validator; raises on an invalid message.
        container: ``properties`` or ``traits``: where the planned keys are (None for COMMON).
        planned: The keys declared under ``properties.<container>.properties``.
        planned_patterns: The ``patternProperties`` regexes of that schema.
        quick_check: True only for a valid message, tried before ``validate`` (see
            :mod:`gateway_filter_tracking_plan.quick`); None when the schema has none.
        schema: The rule's JSON Schema, as the plan gives it (a filter compiles its fast pass
            from it).
        regexes: The compiled ``pattern`` regexes of ``validate``, by pattern text.
    """

    type: str
    key: str | None
    version: int
    label: str
    validate: Callable[[Any], Any] = field(repr=False)
    container: str | None = None
    planned: frozenset[str] = frozenset()
    planned_patterns: tuple[re.Pattern[str], ...] = ()
    quick_check: QuickCheck | None = field(default=None, repr=False)
    schema: Any = field(default=None, repr=False, compare=False)
    regexes: Mapping[str, re.Pattern[str]] = field(default_factory=dict, repr=False, compare=False)

    def errors(self, message: Any) -> list[fastjsonschema.JsonSchemaValueException]:
        """Every error of ``message`` against this rule ([] when valid)."""
        if self.quick_check is not None and self.quick_check(message):
            return []
        try:
            self.validate(message)
        except fastjsonschema.JsonSchemaValuesException as error:
            return list(error.errors)
        except fastjsonschema.JsonSchemaValueException as error:
            return [error]
        return []

    def is_planned(self, name: str) -> bool:
        return name in self.planned or any(p.search(name) for p in self.planned_patterns)

    def unplanned(self, values: dict[str, Any]) -> list[str]:
        """The keys of ``values`` this rule does not plan, in their order."""
        if values.keys() <= self.planned:  # the usual case, one set operation
            return []
        return [key for key in values if not self.is_planned(key)]


@dataclass(frozen=True, slots=True)
class Versions:
    """The versions of one rule; ``select`` picks by ``context.protocols.event_version``."""

    by_version: dict[int, Rule]
    oldest: Rule

    def select(self, message: dict[str, Any]) -> Rule:
        if len(self.by_version) == 1:
            return self.oldest
        context = message.get("context")
        protocols = context.get("protocols") if isinstance(context, dict) else None
        version = protocols.get("event_version") if isinstance(protocols, dict) else None
        if type(version) is int:  # not bool, not float: missing or invalid means the oldest
            return self.by_version.get(version, self.oldest)
        return self.oldest


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled tracking plan."""

    name: str
    track: dict[str, Versions]
    page: dict[str | None, Versions]
    screen: dict[str | None, Versions]
    identify: Versions | None
    group: Versions | None
    common: Versions | None
    rule_count: int


def load_plan(path: str | Path) -> Plan:
    """Read, check and compile the plan at ``path`` (``.json`` or ``.toml``).

    Raises:
        PlanError: unreadable file, bad syntax, bad shape, or a schema fastjsonschema refuses.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise PlanError(f"{path}: a plan file must end in .json or .toml")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PlanError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        document = json.loads(data) if suffix == ".json" else tomllib.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        kind = "JSON" if suffix == ".json" else "TOML"
        raise PlanError(f"{path}: not valid {kind}: {error}") from None
    try:
        return compile_plan(document)
    except PlanError as error:
        raise PlanError(f"{path}: {error}") from None


def compile_plan(document: Any) -> Plan:
    """Compile a plan document already parsed from JSON or TOML."""
    if not isinstance(document, dict) or "rules" not in document:
        raise PlanError('the plan must be an object with "rules"')
    name = document.get("name", "")
    if not isinstance(name, str):
        raise PlanError("name: must be a string")
    rules = document["rules"]
    if isinstance(rules, list):
        raw = list(_public_api_rules(rules))
    elif isinstance(rules, dict):
        raw = list(_legacy_rules(rules))
    else:
        raise PlanError("rules: must be a list of rules or a table of events/identify/group/page/screen/common")

    grouped: dict[tuple[str, str | None], dict[int, Rule]] = {}
    for where, rule_type, key, version, schema in raw:
        label = f"{where} ({rule_type}{f' {key!r}' if key is not None else ''} v{version})"
        versions = grouped.setdefault((rule_type, key), {})
        if version in versions:
            raise PlanError(f"{label}: duplicate rule (same type, key and version)")
        versions[version] = _compile_rule(label, rule_type, key, version, schema)

    tables: dict[str, dict[str | None, Versions]] = {t: {} for t in RULE_TYPES}
    for (rule_type, key), versions in grouped.items():
        tables[rule_type][key] = Versions(versions, versions[min(versions)])
    return Plan(
        name=name,
        track={k: v for k, v in tables["TRACK"].items() if k is not None},
        page=tables["PAGE"],
        screen=tables["SCREEN"],
        identify=tables["IDENTIFY"].get(None),
        group=tables["GROUP"].get(None),
        common=tables["COMMON"].get(None),
        rule_count=len(raw),
    )


_Raw = tuple[str, str, str | None, int, Any]


def _version(where: str, value: Any) -> int:
    if type(value) is not int or value < 1:
        raise PlanError(f"{where}.version: must be an integer >= 1, got {value!r}")
    return value


def _public_api_rules(rules: list[Any]) -> Iterator[_Raw]:
    for n, rule in enumerate(rules):
        where = f"rules[{n}]"
        if not isinstance(rule, dict):
            raise PlanError(f"{where}: must be an object")
        unknown = set(rule) - {"type", "key", "version", "jsonSchema"} - _IGNORED_RULE_KEYS
        if unknown:
            raise PlanError(f"{where}: unknown keys {sorted(unknown)} (expected type, key, version, jsonSchema)")
        rule_type = rule.get("type")
        if not isinstance(rule_type, str) or rule_type.upper() not in RULE_TYPES:
            raise PlanError(f"{where}.type: must be one of {', '.join(RULE_TYPES)}, got {rule_type!r}")
        rule_type = rule_type.upper()
        key = rule.get("key")
        if key is not None and (not isinstance(key, str) or not key):
            raise PlanError(f"{where}.key: must be a non-empty string or null")
        if rule_type == "TRACK" and key is None:
            raise PlanError(f"{where}.key: a TRACK rule needs the event name")
        if rule_type in ("IDENTIFY", "GROUP", "COMMON") and key is not None:
            raise PlanError(f"{where}.key: must be null for {rule_type}")
        if "jsonSchema" not in rule:
            raise PlanError(f"{where}.jsonSchema: missing")
        yield where, rule_type, key, _version(where, rule.get("version", 1)), rule["jsonSchema"]


def _legacy_rules(rules: dict[str, Any]) -> Iterator[_Raw]:
    unknown = set(rules) - {"events", "global", *_LEGACY_KEYS}
    if unknown:
        expected = "events, identify, group, page, screen, common"
        raise PlanError(f"rules: unknown keys {sorted(unknown)} (expected {expected})")
    if "global" in rules and "common" in rules:
        raise PlanError("rules: give common or global (its legacy name), not both")
    events = rules.get("events", [])
    if not isinstance(events, list):
        raise PlanError("rules.events: must be a list")
    for n, event in enumerate(events):
        where = f"rules.events[{n}]"
        if not isinstance(event, dict):
            raise PlanError(f"{where}: must be an object")
        unknown = set(event) - {"name", "version", "rules", "description"}
        if unknown:
            raise PlanError(f"{where}: unknown keys {sorted(unknown)} (expected name, version, rules, description)")
        name = event.get("name")
        if not isinstance(name, str) or not name:
            raise PlanError(f"{where}.name: the event name is required")
        yield where, "TRACK", name, _version(where, event.get("version", 1)), event.get("rules", {})
    for legacy, rule_type in (*_LEGACY_KEYS.items(), ("global", "COMMON")):
        if legacy in rules:
            yield f"rules.{legacy}", rule_type, None, 1, rules[legacy]


def _compile_rule(label: str, rule_type: str, key: str | None, version: int, schema: Any) -> Rule:
    if not isinstance(schema, dict | bool):
        raise PlanError(f"{label}: the JSON Schema must be an object")
    try:
        validate = fastjsonschema.compile(schema, handlers=_NO_REMOTE, use_default=False, fast_fail=False)
    except fastjsonschema.JsonSchemaDefinitionException as error:
        raise PlanError(f"{label}: invalid JSON Schema: {error}") from None
    except Exception as error:  # bad regexes, bad values fastjsonschema trips over
        raise PlanError(f"{label}: invalid JSON Schema: {type(error).__name__}: {error}") from None
    container = CONTAINERS.get(rule_type)
    planned: frozenset[str] = frozenset()
    patterns: tuple[re.Pattern[str], ...] = ()
    if container is not None and isinstance(schema, dict):
        section = (schema.get("properties") or {}).get(container)
        if isinstance(section, dict):
            planned = frozenset(section.get("properties") or ())
            try:
                patterns = tuple(re.compile(p) for p in section.get("patternProperties") or ())
            except re.error as error:
                raise PlanError(f"{label}: bad patternProperties regex: {error}") from None
    # fastjsonschema keeps its compiled ``pattern`` regexes in the generated code's globals; the
    # quick check uses the very same ones (without them, patterns get no quick check).
    regexes = getattr(validate, "__globals__", {}).get("REGEX_PATTERNS", {})
    quick_check = compile_quick_check(schema, regexes)
    return Rule(rule_type, key, version, label, validate, container, planned, patterns, quick_check, schema, regexes)
