"""The plugin: discovered through its entry point, covers Segment's default list, well formed."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from typing import Any

import gateway_matcher_builtin

from gateway.testing import plugin_registry

# Segment's default matchers (segment-api.md §6.1) -> the matcher that covers each.
SEGMENT_DEFAULTS = {
    "red": {
        "social security number": "social_security_number", "password": "password", "visa": "visa",
        "veteran": "veteran", "disability": "disability", "credit card": "credit_card", "passport": "passport",
        "token": "token",
    },
    "yellow": {
        "race": "race", "birthdate": "birthdate", "phone": "phone", "address": "address", "gender": "gender",
        "ethnicity": "ethnicity", "citizenship": "citizenship", "name": "name", "street": "street", "city": "city",
        "zipcode": "zipcode", "email": "email", "certificate": "certificate", "license": "license",
        "identification": "identification", "serial": "serial", "ip": "ip", "photo": "photo", "salary": "salary",
        "religion": "religion", "mac": "mac", "sex": "sex", "sexual orientation": "sexual_orientation",
        "medication": "medication", "allergy": "allergy", "condition": "condition", "diagnosis": "diagnosis",
        "procedure": "procedure",
    },
}  # fmt: skip


def test_matchers_are_discovered_through_the_entry_point() -> None:
    registry = plugin_registry()
    ours = {m.name for m in gateway_matcher_builtin.build_matchers()}
    assert ours <= set(registry.matchers)
    for name in ours:
        assert registry.provided_by[("matcher", name)] == "builtin_matchers"
    entry_points = metadata.entry_points(group="gateway", name="builtin_matchers")
    assert [ep.value for ep in entry_points] == ["gateway_matcher_builtin"]


def test_segment_default_list_is_covered_with_its_classes() -> None:
    registry = plugin_registry()
    for default_class, names in SEGMENT_DEFAULTS.items():
        for segment_name, ours in names.items():
            matcher = registry.matchers[ours]
            assert matcher.default_class == default_class, segment_name
            assert matcher.match_key(segment_name), segment_name  # Segment's own wording matches
    assert registry.matchers["iban"].default_class == "red"


def test_matchers_are_well_formed() -> None:
    matchers = gateway_matcher_builtin.gateway_matcher_types()
    assert len({m.name for m in matchers}) == len(matchers)
    for m in matchers:
        assert m.default_class in ("red", "yellow", "green")
        assert m.description and m.name.isidentifier()
        assert m.match_key(m.name)


def _leaves(obj: Any, path: str = "", key: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, own key, value) of every leaf; an array item has the key of its array."""
    if isinstance(obj, dict):
        for k, value in obj.items():
            yield from _leaves(value, f"{path}.{k}" if path else k, k)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _leaves(item, f"{path}[{i}]", key)
    else:
        yield path, key, obj


def test_a_nested_event_is_classified_field_by_field() -> None:
    # The privacy stage's walk lives in the core; this shows what the matchers give it.
    matchers = gateway_matcher_builtin.build_matchers()
    event = {
        "traits": {"email": "jane@example.com", "address": {"city": "Lyon", "postalCode": "69001"}, "plan": "pro"},
        "properties": {
            "items": [{"sku": "A-1", "note": "call +33 4 72 00 00 00"}, {"sku": "B-2", "contact": "+33472000000"}],
            "payment": {"method": "card", "reference": "4111 1111 1111 1111"},
            "revenue": 12.5,
        },
    }
    found = {}
    for path, key, value in _leaves(event):
        hits = [m for m in matchers if m.match_key(key) or (m.match_value is not None and m.match_value(value))]
        if hits:
            found[path] = sorted(m.name for m in hits)
    assert found == {
        "traits.email": ["email"],
        "traits.address.city": ["city"],
        "traits.address.postalCode": ["zipcode"],
        "properties.items[1].contact": ["phone"],
        "properties.payment.reference": ["credit_card"],
    }
